"""Loading public tokenizers: names, specs and released files; conversion; safety; errors."""
from __future__ import annotations

import argparse
import fractions
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

import tokbench
from tokbench import CheckpointError, registry
from tokbench.cli import main

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "adapter-fixtures"
pytestmark = pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"adapter fixtures not found at {FIXTURES}")

LLAMAGEN = FIXTURES / "llamagen-vq16/checkpoint/vq_ds16_c2i.pt"
VAR = FIXTURES / "var-vqvae-ch32v512z32/checkpoint/vae_ch32v512z32.pth"
TAMING = FIXTURES / "taming-vqgan-f16-256/checkpoint/ckpts/last.ckpt"
SD = FIXTURES / "sd-vae-kl-f8/checkpoint"
TITOK = FIXTURES / "titok-t8/checkpoint"
OPEN_MAGVIT2 = FIXTURES / "open-magvit2-lfq/checkpoint/imagenet_256_L.ckpt"
INPUTS = FIXTURES / "llamagen-vq16/expected/inputs.npy"

CONVERT = [
    ("llamagen-vq16", LLAMAGEN), ("var-vqvae", VAR), ("taming-vqgan-f16-16384", TAMING),
    ("sd-vae-kl-f8", SD / "diffusers/vae"), ("titok-s128", TITOK), ("open-magvit2-lfq", OPEN_MAGVIT2),
]


def _images() -> torch.Tensor:
    return torch.from_numpy(np.load(INPUTS))


@pytest.mark.parametrize("name,weights", CONVERT, ids=[c[0] for c in CONVERT])
def test_convert_gives_a_plain_checkpoint_with_identical_reconstructions(tmp_path, name, weights):
    adapter = tokbench.load(name, weights=str(weights))
    assert main(["convert", name, "--weights", str(weights), str(tmp_path / "ckpt")]) == 0
    plain = tokbench.load(tmp_path / "ckpt")
    assert not hasattr(plain, "upstream") and plain.family == adapter.family
    x = _images()
    assert torch.equal(plain.reconstruct(x), adapter.reconstruct(x))


@pytest.mark.parametrize("path,name", [
    (LLAMAGEN, "llamagen-vq16"), (VAR, "var-vqvae"), (SD / "diffusers/vae", "sd-vae-kl-f8"),
    (SD / "ldm/vae-ft-mse-840000-ema-pruned.ckpt", "sd-vae-kl-f8"), (SD / "ldm/sd-v1-style.ckpt", "sd-vae-kl-f8"),
    (OPEN_MAGVIT2, "open-magvit2-lfq"),
], ids=["llamagen", "var", "sd-diffusers", "sd-ldm", "sd-full", "open-magvit2"])
def test_a_released_file_is_recognised_from_its_keys(path, name):
    assert tokbench.load(path).upstream["name"] == name


@pytest.mark.parametrize("path,names", [
    (TAMING, "taming-vqgan-f16-1024, taming-vqgan-f16-16384"),
    (TITOK, "titok-b64, titok-l32, titok-s128"),
], ids=["taming", "titok"])
def test_an_ambiguous_file_lists_the_candidates(path, names):
    with pytest.raises(CheckpointError, match=f"could be any of {names}") as err:
        tokbench.load(path)
    assert "\n" not in str(err.value)


def test_the_spec_spelling_and_the_keyword_agree():
    a = tokbench.load(f"llamagen-vq16:weights={LLAMAGEN}")
    b = tokbench.load("llamagen-vq16", weights=str(LLAMAGEN))
    x = _images()
    assert torch.equal(a.encode(x).ids, b.encode(x).ids)


@pytest.mark.parametrize("name,weights", [
    ("llamagen-vq16", VAR), ("var-vqvae", LLAMAGEN), ("sd-vae-kl-f8", VAR), ("taming-vqgan-f16-16384", SD / "ldm/vae-ft-mse-840000-ema-pruned.ckpt"),
    ("open-magvit2-lfq", TAMING),
], ids=["var-as-llamagen", "llamagen-as-var", "var-as-sd", "sd-as-taming", "taming-as-open-magvit2"])
def test_a_wrong_file_for_a_name_is_one_line_listing_the_keys(name, weights):
    with pytest.raises(CheckpointError) as err:
        tokbench.load(name, weights=str(weights))
    message = str(err.value)
    assert "\n" not in message and f"(as {name}): missing keys [" in message and "unexpected keys [" in message


def test_options_fixed_by_the_weights_or_the_release_are_refused():
    with pytest.raises(ValueError, match="codebook_size=4096 cannot be changed: the weights .* fix codebook_size=512"):
        tokbench.load("llamagen-vq16:codebook_size=4096", weights=str(LLAMAGEN))
    with pytest.raises(ValueError, match="num_tokens cannot be changed: the release fixes num_tokens=128"):
        registry.create("titok-s128:num_tokens=64")
    tuned = tokbench.load("llamagen-vq16:beta=0.5,dead_code_steps=100", weights=str(LLAMAGEN))
    assert tuned.config["beta"] == 0.5 and tuned.config["codebook_size"] == 512


def test_released_pickles_are_only_read_weights_only(monkeypatch):
    calls = []
    real_load = torch.load

    def spy(*args, **kwargs):
        calls.append(kwargs.get("weights_only"))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    tokbench.load("taming-vqgan-f16-16384", weights=str(TAMING))  # holds a Lightning class: allowed stand-in
    tokbench.load("llamagen-vq16", weights=str(LLAMAGEN))
    assert calls and all(flag is True for flag in calls)


