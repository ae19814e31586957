"""``tokbench.load(PATH)`` with no name: a public release recognised from a key listing.

Every public fixture (``tests/fixtures``, ``../shared/adapter-fixtures``) that a single name fits
loads by its path alone as that name, with the same weights as when named; a file several names
fit gets the one-line "could be any of ..." error listing them. Recognition reads keys and shapes
only (a pickle through weights_only's unpickler onto the ``meta`` device, a safetensors header, a
TorchScript archive's ``data.pkl`` through its restricted unpickler): a malicious pickle is refused
without running, and the weights are read once, by the loader the keys pick.
"""
from __future__ import annotations

import json
import os
import pickle
import shutil
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import tokbench
from tokbench import checkpoint
from tokbench.checkpoint import CheckpointError, public_candidates
from tokbench.cli import main
from tokbench.tokenizers.public import bsq_vit, cosmos

LOCAL = Path(__file__).parent / "fixtures"
# Beside the repo checkout; TOKBENCH_ADAPTER_FIXTURES points elsewhere (a worktree, CI).
SHARED = Path(os.environ.get("TOKBENCH_ADAPTER_FIXTURES",
                             Path(__file__).resolve().parents[1].parent / "shared" / "adapter-fixtures"))
# What the small fixtures' files do not say (their generators' sizes).
HITA_SMALL = dict(heads=2, head_dim=16, mlp_dim=64, dino_heads=2)
FLOWMO_SMALL = dict(code_length=16, enc_axes=(2, 2, 4), dec_axes=(4, 4, 8), seed=7)

