"""Open-MAGVIT2's release format: the EMA shadow (names without dots) is what loads; a file
without it loads the live weights; the model trains with LFQ's losses."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import tokbench
from tokbench.tokenizers.public.open_magvit2 import OpenMagvit2Tokenizer, keymap_for

FIXTURE = Path(__file__).resolve().parents[1].parent / "shared" / "adapter-fixtures" / "open-magvit2-lfq"
CKPT = FIXTURE / "checkpoint" / "imagenet_256_L.ckpt"
pytestmark = pytest.mark.skipif(not FIXTURE.is_dir(), reason=f"adapter fixture not found at {FIXTURE}")


def _inputs() -> torch.Tensor:
    return torch.from_numpy(np.load(FIXTURE / "expected" / "inputs.npy"))


def _ids(tokenizer) -> np.ndarray:
    return tokenizer.encode(_inputs()).ids.numpy().reshape(-1)


def test_ema_shadow_names_map_back_to_every_generator_parameter():
    model = OpenMagvit2Tokenizer(ch=32, ch_mult=(1, 1), num_res_blocks=1, z_channels=12)
    upstream = keymap_for(model, ema=True).upstream_keys()
    assert {"model_ema.encoderconv_inweight", "model_ema.decoderadaptive0gammaweight",
            "model_ema.decoderup1upsampleconv1bias", "model_ema.encoderdown0block0conv1weight"} <= upstream
    assert len(upstream) == len([k for k in model.state_dict() if not k.startswith("quantize.")])


def test_the_ema_weights_load_and_a_file_without_them_loads_the_live_weights(tmp_path):
    assert (_ids(tokbench.load("open-magvit2-lfq", weights=str(CKPT))) ==
            np.load(FIXTURE / "expected" / "indices.npy")).all()
    blob = torch.load(CKPT, map_location="cpu", weights_only=True)
    blob["state_dict"] = {k: v for k, v in blob["state_dict"].items() if not k.startswith("model_ema.")}
    live = tmp_path / "live.ckpt"
    torch.save(blob, live)
    assert (_ids(tokbench.load("open-magvit2-lfq", weights=str(live))) ==
            np.load(FIXTURE / "expected" / "indices_no_ema.npy")).all()


def test_a_folder_with_the_checkpoint_loads_and_sizes_come_from_the_tensors():
    tokenizer = tokbench.load("open-magvit2-lfq", weights=str(CKPT.parent))
    assert tokenizer.config == dict(ch=32, ch_mult=[1, 1], num_res_blocks=1, z_channels=12)
    assert tokenizer.layout_for(64, 64).grid == (32, 32) and tokenizer.layout_for(64, 64).vocab_size == 4096


def test_released_weights_fine_tune_with_lfq_losses():
    tokenizer = tokbench.load("open-magvit2-lfq", weights=str(CKPT)).train()
    x = _inputs()[:1]
    out = tokenizer.autoencode(x)
    assert set(out.losses) == {"commitment", "entropy"}
    ((out.reconstruction - x).abs().mean() + sum(out.losses.values())).backward()
    assert tokenizer.encoder.conv_in.weight.grad.abs().sum() > 0