def test_a_file_needing_another_global_is_refused_by_name(tmp_path):
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "callbacks": {fractions.Fraction: {}}}, path)
    with pytest.raises(CheckpointError, match="fractions.Fraction"):
        tokbench.load("taming-vqgan-f16-16384", weights=str(path))

    class Boom:
        def __reduce__(self):
            return (print, ("ran code",))

    path.write_bytes(pickle.dumps({"model": Boom()}))
    with pytest.raises(CheckpointError, match="weights-only"):
        tokbench.load(path)


def test_public_weights_train_like_our_own():
    """A public model is a family tokenizer: it autoencodes with losses and gradients."""
    tokenizer = registry.create(f"llamagen-vq16:weights={LLAMAGEN}").train()
    out = tokenizer.autoencode(_images() [:1])
    loss = (out.reconstruction - _images()[:1]).abs().mean() + sum(out.losses.values())
    loss.backward()
    assert tokenizer.decoder.conv_out.weight.grad is not None
    assert tokenizer.quantize.embedding.grad is not None


def test_cli_info_and_reconstruct_take_weights(tmp_path, capsys):
    assert main(["info", "var-vqvae", "--weights", str(VAR)]) == 0
    shown = capsys.readouterr().out
    assert "288" in shown and '"tokbench": "shorter side resized to 256' in shown
    image = tmp_path / "cat.png"
    from PIL import Image

    Image.fromarray(np.load(FIXTURES / "llamagen-vq16/expected/inputs_uint8.npy")[0]).save(image)
    assert main(["reconstruct", "llamagen-vq16", str(image), "--weights", str(LLAMAGEN), "--out", str(tmp_path)]) == 0
    assert (tmp_path / "cat_rec.png").is_file()


def test_eval_parser_takes_weights():
    parser = argparse.ArgumentParser()
    from tokbench.tasks.cli import register

    register(parser.add_subparsers())
    args = parser.parse_args(["eval", "--tokenizer", "llamagen-vq16", "--weights", "x.pt"])
    assert registry.with_weights(args.tokenizer, args.weights) == "llamagen-vq16:weights=x.pt"
    assert registry.with_weights("vq:size=tiny", "y.pt") == "vq:size=tiny,weights=y.pt"


def test_mar_kl16_layout_loads_through_the_ldm_path(tmp_path):
    """MAR's kl16.ckpt ({'model': LDM names}, encoder-only attention at the lowest level) at a
    small size: written in upstream names and loaded back by name, it reconstructs identically.
    (This checks the loader's round trip; parity with MAR's code is in test_adapters_mar_kl16.py.)"""
    from tokbench.tokenizers.public.conv_keys import autoencoder_keymap

    torch.manual_seed(0)
    small = registry.create("vae", ch=32, ch_mult=(1, 1, 2), num_res_blocks=1, latent_channels=16,
                            enc_attn_levels=[2]).eval()
    km = autoencoder_keymap("ldm", 32, (1, 1, 2), 1, attn_levels=(2,), dec_attn_levels=())
    upstream = km.to_upstream(small.state_dict())
    assert "encoder.down.2.attn.0.q.weight" in upstream and not any(".attn." in k for k in upstream if "decoder.up" in k)
    torch.save({"model": upstream}, tmp_path / "kl16.ckpt")
    loaded = tokbench.load("mar-kl16", weights=str(tmp_path / "kl16.ckpt"))
    assert loaded.config["enc_attn_levels"] == [2] and loaded.config["dec_attn_levels"] is None
    x = _images()
    assert torch.equal(loaded.reconstruct(x), small.reconstruct(x))


def test_tokbench_train_fine_tunes_public_weights(tmp_path):
    """``--model.tokenizer llamagen-vq16:weights=PATH``: two Lightning steps from the released
    weights; the run's checkpoint reloads as a plain ``vq`` tokenizer with the trained weights."""
    import lightning as L

    from tokbench.training.module import AutoencoderModule
    from tokbench.training.checkpointing import RunCheckpoint
    from tokbench.training.data import ImageDataModule

    module = AutoencoderModule(f"llamagen-vq16:weights={LLAMAGEN}", max_steps=2, lr=1e-3)
    start = module.tokenizer.decoder.conv_out.weight.detach().clone()
    trainer = L.Trainer(max_steps=2, accelerator="cpu", logger=False, enable_progress_bar=False,
                        default_root_dir=tmp_path, callbacks=[RunCheckpoint(every_n_train_steps=2)],
                        limit_val_batches=0, enable_model_summary=False)
    trainer.fit(module, ImageDataModule(image_size=32, batch_size=2, num_workers=0, repeats=1))
    trained = tokbench.load(tmp_path / "checkpoints" / "last.ckpt", ema=False)
    assert trained.family == "vq" and trained.config["codebook_size"] == 512
    assert not torch.equal(trained.decoder.conv_out.weight, start)


def test_a_diffusers_pipeline_folder_uses_its_vae(tmp_path):
    import shutil

    shutil.copytree(SD / "diffusers/vae", tmp_path / "vae")
    (tmp_path / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    x = _images()
    by_path = tokbench.load(tmp_path)
    by_name = tokbench.load("sd-vae-kl-f8", weights=str(SD / "diffusers/vae"))
    assert torch.equal(by_path.encode(x).latents, by_name.encode(x).latents)