# (fixture, the one name it is, options its small sizes need)
SINGLE = [
    (LOCAL / "bsq_vit/checkpoint.pt", "bsq-vit-18bit", {}),
    (LOCAL / "bsq_vit/checkpoint_zero_mean_false.pt", "bsq-vit-18bit", {}),
    (LOCAL / "chameleon_vqgan/vqgan.ckpt", "chameleon-vqgan", {}),
    (LOCAL / "ldm_vq/model.ckpt", "ldm-vq-f8", {}),
    (LOCAL / "amused_vqgan/vqvae", "amused-vqgan", {}),
    (LOCAL / "kandinsky_movq/movq", "kandinsky-movq", {}),
    (LOCAL / "cosmos/ci8x8", "cosmos-ci8x8", {}),
    (LOCAL / "cosmos/di16x16", "cosmos-di16x16", {}),
    (LOCAL / "cosmos/di16x16/autoencoder.jit", "cosmos-di16x16", {}),
    (LOCAL / "dc_ae_f64c128", "dc-ae-f64c128", {}),
    # E2E-SDVAE has SD's VAE layout: its file is SD's format (``e2e-sdvae`` is loaded by name).
    (LOCAL / "e2e_sdvae/e2e-sdvae-400k.pt", "sd-vae-kl-f8", {}),
    (LOCAL / "emu3", "emu3-vq", {}),
    (LOCAL / "flowmo/flowmo_lo_tiny.pth", "flowmo-lo", FLOWMO_SMALL),
    (LOCAL / "flowmo/flowmo_hi_tiny.pth", "flowmo-hi", FLOWMO_SMALL),
    (LOCAL / "hita/hita-vanilla.pt", "hita-vqgan", HITA_SMALL),
    (LOCAL / "hita/hita-ultra.pt", "hita-vqgan-ultra", HITA_SMALL),
    (LOCAL / "infinity/infinity_vae_d64_small.pth", "infinity-vae-d64", {}),
    (LOCAL / "janus_vq", "janus-pro-vq", {}),
    (LOCAL / "llamagen_vq8/vq_ds8_c2i.pt", "llamagen-vq8", {}),
    (LOCAL / "mar_kl16/kl16.ckpt", "mar-kl16", {}),
    (LOCAL / "maskbit/maskbit_tokenizer_10bit.bin", "maskbit-10bit", {}),
    (LOCAL / "maskgit_tokenizer/maskgit_tokenizer.bin", "maskgit-tokenizer", {}),
    (LOCAL / "maskgit_vqgan/maskgit-vqgan-f2-256.bin", "maskgit-vqgan", {}),
    # Sizes (ch_mult (2, 1)) that no release has: the generic name.
    (LOCAL / "open_magvit2_pretrain/pretrain256_16384.ckpt", "open-magvit2-lfq", {}),
    (LOCAL / "unitok/unitok_nano64.pth", "unitok-large", {}),
    (LOCAL / "va_vae_f16d32/vavae-imagenet256-f16d32-dinov2.pt", "va-vae-f16d32", {}),
    (SHARED / "dc-ae-f32c32/checkpoint/vae", "dc-ae-f32c32", {}),
    (SHARED / "flux1-ae/checkpoint/ae.safetensors", "flux1-ae", {}),
    (SHARED / "flux1-vae/checkpoint/vae", "flux1-vae", {}),
    (SHARED / "llamagen-vq16/checkpoint/vq_ds16_c2i.pt", "llamagen-vq16", {}),
    (SHARED / "open-magvit2-lfq/checkpoint/imagenet_256_L.ckpt", "open-magvit2-lfq", {}),
    (SHARED / "sd-vae-kl-f8/checkpoint/diffusers/vae", "sd-vae-kl-f8", {}),
    (SHARED / "sd-vae-kl-f8/checkpoint/ldm/sd-v1-style.ckpt", "sd-vae-kl-f8", {}),
    (SHARED / "sd-vae-kl-f8/checkpoint/ldm/vae-ft-mse-840000-ema-pruned.ckpt", "sd-vae-kl-f8", {}),
    (SHARED / "sd3-vae/checkpoint/vae", "sd3-vae", {}),
    (SHARED / "sdxl-vae/checkpoint/vae", "sdxl-vae", {}),
    (SHARED / "var-vqvae-ch32v512z32/checkpoint/vae_ch32v512z32.pth", "var-vqvae", {}),
]
# Small fixtures whose sizes are no release's: every name of their kind fits.
AMBIGUOUS = [
    (LOCAL / "gigatok/VQ_nano16.pt",
     ["gigatok-bl256", "gigatok-bl256-dino-disc", "gigatok-sb256", "gigatok-ss256", "gigatok-xlxxl256"]),
    (LOCAL / "ibq/imagenet256_256.ckpt",
     ["ibq-1024", "ibq-16384", "ibq-262144", "ibq-8192", "ibq-pretrain-16384", "ibq-pretrain-262144"]),
    (LOCAL / "infinity/infinity_vae_d32_small.pth", ["infinity-vae-d32", "infinity-vae-d32reg"]),
    (LOCAL / "repa_e_e2e_vae/e2e-vavae-400k.pt", ["e2e-invae", "e2e-vavae", "va-vae-f16d32"]),
    (LOCAL / "rqvae", ["rqvae-ffhq-8x8x4", "rqvae-imagenet-8x8x4"]),
    (LOCAL / "rqvae/model.pt", ["rqvae-ffhq-8x8x4", "rqvae-imagenet-8x8x4"]),
    (LOCAL / "titok_single_stage/vae", ["titok-bl128-vae-c16", "titok-bl64-vae-c16", "titok-ll32-vae-c16"]),
    (LOCAL / "titok_single_stage/vq", ["titok-bl128-vq8k", "titok-bl64-vq8k", "titok-sl256-vq8k"]),
    (LOCAL / "vqgan_plus/vqgan_plus_8bit.bin", ["vqgan-plus-10bit", "vqgan-plus-12bit"]),
    (SHARED / "taming-vqgan-f16-256/checkpoint/ckpts/last.ckpt", ["taming-vqgan-f16-1024", "taming-vqgan-f16-16384"]),
    (SHARED / "titok-t8/checkpoint", ["titok-b64", "titok-l32", "titok-s128"]),
]
# Part of a release only: no name fits the file alone.
PARTIAL = [
    LOCAL / "cosmos/ci8x8/encoder.jit",  # Cosmos's encoder archive without its decoder
    LOCAL / "janus_vq/pytorch_model-00001-of-00002.bin",  # one shard of Janus's two
]


def _case_id(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


def _need(path: Path) -> None:
    if not path.exists():
        pytest.skip(f"fixture not found at {path}")


@pytest.mark.parametrize("path,name,small", SINGLE, ids=[_case_id(p) for p, _, _ in SINGLE])
def test_a_release_that_one_name_fits_loads_by_its_path_alone(path, name, small):
    _need(path)
    assert public_candidates(path) == [name]
    by_path = tokbench.load(path, **small)
    assert by_path.upstream["name"] == name
    by_name = tokbench.load(name, weights=str(path), **small)
    mine, theirs = by_path.state_dict(), by_name.state_dict()
    assert mine.keys() == theirs.keys()
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)


