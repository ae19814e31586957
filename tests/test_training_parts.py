"""Pieces of the training objective and data: GAN losses, adaptive weight, entropy loss,
the discriminator's step, learned logvar, LPIPS weights, the sampler, corrupt images."""
import math

import lightning as L
import numpy as np
import pytest
import torch
from PIL import Image

from tokbench.training.data import ImageDataModule, ImageFiles, StepIndexedSampler
from tokbench.training.entropy import CodebookEntropy, entropy_loss
from tokbench.training.losses import adaptive_weight, discriminator_loss, generator_loss
from tokbench.training.module import AutoencoderModule
from tokbench.weights import MissingWeightsError

BIG = torch.full((4, 1, 3, 3), 8.0)


@pytest.mark.parametrize("kind", ["hinge", "non_saturating"])
def test_discriminator_loss_rewards_telling_real_from_fake(kind):
    right = discriminator_loss(BIG, -BIG, kind)  # real scored high, fake low
    wrong = discriminator_loss(-BIG, BIG, kind)
    assert right < 0.01 and wrong > 4  # swapped BCE targets (LlamaGen issue 84) would invert these


@pytest.mark.parametrize("kind", ["hinge", "non_saturating"])
def test_generator_loss_falls_as_the_discriminator_is_fooled(kind):
    assert generator_loss(BIG, kind) < generator_loss(torch.zeros_like(BIG), kind) < generator_loss(-BIG, kind)


def test_non_saturating_losses_are_the_bce_of_the_right_targets():
    real, fake = torch.randn(2, 1, 4, 4), torch.randn(2, 1, 4, 4)
    expected_d = 0.5 * (torch.nn.functional.softplus(-real).mean() + torch.nn.functional.softplus(fake).mean())
    assert torch.allclose(discriminator_loss(real, fake, "non_saturating"), expected_d, atol=1e-6)
    assert torch.allclose(generator_loss(fake, "non_saturating"), torch.nn.functional.softplus(-fake).mean(), atol=1e-6)


def test_adaptive_weight_is_the_ratio_of_last_layer_gradient_norms_clamped():
    w = torch.randn(3, 4, requires_grad=True)
    x = torch.randn(5, 4)
    rec_loss = (x @ w.t()).square().mean()
    g_loss = (x @ w.t()).sum() * 0.1
    g_rec = torch.autograd.grad(rec_loss, w, retain_graph=True)[0]
    g_g = torch.autograd.grad(g_loss, w, retain_graph=True)[0]
    assert torch.allclose(adaptive_weight(rec_loss, g_loss, w), g_rec.norm() / (g_g.norm() + 1e-4))
    tiny_g = (x @ w.t()).sum() * 1e-12  # nearly no adversarial gradient: the weight hits the clamp
    assert adaptive_weight(rec_loss, tiny_g, w) == 1e4


def test_entropy_loss_prefers_confident_assignments_spread_over_the_codebook():
    codebook = torch.eye(4) * 3
    spread = codebook.repeat(2, 1)  # every vector on its own code, all codes used
    collapsed = codebook[:1].repeat(8, 1)  # every vector on code 0
    blurred = torch.zeros(8, 4)  # equidistant from all codes
    assert entropy_loss(spread, codebook, 0.1) < entropy_loss(collapsed, codebook, 0.1)
    assert entropy_loss(spread, codebook, 0.1) < entropy_loss(blurred, codebook, 0.1)


def test_entropy_term_reaches_the_encoder_and_refuses_continuous_tokenizers():
    module = AutoencoderModule("vq:size=tiny", entropy_weight=0.1)
    module.tokenizer.train()
    module.tokenizer.autoencode(torch.rand(2, 3, 16, 16))
    loss = module.entropy.pop_loss()
    loss.backward()
    assert module.tokenizer.quant_conv.weight.grad.abs().sum() > 0
    with pytest.raises(RuntimeError, match="no codebook was searched"):
        module.entropy.pop_loss()
    module.ema_tokenizer.autoencode(torch.rand(2, 3, 16, 16))  # the EMA copy carries no hooks
    assert module.entropy._recorded == []
    with pytest.raises(ValueError, match="entropy_weight"):
        CodebookEntropy(AutoencoderModule("vae:size=tiny").tokenizer)


