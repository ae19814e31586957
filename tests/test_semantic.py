"""Semantic regularization (GigaTok's cosine alignment, VA-VAE's VF loss) with a random-init DINOv2 teacher."""
import math
from pathlib import Path

import pytest
import torch
from helpers import photo_batch

pytest.importorskip("timm", reason="semantic regularization needs the 'semantic' extra (timm)")
import timm  # noqa: E402

import tokbench  # noqa: E402
from tokbench.training.cli import build_cli, shipped_config  # noqa: E402
from tokbench.training.module import AutoencoderModule  # noqa: E402
from tokbench.training.semantic import FrozenTeacher, TeacherSpec, cosine_alignment, vf_loss  # noqa: E402
from tokbench.weights import MissingWeightsError  # noqa: E402

TEACHER = "dinov2-vits14:resolution=56"  # a 4x4 patch grid keeps the ViT-S teacher cheap on a CPU


def test_teacher_spec_defaults_options_and_errors():
    assert TeacherSpec.parse("dinov2-vitb14") == TeacherSpec("dinov2-vitb14", 11, 224)
    assert TeacherSpec.parse("dinov2-vits14:layer=7,resolution=112").grid == 8
    for bad, message in (("clip-b16", "unknown teacher"), ("dinov2-vits14:layer=12", "layer must be in 0..11"),
                         ("dinov2-vits14:resolution=100", "multiple of 14"), ("dinov2-vits14:depth=3", "not an option")):
        with pytest.raises(ValueError, match=message):
            TeacherSpec.parse(bad)


def test_losses_are_zero_for_identical_features_and_match_the_formulas():
    torch.manual_seed(0)
    f = torch.randn(2, 5, 7)
    assert float(cosine_alignment(f, f)) == pytest.approx(0.0, abs=1e-6)
    assert float(vf_loss(f, f)) == pytest.approx(0.0, abs=1e-6)
    # VA-VAE's two margin terms written out with loops over positions (m1 = 0.5, m2 = 0.25)
    z = torch.randn(2, 5, 7)
    cos = lambda a, b: float(a @ b / (a.norm() * b.norm()))  # noqa: E731
    mcos = sum(max(0.0, 1 - 0.5 - cos(z[b, i], f[b, i])) for b in range(2) for i in range(5)) / 10
    mdms = sum(max(0.0, abs(cos(z[b, i], z[b, j]) - cos(f[b, i], f[b, j])) - 0.25)
               for b in range(2) for i in range(5) for j in range(5)) / 50
    assert float(vf_loss(z, f)) == pytest.approx(mcos + mdms, rel=1e-5)
    one_minus_cos = 1 - sum(cos(z[b, i], f[b, i]) for b in range(2) for i in range(5)) / 10
    assert float(cosine_alignment(z, f)) == pytest.approx(one_minus_cos, rel=1e-5)


def test_teacher_loads_metas_released_format_from_disk(tmp_path):
    # Meta's file is the DINOv2 repo's state dict: timm's names plus `mask_token`, position
    # embedding at 518 px (37x37). timm's filter drops the mask token and resamples to 56 px.
    torch.manual_seed(0)
    source = timm.create_model("vit_small_patch14_dinov2", pretrained=False, num_classes=0)
    state = {**source.state_dict(), "mask_token": torch.zeros(1, 384)}
    assert state["pos_embed"].shape == (1, 1 + 37 * 37, 384)
    torch.save(state, tmp_path / "dinov2_vits14_pretrain.pth")
    teacher = FrozenTeacher(TeacherSpec.parse(TEACHER), weights_dir=str(tmp_path))
    assert torch.equal(teacher.net.blocks[3].attn.qkv.weight, source.blocks[3].attn.qkv.weight)
    assert teacher.net.pos_embed.shape == (1, 1 + 16, 384)
    assert all(not p.requires_grad for p in teacher.parameters())
    assert teacher(torch.rand(2, 3, 32, 32)).shape == (2, 16, 384)
    with pytest.raises(MissingWeightsError, match="dinov2_vitb14_pretrain.pth"):
        FrozenTeacher(TeacherSpec.parse("dinov2-vitb14"), weights_dir=str(tmp_path))