@pytest.mark.parametrize("path,names", AMBIGUOUS, ids=[_case_id(p) for p, _ in AMBIGUOUS])
def test_a_file_several_names_fit_gets_the_one_line_error_listing_them(path, names):
    _need(path)
    with pytest.raises(CheckpointError, match=r"could be any of " + ", ".join(names) + r"; name it") as err:
        tokbench.load(path)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("path", PARTIAL, ids=[_case_id(p) for p in PARTIAL])
def test_part_of_a_release_is_refused_in_one_line(path):
    with pytest.raises(CheckpointError, match="released file of a known public tokenizer") as err:
        tokbench.load(path)
    assert "\n" not in str(err.value)


def test_a_torchscript_archive_is_read_as_one_whatever_its_suffix(tmp_path):
    shutil.copyfile(LOCAL / "cosmos/di16x16/autoencoder.jit", tmp_path / "autoencoder.pt")
    assert tokbench.load(tmp_path / "autoencoder.pt").upstream["name"] == "cosmos-di16x16"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), tmp_path / "scripted.pt")
    with pytest.raises(CheckpointError, match="not the released file of a known public tokenizer") as err:
        tokbench.load(tmp_path / "scripted.pt")  # not torch.load's advice to retry with weights_only=False
    assert "\n" not in str(err.value) and "weights_only" not in str(err.value)


def test_janus_1_3b_single_safetensors_folder_and_file_load_by_path(tmp_path):
    index = json.loads((LOCAL / "janus_vq/pytorch_model.bin.index.json").read_text())
    state = {}
    for shard in sorted(set(index["weight_map"].values())):
        state.update(torch.load(LOCAL / "janus_vq" / shard, map_location="cpu", weights_only=True))
    save_file(state, str(tmp_path / "model.safetensors"))
    expected = tokbench.load("janus-pro-vq", weights=str(LOCAL / "janus_vq")).state_dict()
    for path in (tmp_path, tmp_path / "model.safetensors"):
        loaded = tokbench.load(path)
        assert loaded.upstream["name"] == "janus-pro-vq"
        assert all(torch.equal(v, expected[k]) for k, v in loaded.state_dict().items())


def test_the_cli_takes_a_release_path_as_the_tokenizer(capsys):
    assert main(["info", str(LOCAL / "cosmos/di16x16/autoencoder.jit")]) == 0
    assert json.loads(capsys.readouterr().out)["public_name"] == "cosmos-di16x16"


def test_a_bsq_vit_file_with_another_code_width_is_recognised_and_refused_by_its_loader(tmp_path):
    state = dict(bsq_vit.read_release(LOCAL / "bsq_vit/checkpoint.pt")["state_dict"])  # the live weights only
    state["module.quant_embed.weight"] = torch.zeros(36, state["module.quant_embed.weight"].shape[1])
    state["module.quantize.basis"] = 2 ** torch.arange(35, -1, -1)
    torch.save({"state_dict": state}, tmp_path / "checkpoint.pt")
    with pytest.raises(CheckpointError, match="36-bit codes are not supported"):
        tokbench.load(tmp_path / "checkpoint.pt")


# ---- safety: nothing in a file runs while it is recognised ----

