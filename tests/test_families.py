"""The four tokenizer families (tiny configs, CPU): the interface contract, checkpoints, gradients."""
import pytest
import torch

import tokbench

FAMILIES = ["vq", "residual_scale", "holistic_1d", "vae"]
SIZES = [(64, 64), (40, 56), (33, 47)]


@pytest.fixture(scope="module", params=FAMILIES)
def tokenizer(request):
    torch.manual_seed(0)
    return tokbench.create(f"{request.param}:size=tiny").eval()


@pytest.mark.parametrize("hw", SIZES)
def test_round_trip_shapes_and_ranges(tokenizer, hw):
    x = torch.rand(2, 3, *hw)
    tokens = tokenizer.encode(x)
    assert tokens.kind == tokenizer.kind
    if tokenizer.kind == "discrete":
        vocab = tokens.layout.vocab_size
        assert tokens.ids.dtype == torch.long and 0 <= int(tokens.ids.min()) and int(tokens.ids.max()) < vocab
        assert tokens.ids.shape[0] == 2 and tokens.ids[0].numel() == tokens.layout.num_tokens
    else:
        assert tokens.latents.shape[1] == tokens.layout.latent_channels
    y = tokenizer.decode(tokens)
    assert y.shape == x.shape and y.dtype == torch.float32
    assert float(y.min()) >= 0 and float(y.max()) <= 1


def test_save_then_load_gives_bit_identical_outputs(tokenizer, tmp_path):
    x = torch.rand(2, 3, 40, 56)
    tokenizer.save_pretrained(tmp_path / "ckpt")
    loaded = tokbench.load(tmp_path / "ckpt")
    assert type(loaded) is type(tokenizer) and loaded.config == tokenizer.config
    a, b = tokenizer.encode(x), loaded.encode(x)
    if tokenizer.kind == "discrete":
        assert torch.equal(a.ids, b.ids)
    else:
        assert torch.equal(a.latents, b.latents)
    assert torch.equal(tokenizer.decode(a), loaded.decode(b))


def test_gradients_reach_the_encoder_through_the_quantizer(tokenizer):
    model = tokbench.create(f"{tokenizer.family}:size=tiny").train()
    x = torch.rand(2, 3, 32, 32)
    out = model.autoencode(x)
    loss = (out.reconstruction - x).square().mean() + sum(out.losses.values())
    loss.backward()
    first = next(p for n, p in model.named_parameters() if n.startswith(("encoder.conv_in", "patch_embed")))
    assert first.grad is not None and float(first.grad.abs().sum()) > 0
    assert model.last_layer().shape[0] in (3, 3 * 8 * 8)


def test_quantizer_codes_equal_brute_force_nearest_search(tokenizer):
    if tokenizer.kind != "discrete":
        pytest.skip("continuous tokenizer has no codebook")
    x = torch.rand(2, 3, 32, 32)
    q = tokenizer.quantize
    with torch.no_grad():
        if tokenizer.family == "vq":
            z_ND = q.prepare(tokenizer.features(x).permute(0, 2, 3, 1).reshape(-1, q.code_dim))
            codebook, ids = q.codebook(), tokenizer.encode(x).ids.flatten()
        elif tokenizer.family == "holistic_1d":
            z_ND = q.prepare(tokenizer.latents(x).reshape(-1, q.code_dim))
            codebook, ids = q.codebook(), tokenizer.encode(x).ids.flatten()
        else:  # residual_scale: the first scale quantizes the area-averaged feature map
            f = tokenizer.features(x)
            z_ND, codebook = f.mean(dim=(2, 3)), q.codes.codebook()
            ids = tokenizer.encode(x).ids[:, 0]
    reference = torch.cdist(z_ND.double(), codebook.double()).argmin(dim=1)
    assert torch.equal(ids, reference)


def test_1d_token_count_does_not_change_with_image_size():
    tok = tokbench.create("holistic_1d:size=tiny").eval()
    counts = {tok.encode(torch.rand(1, 3, *hw)).ids.shape[1] for hw in [(32, 32), (64, 96), (40, 56), (128, 128)]}
    assert counts == {16}


def test_vae_encode_returns_the_mean_and_sampling_differs():
    tok = tokbench.create("vae:size=tiny").eval()
    x = torch.rand(1, 3, 32, 32)
    mean_a, mean_b = tok.encode(x).latents, tok.encode(x).latents
    assert torch.equal(mean_a, mean_b)
    g = torch.Generator().manual_seed(0)
    sampled = tok.encode(x, sample=True, generator=g).latents
    assert not torch.equal(sampled, mean_a)
    assert torch.equal(tok.posterior(x).mean, mean_a)


def test_unknown_size_and_option_are_clear_errors():
    with pytest.raises(ValueError, match="unknown size 'huge'"):
        tokbench.create("vq:size=huge")
    with pytest.raises(ValueError, match="bad options for tokenizer 'vq'"):
        tokbench.create("vq:size=tiny,no_such_option=1")


@pytest.mark.parametrize("spec, tokens, vocab, params", [
    ("vq:size=small", 256, 16384, (71e6, 73e6)),           # LlamaGen VQ-16, ~72M
    ("residual_scale:size=base", 680, 4096, (100e6, 115e6)),  # VAR VQVAE, 680 tokens
    ("holistic_1d:size=small", 128, 4096, (30e6, 80e6)),   # TiTok-S-128
    ("vae:size=small", 32 * 32, None, (83e6, 84e6)),       # SD KL-f8 VAE, 83.7M
])
def test_published_scale_configs(spec, tokens, vocab, params):
    with torch.device("meta"):
        tok = tokbench.create(spec)
    layout = tok.layout_for(256, 256)
    assert layout.num_tokens == tokens and layout.vocab_size == vocab
    assert params[0] <= tok.num_parameters() <= params[1]
