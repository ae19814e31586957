"""The Tokenizer contract: validation, padding and cropping, tokens and layouts, registry specs."""
import pytest
import torch
from torch import nn

import tokbench
from tokbench.registry import parse_spec
from tokbench.tokenizer import pad_to_multiple
from tokbench.tokens import TokenLayout, Tokens


class MeanPool(tokbench.Tokenizer):
    """Average pooling by 4 as continuous latents: enough to test the base class."""

    family, kind, stride = "test_meanpool", "continuous", 4

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1))

    def layout_for(self, height, width):
        return TokenLayout("grid", (height // 4, width // 4), latent_channels=3)

    def encode_padded(self, x):
        lat = nn.functional.avg_pool2d(x, 4) * self.scale
        return Tokens(self.layout_for(*x.shape[-2:]), x.shape[-2:], latents=lat)

    def decode_padded(self, tokens):
        return nn.functional.interpolate(tokens.latents / self.scale, scale_factor=4, mode="nearest")


@pytest.mark.parametrize("bad, message", [
    (torch.rand(3, 8, 8), "4 dimensions"),
    (torch.rand(1, 4, 8, 8), "3 (RGB) channels"),
    (torch.rand(1, 1, 8, 8), "3 (RGB) channels"),
    (torch.rand(1, 3, 8, 8).double(), "float32"),
    (torch.randint(0, 255, (1, 3, 8, 8), dtype=torch.uint8), "float32"),
    (torch.rand(1, 3, 8, 8) * 255, "values in [0, 1]"),
    (torch.rand(1, 3, 8, 8) * 2 - 1, "values in [0, 1]"),
    (torch.full((1, 3, 8, 8), float("nan")), "NaN"),
    (torch.zeros(0, 3, 8, 8), "empty"),
    ([[0.5]], "torch.Tensor"),
])
def test_bad_images_raise_clear_value_errors(bad, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(").replace(")", r"\)")):
        MeanPool().encode(bad)


@pytest.mark.parametrize("hw", [(16, 16), (17, 23), (5, 3), (1, 1)])
def test_padding_to_stride_then_cropping_back(hw):
    x = torch.rand(2, 3, *hw)
    tok = MeanPool()
    tokens = tok.encode(x)
    assert tokens.image_size == hw
    assert tokens.latents.shape[-2:] == (-(-hw[0] // 4), -(-hw[1] // 4))
    y = tok.decode(tokens)
    assert y.shape == x.shape and y.dtype == torch.float32
    assert 0 <= float(y.min()) and float(y.max()) <= 1


def test_reflect_padding_keeps_the_image_and_mirrors_the_edge():
    x = torch.arange(2 * 3 * 5 * 6, dtype=torch.float32).reshape(2, 3, 5, 6)
    p = pad_to_multiple(x, 4)
    assert p.shape[-2:] == (8, 8)
    assert torch.equal(p[..., :5, :6], x)
    assert torch.equal(p[..., 5, :6], x[..., 3, :])  # reflect: row 5 mirrors row 3
    assert pad_to_multiple(x[..., :1, :1], 4).shape[-2:] == (4, 4)  # too small to reflect: replicate


def test_layouts_count_tokens_and_bits():
    assert TokenLayout("grid", (16, 16), vocab_size=16384).bits_per_image == 256 * 14
    var = TokenLayout("scales", (16, 16), vocab_size=4096, scales=(1, 2, 3, 4, 5, 6, 8, 10, 13, 16))
    assert var.num_tokens == 680 and var.bits_per_image == 680 * 12
    assert var.grid == (16, 16) and var.to_dict()["scales"] == [1, 2, 3, 4, 5, 6, 8, 10, 13, 16]
    with pytest.raises(ValueError, match="scale schedule"):
        TokenLayout("scales", (16, 16), vocab_size=4096)  # a schedule is required, and only for 'scales'
    with pytest.raises(ValueError, match="scale schedule"):
        TokenLayout("grid", (16, 16), vocab_size=4096, scales=(1, 16))
    with pytest.raises(ValueError, match="increasing"):
        TokenLayout("scales", (16, 16), vocab_size=4096, scales=(4, 2, 16))
    assert TokenLayout("sequence", (32,), vocab_size=4096).num_tokens == 32
    assert TokenLayout("grid", (32, 32), latent_channels=4).bits_per_image is None
    with pytest.raises(ValueError, match="exactly one"):
        TokenLayout("grid", (2, 2))
    with pytest.raises(ValueError, match="arrangement"):
        TokenLayout("spiral", (2,), vocab_size=2)


def test_scales_layout_splits_flat_ids_per_scale():
    layout = TokenLayout("scales", (4, 4), vocab_size=10, scales=(1, 2, 4))
    ids = torch.arange(21).unsqueeze(0)
    maps = Tokens(layout, (64, 64), ids=ids).ids_per_scale()
    assert [tuple(m.shape) for m in maps] == [(1, 1, 1), (1, 2, 2), (1, 4, 4)]
    assert maps[2].flatten().tolist() == list(range(5, 21))
    wide = TokenLayout("scales", (2, 4), vocab_size=10, scales=(1, 2, 4))
    assert wide.scale_shapes() == [(1, 1), (1, 2), (2, 4)]


def test_tokens_validate_their_content():
    layout = TokenLayout("sequence", (4,), vocab_size=8)
    with pytest.raises(ValueError, match="int64"):
        Tokens(layout, (8, 8), ids=torch.zeros(1, 4, dtype=torch.int32))
    with pytest.raises(ValueError, match="exactly one"):
        Tokens(layout, (8, 8))


def test_decode_refuses_tokens_of_the_other_kind():
    ids = Tokens(TokenLayout("sequence", (4,), vocab_size=8), (8, 8), ids=torch.zeros(1, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="continuous tokens"):
        MeanPool().decode(ids)


def test_spec_strings_parse_typed_options():
    assert parse_spec("jpeg:q=5") == ("jpeg", {"q": 5})
    assert parse_spec("vq:size=tiny,l2=true,scales=[1,2,4]") == ("vq", {"size": "tiny", "l2": True, "scales": [1, 2, 4]})
    assert parse_spec("identity") == ("identity", {})
    with pytest.raises(ValueError, match="key=value"):
        parse_spec("jpeg:q")


def test_runtime_registration_and_unknown_names():
    tokbench.register("test_meanpool", MeanPool)
    assert isinstance(tokbench.create("test_meanpool"), MeanPool)
    with pytest.raises(KeyError, match="unknown tokenizer 'nope'"):
        tokbench.create("nope")
    with pytest.raises(ValueError, match="bad options"):
        tokbench.create("jpeg:quality=5")


@pytest.mark.parametrize("layout", [TokenLayout("grid", (4, 6), vocab_size=512),
                                    TokenLayout("scales", (8, 8), vocab_size=256, scales=(1, 2, 4, 8)),
                                    TokenLayout("sequence", (32,), latent_channels=12)])
def test_layout_dicts_read_back_to_the_same_layout(layout):
    import json

    assert TokenLayout.from_dict(json.loads(json.dumps(layout.to_dict()))) == layout