@pytest.mark.parametrize("family", ["vq", "holistic_1d", "vae"])
def test_alignment_loss_falls_in_a_few_steps(family):
    torch.manual_seed(0)
    module = AutoencoderModule(tokenizer=f"{family}:size=tiny", semantic_teacher=TEACHER, semantic_weight=1.0,
                               semantic_random_teacher=True)
    x = photo_batch(32)
    params = [*module.tokenizer.parameters(), *module.semantic.parameters()]
    opt = torch.optim.Adam(params, lr=1e-3)
    losses = []
    for _ in range(12):
        module.tokenizer.autoencode(x)
        loss = module.semantic.loss(x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < 0.8 * losses[0], losses


def test_teacher_and_head_stay_out_of_the_exported_tokenizer(tmp_path):
    argv = ["--config", str(shipped_config("vq_tiny")), "--data.root", "builtin:photos", "--data.image_size", "32", "--data.batch_size", "4",
            "--trainer.max_steps", "2", "--trainer.default_root_dir", str(tmp_path), "--trainer.logger", "false",
            "--trainer.enable_progress_bar", "false", "--trainer.val_check_interval", "2",
            "--model.log_images_every", "0", "--model.semantic_teacher", TEACHER, "--model.semantic_weight", "0.5",
            "--model.semantic_random_teacher", "true"]
    cli = build_cli(argv)
    cli.trainer.fit(cli.model, cli.datamodule)
    blob = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    keys = blob["state_dict"].keys()
    assert any(k.startswith("semantic.head.") for k in keys)  # the head resumes with the run
    assert not any("teacher" in k for k in keys)  # the frozen teacher is rebuilt from its file, not saved
    exported = tmp_path / "exported"
    tokbench.load(tmp_path / "checkpoints" / "last.ckpt").save_pretrained(str(exported))
    from safetensors import safe_open

    with safe_open(str(Path(exported) / "model.safetensors"), "pt") as f:
        assert not any("semantic" in k or "head." in k for k in f.keys())
    own = {k.removeprefix("tokenizer.") for k in keys if k.startswith("tokenizer.")}
    assert set(tokbench.load(exported).state_dict()) == own


def test_teacher_and_weight_go_together():
    with pytest.raises(ValueError, match="go together"):
        AutoencoderModule(tokenizer="vq:size=tiny", semantic_teacher=TEACHER)
    with pytest.raises(ValueError, match="go together"):
        AutoencoderModule(tokenizer="vq:size=tiny", semantic_weight=0.5)


@pytest.mark.parametrize("config, family, head_out", [("vq_small_semantic", "vq", 768), ("vae_small_vf", "vae", 768)])
def test_shipped_semantic_configs_build(config, family, head_out):
    cli = build_cli(["--config", str(shipped_config(config)), "--model.semantic_random_teacher", "true",
                     "--model.perceptual_random_backbone", "true",
                     "--trainer.logger", "false"])
    semantic = cli.model.semantic
    assert semantic.family == family and semantic.spec == TeacherSpec("dinov2-vitb14", 11, 224)
    last = semantic.head if family == "vae" else semantic.head[-1]
    assert last.out_features == head_out


def test_weights_fetch_takes_teacher_names(tmp_path):
    import subprocess
    import sys

    (tmp_path / "dinov2_vits14_pretrain.pth").write_bytes(b"present")  # there already: nothing is downloaded
    ok = subprocess.run([sys.executable, "-m", "tokbench", "weights", "fetch", "dinov2-vits14", "--weights-dir",
                         str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0 and f"ok {tmp_path / 'dinov2_vits14_pretrain.pth'}" in ok.stdout
    bad = subprocess.run([sys.executable, "-m", "tokbench", "weights", "fetch", "dinov3-vitx", "--weights-dir",
                          str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "unknown weights dinov3-vitx" in bad.stderr
    assert "Traceback" not in bad.stderr