@pytest.mark.parametrize("spec, size", [("vq:size=tiny", 32), ("residual_scale:size=tiny", 32),
                                        ("holistic_1d:size=tiny", 64)])
def test_entropy_loss_trains_every_codebook_family(tmp_path, spec, size):
    torch.manual_seed(0)
    module = AutoencoderModule(spec, entropy_weight=0.1, max_steps=4)
    # every search of every scale (residual_scale) or token set (1D) is seen by the loss
    searches = []
    module.tokenizer.train()
    for codebook in module.entropy.codebooks:
        codebook.observers.append(lambda cb, z: searches.append(z.shape[0]))
    module.tokenizer.autoencode(torch.rand(2, 3, size, size))
    expected = len(module.tokenizer.quantize.scales) if spec.startswith("residual") else 1
    assert len(searches) == expected
    module.entropy.pop_loss()
    for codebook in module.entropy.codebooks:
        codebook.observers.pop()
    logged = []

    class Spy(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            logged.append(float(trainer.callback_metrics["train/entropy_loss"]))

    trainer = _tiny_trainer(tmp_path, 4)
    trainer.callbacks.append(Spy())
    trainer.fit(module, ImageDataModule(image_size=size, batch_size=2, num_workers=0, repeats=2))
    assert trainer.global_step == 4 and len(logged) == 4 and all(math.isfinite(v) for v in logged)


def test_codecs_are_refused_when_the_training_module_is_built():
    with pytest.raises(ValueError, match=r"model.tokenizer 'jpeg:q=50' \(PillowCodec\) cannot be trained"):
        AutoencoderModule("jpeg:q=50")


def test_every_quantizer_reports_the_same_loss_names():
    from tokbench.quantize import LOSS_NAMES

    for spec, size in (("vq:size=tiny", 32), ("residual_scale:size=tiny", 32), ("holistic_1d:size=tiny", 64)):
        tok = AutoencoderModule(spec).tokenizer.train()
        assert set(tok.autoencode(torch.rand(2, 3, size, size)).losses) == {"codebook", "commitment"}, spec
    assert set(LOSS_NAMES) == {"codebook", "commitment", "entropy"}  # entropy: LFQ/BSQ (tests/test_grid_quantizers.py)


def _tiny_trainer(tmp_path, steps):
    return L.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_progress_bar=False,
                     enable_checkpointing=False, limit_val_batches=0, default_root_dir=tmp_path,
                     enable_model_summary=False)