class _RunsCode:
    """Pickles as a call of ``exec`` that would write ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return exec, (f"open({str(self.marker)!r}, 'w').write('ran')",)


@pytest.mark.parametrize("suffix", [".pt", ".ckpt", ".pth", ".bin"])
def test_a_pickle_that_would_run_code_is_refused_without_running(tmp_path, suffix):
    marker = tmp_path / "ran.txt"
    path = tmp_path / f"release{suffix}"
    # A release's layout (LlamaGen's keys), with the payload beside the tensors.
    torch.save({"model": {"quantize.codebook_used": torch.zeros(4)}, "payload": _RunsCode(marker)}, path)
    with pytest.raises(CheckpointError, match=r"Unsupported global.*exec") as err:
        tokbench.load(path)
    assert "\n" not in str(err.value)
    with pytest.raises(CheckpointError, match="exec"):
        public_candidates(path)
    assert not marker.exists()


def test_a_torchscript_archive_that_would_run_code_is_refused_without_running(tmp_path):
    marker = tmp_path / "ran.txt"
    path = tmp_path / "autoencoder.jit"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("autoencoder/data.pkl", pickle.dumps(_RunsCode(marker), protocol=2))
        archive.writestr("autoencoder/code/__torch__/model.py", "def forward(self): pass\n")
    assert checkpoint.is_torchscript_archive(path)
    with pytest.raises(CheckpointError, match="released file of a known public tokenizer"):
        tokbench.load(path)
    assert not marker.exists()


def test_a_folder_whose_weights_file_would_run_code_is_refused_without_running(tmp_path):
    marker = tmp_path / "ran.txt"
    torch.save({"gen_vision_model.encoder.conv_in.weight": torch.zeros(1), "payload": _RunsCode(marker)},
               tmp_path / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match=r"Unsupported global.*exec"):
        tokbench.load(tmp_path)
    assert not marker.exists()


# ---- the weights are read once ----

def _count_torch_loads(monkeypatch) -> dict[str, int]:
    counts = {"meta": 0, "full": 0}
    real = torch.load

    def counting(*args, **kwargs):
        counts["meta" if kwargs.get("map_location") == "meta" else "full"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "load", counting)
    return counts


@pytest.mark.parametrize("path", [SHARED / "llamagen-vq16/checkpoint/vq_ds16_c2i.pt",
                                  SHARED / "open-magvit2-lfq/checkpoint/imagenet_256_L.ckpt",
                                  LOCAL / "bsq_vit/checkpoint.pt"], ids=_case_id)
def test_a_pickled_release_is_listed_once_and_read_once(tmp_path, monkeypatch, path):
    _need(path)
    copy = tmp_path / path.name  # a file no earlier test has listed (listings are cached per file)
    shutil.copyfile(path, copy)
    counts = _count_torch_loads(monkeypatch)
    tokbench.load(copy)
    assert counts == {"meta": 1, "full": 1}


def test_a_tokbench_training_checkpoint_is_listed_then_read_once(tmp_path, monkeypatch):
    tokenizer = tokbench.load("vq:size=tiny")
    state = {f"tokenizer.{k}": v for k, v in tokenizer.state_dict().items()}
    torch.save({"tokbench": {"family": "vq", "config": tokenizer.config}, "state_dict": state}, tmp_path / "last.ckpt")
    counts = _count_torch_loads(monkeypatch)
    loaded = tokbench.load(tmp_path / "last.ckpt")
    assert counts == {"meta": 1, "full": 1}
    assert all(torch.equal(v, tokenizer.state_dict()[k]) for k, v in loaded.state_dict().items())


def test_a_safetensors_release_is_recognised_from_its_header_and_read_once(tmp_path, monkeypatch):
    path = SHARED / "flux1-ae/checkpoint/ae.safetensors"
    _need(path)
    copy = tmp_path / path.name
    shutil.copyfile(path, copy)
    reads = []
    real = checkpoint.load_file
    monkeypatch.setattr(checkpoint, "load_file", lambda *a, **k: reads.append(a) or real(*a, **k))
    assert tokbench.load(copy).upstream["name"] == "flux1-ae"
    assert len(reads) == 1


def test_a_cosmos_folder_has_each_archive_materialised_once(monkeypatch):
    reads = []
    real = cosmos.read_torchscript_tensors

    def counting(path, *, materialize=True):
        reads.append((Path(path).name, materialize))
        return real(path, materialize=materialize)

    monkeypatch.setattr(cosmos, "read_torchscript_tensors", counting)
    tokbench.load(LOCAL / "cosmos/ci8x8")
    assert sorted(name for name, materialize in reads if materialize) == ["decoder.jit", "encoder.jit"]


def test_a_plug_in_that_fails_to_import_does_not_stop_a_training_checkpoint_loading(tmp_path, monkeypatch):
    from tokbench import registry

    tokenizer = tokbench.load("vq:size=tiny")
    state = {f"tokenizer.{k}": v for k, v in tokenizer.state_dict().items()}
    torch.save({"tokbench": {"family": "vq", "config": tokenizer.config}, "state_dict": state}, tmp_path / "last.ckpt")
    real_names, real_get = registry.names, registry.get_factory

    def get_factory(name):
        if name == "broken-plugin":
            raise ImportError("No module named 'broken_plugin'")
        return real_get(name)

    monkeypatch.setattr(registry, "names", lambda: [*real_names(), "broken-plugin"])
    monkeypatch.setattr(registry, "get_factory", get_factory)
    loaded = tokbench.load(tmp_path / "last.ckpt")
    assert all(torch.equal(v, tokenizer.state_dict()[k]) for k, v in loaded.state_dict().items())
