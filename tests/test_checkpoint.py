"""Checkpoints: round trips, and every way a file can be bad gives a clear error."""
import json
import pickle

import pytest
import torch
from torch import nn

import tokbench
from tokbench.checkpoint import CheckpointError, load_lightning_checkpoint
from tokbench.tokens import TokenLayout, Tokens


class ScaledIdentity(tokbench.Tokenizer):
    family, kind, stride = "test_scaled", "continuous", 2

    def __init__(self, channels: int = 3):
        super().__init__()
        self.config = {"channels": channels}
        self.mix = nn.Conv2d(3, channels, 1)

    def layout_for(self, h, w):
        return TokenLayout("grid", (h // 2, w // 2), latent_channels=self.config["channels"])

    def encode_padded(self, x):
        return Tokens(self.layout_for(*x.shape[-2:]), x.shape[-2:], latents=nn.functional.avg_pool2d(self.mix(x), 2))

    def decode_padded(self, tokens):
        return nn.functional.interpolate(tokens.latents[:, :3], scale_factor=2).sigmoid()


@pytest.fixture(autouse=True)
def registered():
    tokbench.register("test_scaled", ScaledIdentity)


@pytest.fixture
def saved(tmp_path):
    torch.manual_seed(0)
    tok = ScaledIdentity(channels=5)
    tok.save_pretrained(tmp_path / "ckpt")
    return tok, tmp_path / "ckpt"


def test_save_then_load_is_bit_identical(saved):
    tok, path = saved
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "model.safetensors"]
    loaded = tokbench.load(path)
    x = torch.rand(2, 3, 10, 14)
    assert torch.equal(tok.decode(tok.encode(x)), loaded.decode(loaded.encode(x)))
    assert json.loads((path / "config.json").read_text())["config"] == {"channels": 5}


def test_truncated_weights_name_the_file(saved):
    _, path = saved
    weights = path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-40])
    with pytest.raises(CheckpointError, match=r"model\.safetensors: corrupt or truncated"):
        tokbench.load(path)


def test_garbage_config_and_unknown_family(saved):
    _, path = saved
    (path / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match=r"config\.json: not valid JSON"):
        tokbench.load(path)
    (path / "config.json").write_text(json.dumps({"family": "no_such_family", "config": {}}))
    with pytest.raises(CheckpointError, match="unknown tokenizer family 'no_such_family'"):
        tokbench.load(path)


def test_weights_that_do_not_fit_the_config_are_reported_key_by_key(saved):
    _, path = saved
    cfg = json.loads((path / "config.json").read_text())
    cfg["config"]["channels"] = 4
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=r"shape mismatches.*mix\.weight"):
        tokbench.load(path)


def test_config_options_the_family_does_not_take(saved):
    _, path = saved
    cfg = json.loads((path / "config.json").read_text())
    cfg["config"]["bogus"] = 1
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="config does not fit family"):
        tokbench.load(path)


class _Payload:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os
        return (os.system, (f"touch {self.marker}",))


def test_pickle_with_code_execution_payload_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.ckpt"
    with open(evil, "wb") as f:
        pickle.dump({"tokbench": {"family": "test_scaled"}, "state_dict": _Payload(marker)}, f, protocol=2)
    with pytest.raises(CheckpointError, match="weights-only"):
        tokbench.load(evil)
    assert not marker.exists()


def test_lightning_style_checkpoint_prefers_ema_weights(tmp_path):
    tok = ScaledIdentity(channels=3)
    ema = {k: v + 1 for k, v in tok.state_dict().items()}
    state = {f"tokenizer.{k}": v for k, v in tok.state_dict().items()}
    state.update({f"ema_tokenizer.{k}": v for k, v in ema.items()})
    torch.save({"tokbench": {"family": "test_scaled", "config": {"channels": 3}}, "state_dict": state}, tmp_path / "run.ckpt")
    loaded = load_lightning_checkpoint(tmp_path / "run.ckpt")
    assert torch.equal(loaded.mix.weight, ema["mix.weight"])
    raw = tokbench.load(tmp_path / "run.ckpt", ema=False)
    assert torch.equal(raw.mix.weight, tok.mix.weight)


def test_atomic_save_leaves_no_temporary_files(saved):
    _, path = saved
    tokbench.load(path).save_pretrained(path)
    assert not [p for p in path.iterdir() if p.name.endswith(".tmp")]


def test_registered_names_build_the_same_weights_everywhere_and_leave_the_callers_rng_alone():
    # Ranks of a distributed eval (and reruns) of "vq:size=tiny" must score the same model.
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    first = tokbench.load("vq:size=tiny")
    assert torch.equal(torch.rand(3), expected), "load() consumed the caller's random numbers"
    torch.manual_seed(7)
    second = tokbench.load("vq:size=tiny")
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), second.state_dict().values()))