def test_gan_training_counts_one_global_step_per_batch_and_trains_the_discriminator(tmp_path):
    torch.manual_seed(0)
    module = AutoencoderModule("vq:size=tiny", disc_weight=0.5, disc_start=1, disc_ndf=8, disc_loss="non_saturating",
                               max_steps=3, learned_logvar=True)
    disc_before = [p.detach().clone() for p in module.discriminator.parameters()]
    logged = []

    class Spy(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            logged.append({k: float(v) for k, v in trainer.callback_metrics.items()})

    trainer = _tiny_trainer(tmp_path, 3)
    trainer.callbacks.append(Spy())
    trainer.fit(module, ImageDataModule(image_size=32, batch_size=2, num_workers=0, repeats=1))
    assert trainer.global_step == 3  # 3 batches, although the discriminator stepped twice too
    assert "train/d_loss" not in logged[0]  # before disc_start
    for key in ("train/d_loss", "train/g_loss", "train/logits_real", "train/logits_fake",
                "train/disc_adaptive_weight", "lr_disc"):
        assert key in logged[2], key
    assert any(not torch.equal(a, b) for a, b in zip(disc_before, module.discriminator.parameters()))
    assert module.logvar.item() != 0.0  # the SD recipe's learned logvar is optimized
    assert all(p.requires_grad for p in module.discriminator.parameters())  # untoggled again


def test_perceptual_loss_needs_its_weights_and_says_where(tmp_path):
    with pytest.raises(MissingWeightsError, match="alexnet"):
        AutoencoderModule("vq:size=tiny", perceptual_weight=1.0, weights_dir=str(tmp_path))
    module = AutoencoderModule("vq:size=tiny", perceptual_weight=1.0, perceptual_random_backbone=True)
    x = torch.rand(2, 3, 32, 32)
    rec = x.clone().requires_grad_(True)
    loss = module.reconstruction_loss(rec + 0.1 * torch.rand_like(x), x)
    loss.backward()
    assert rec.grad.abs().sum() > 0  # LPIPS passes gradients to the reconstruction


def _batches(sampler, batch):
    items = list(sampler)
    return [items[i:i + batch] for i in range(0, len(items), batch)]


def test_sampler_shards_the_global_batch_and_resumes_at_any_step():
    step = {"now": 0}
    one = StepIndexedSampler(20, 4, num_replicas=1, rank=0, seed=3, step_fn=lambda: step["now"])
    ranks = [StepIndexedSampler(20, 2, num_replicas=2, rank=r, seed=3, step_fn=lambda: step["now"]) for r in (0, 1)]
    whole = _batches(one, 4)
    assert len(whole) == len(one) // 4 == 5
    for b, (r0, r1) in enumerate(zip(_batches(ranks[0], 2), _batches(ranks[1], 2))):
        assert r0 + r1 == whole[b]  # rank r holds chunk r of the 1-process batch
    step["now"] = 7  # epoch 1, batch 2
    resumed = _batches(one, 4)
    step["now"] = 5
    assert resumed == _batches(one, 4)[2:]
    assert resumed[0][0][0] == 1  # items carry their epoch, which seeds the crops
    with pytest.raises(ValueError, match="data.batch_size"):
        StepIndexedSampler(3, 4, num_replicas=1, rank=0, seed=0, step_fn=lambda: 0)


def test_a_corrupt_image_is_skipped_and_counted_also_inside_loader_workers(tmp_path):
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(tmp_path / f"ok{i}.png")
    (tmp_path / "broken.png").write_bytes(b"not an image at all")  # caught by the scan
    late = tmp_path / "late.png"
    Image.fromarray(rng.integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(late)
    dm = ImageDataModule(root=str(tmp_path), image_size=16, batch_size=2, num_workers=1, val_fraction=0.0, repeats=1)
    with pytest.warns(UserWarning, match="broken.png"):
        dm.setup("fit")
    assert [name for name, _ in dm.skipped] == ["broken.png"]
    late.write_bytes(late.read_bytes()[:60])  # damaged after the scan (a flaky disk, a file being rewritten)
    index = next(i for i, s in enumerate(dm.train_set.sources) if s.name == "late.png")
    loader = torch.utils.data.DataLoader(dm.train_set, batch_size=1, sampler=[(0, index)], num_workers=1)
    (image,) = list(loader)  # the worker warns on its own stderr
    assert image.shape == (1, 3, 16, 16)  # replaced by the next readable image
    assert dm.train_set.failures == 1 and dm.num_skipped == 2  # the worker's count reached this process


def test_image_files_are_seeded_per_epoch_and_index():
    arrays = [np.random.default_rng(i).integers(0, 255, (40, 40, 3), dtype=np.uint8) for i in range(2)]
    from torchvision.transforms import v2

    files = ImageFiles(arrays, v2.RandomResizedCrop(16, scale=(0.2, 1.0), antialias=True), seed=1)
    assert torch.equal(files[(0, 1)], files[(0, 1)])
    assert not torch.equal(files[(0, 1)], files[(1, 1)])
