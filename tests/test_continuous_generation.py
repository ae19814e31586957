"""Continuous-token generation (MAR-style diffusion head) for the KL-VAE family."""
import numpy as np
import pytest
import torch
from PIL import Image

import tokbench
from tokbench.generation.continuous import ContinuousGPT
from tokbench.generation.diffusion_head import DiffusionHead
from tokbench.generation.sequence import latents_to_sequence
from tokbench.generation.training import fit_in_memory
from helpers import one_thread  # noqa: F401  (autouse fixture)


def _mixture(n: int, generator: torch.Generator) -> torch.Tensor:
    """Two 2-D Gaussians (std 0.3) at (-2, 0) and (2, 1), equally likely."""
    component = torch.randint(0, 2, (n,), generator=generator)
    means = torch.tensor([[-2.0, 0.0], [2.0, 1.0]])
    return means[component] + 0.3 * torch.randn(n, 2, generator=generator)


MEANS, STD = torch.tensor([[-2.0, 0.0], [2.0, 1.0]]), 0.3


def _optimal_x0(x_NC: torch.Tensor, ab_N1: torch.Tensor) -> torch.Tensor:
    """E[x0 | x_t] for the mixture, in closed form: x_t | component j ~ N(sqrt(ab) mu_j, ab std^2 + 1 - ab),
    E[x0 | x_t, j] = mu_j + sqrt(ab) std^2 / (ab std^2 + 1 - ab) (x_t - sqrt(ab) mu_j), weighted by the
    components' posterior probabilities."""
    ab = ab_N1.double()[:, :, None]
    var = ab * STD ** 2 + 1 - ab
    d = x_NC.double()[:, None, :] - ab.sqrt() * MEANS.double()[None]
    weights = (-(d ** 2).sum(-1) / (2 * var[..., 0])).softmax(-1)
    return (weights[..., None] * (MEANS.double()[None] + ab.sqrt() * STD ** 2 / var * d)).sum(1)


def _optimal_eps(head: DiffusionHead, x_NC: torch.Tensor, t_N: torch.Tensor) -> torch.Tensor:
    ab = head.alpha_bar[t_N][:, None].double()
    return ((x_NC.double() - ab.sqrt() * _optimal_x0(x_NC, ab)) / (1 - ab).sqrt()).float()


def test_mar_sampling_with_the_exact_denoiser_draws_the_mixture():
    head = DiffusionHead(2, cond_width=8, width=16, depth=1)
    # the Bayes-optimal noise prediction and v = -1 (posterior variance): MAR's sampler must then
    # draw the mixture itself
    head.forward = lambda x, t, z: torch.cat([_optimal_eps(head, x, t), -torch.ones_like(x)], dim=-1)
    samples = head.sample(torch.zeros(4000, 8), steps=100, generator=torch.Generator().manual_seed(1))
    # closed form: mean (0, 0.5); covariance [[4.09, 1], [1, 0.34]] (between-component spread + 0.09)
    mean, cov = torch.tensor([0.0, 0.5]), torch.tensor([[4.09, 1.0], [1.0, 0.34]])
    assert torch.allclose(samples.mean(0), mean, atol=0.1), samples.mean(0)
    assert torch.allclose(torch.cov(samples.T), cov, rtol=0.1, atol=0.03), torch.cov(samples.T)
    assert 0.45 < (samples[:, 0] > 0).float().mean() < 0.55  # both modes, equally often
    near = torch.cdist(samples, MEANS).min(1).values
    assert (near < 1.0).float().mean() > 0.97  # and nothing in between


def test_the_diffusion_head_alone_learns_the_mixtures_denoiser():
    torch.manual_seed(0)
    head = DiffusionHead(2, cond_width=8, width=64, depth=3)
    opt = torch.optim.AdamW(head.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(600):
        loss = head.loss(_mixture(256, g), torch.zeros(256, 8), g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    # Its x0 prediction against the closed-form E[x0 | x_t], relative to how much E[x0 | x_t] varies.
    # (Sampling a head this briefly trained diverges: MAR's chain starts at t = 999, where the clipped
    # cosine schedule leaves abar = 2.4e-9 and the step's mean divides the noise error by sqrt(abar).)
    with torch.no_grad():
        for t in (50, 200, 400, 600, 800):
            x0 = _mixture(2000, g)
            ab = head.alpha_bar[t]
            x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * torch.randn(2000, 2, generator=g)
            eps = head(x_t, torch.full((2000,), t), torch.zeros(2000, 8))[:, :2]
            learned = (x_t - (1 - ab).sqrt() * eps) / ab.sqrt()
            optimal = _optimal_x0(x_t, ab.expand(2000, 1)).float()
            error = (learned - optimal).pow(2).mean().sqrt()
            spread = (optimal - optimal.mean(0)).pow(2).mean().sqrt()
            assert error < 0.35 * spread, (t, error, spread)


@pytest.fixture(scope="module")
def vae_latents():
    tok = tokbench.create("vae:size=tiny").eval()
    g = torch.Generator().manual_seed(0)
    coarse = torch.rand(96, 3, 4, 4, generator=g)
    images = torch.nn.functional.interpolate(coarse, size=32, mode="bicubic").clamp(0, 1)  # smooth images
    with torch.no_grad():
        latents = latents_to_sequence(tok.encode(images))
    return tok, latents  # (96, 64, 4)


def test_held_out_denoising_loss_falls_with_training(vae_latents):
    tok, latents = vae_latents
    layout = tok.layout_for(32, 32)
    train, held_out = latents[:80], latents[80:]
    losses = []
    for steps in (2, 150):
        module = fit_in_memory(train, layout, arch="mar", steps=steps, batch_size=16, lr=3e-3)
        losses.append(module.held_out_loss(held_out, seed=0).mean().item())
    assert losses[1] < 0.8 * losses[0], losses


def test_sampling_is_deterministic_and_the_kv_cache_matches_recomputation():
    torch.manual_seed(0)
    model = ContinuousGPT(4, 16, num_classes=3, width=32, depth=2, heads=4, grid=(4, 4), head_width=32,
                          head_depth=2).eval()
    for p in model.head.parameters():  # a head that is not the zero-initialised identity
        torch.nn.init.normal_(p, std=0.05)
    labels = torch.tensor([0, 2])
    for cfg in (1.0, 3.0):
        draw = lambda cache, seed=1: model.generate(labels, cfg=cfg, diffusion_steps=10, use_cache=cache,  # noqa: E731
                                                    generator=torch.Generator().manual_seed(seed))
        a, b = draw(True), draw(False)
        assert a.shape == (2, 16, 4)
        assert torch.equal(a, draw(True))  # same seed, same latents
        assert not torch.allclose(a, draw(True, seed=2))
        assert torch.allclose(a, b, atol=1e-4), (a - b).abs().max()


def test_latent_normalisation_is_measured_and_stored(vae_latents, tmp_path):
    from tokbench.generation.checkpoint import load_generator, save_generator

    tok, latents = vae_latents
    scaled = latents * 7 + 3  # a VAE with another scale: no hand-set constant needed
    module = fit_in_memory(scaled, tok.layout_for(32, 32), arch="mar", steps=1)
    flat = scaled.reshape(-1, 4).double()
    assert torch.allclose(module.ema.latent_mean, flat.mean(0).float(), atol=1e-4)
    assert torch.allclose(module.ema.latent_std, flat.std(0).float(), rtol=1e-4)
    save_generator(module.ema, tmp_path / "g", preset="tiny", tokenizer={"spec": "vae:size=tiny", "sha256": None},
                   train_steps=1)
    loaded, config = load_generator(tmp_path / "g")
    assert config["arch"] == "mar" and torch.equal(loaded.latent_std, module.ema.latent_std)


def test_eval_generation_task_on_a_vae_end_to_end(tmp_path):
    from tokbench.results import validate_results
    from tokbench.tasks.runner import EvalConfig, run_eval

    results = run_eval(EvalConfig(tokenizer="vae:size=tiny", tasks=["generation"], resolution="32",
                                  task_options={"generation": {"steps": 20, "crops": 4, "samples": 3,
                                                               "diffusion_steps": 10}}, out=tmp_path / "out"))
    assert validate_results(results) == []
    block = results["tasks"]["generation"]
    assert set(block["metrics"]) == {"diffusion_loss"} and block["metrics"]["diffusion_loss"]["n"] == 3
    head = block["extra"]["generator"]["head"]
    assert block["extra"]["generator"]["arch"] == "mar" and head["kind"] == "diffusion (MAR)" and head["width"] == 64
    assert block["extra"]["sampling"]["diffusion_steps"] == 10
    assert (tmp_path / "out" / "grids" / "generation.png").is_file()


def test_gen_pipeline_on_vae_latents(tmp_path):
    from tokbench.generation.commands.fit import build_cli, export_generator, translate_arguments
    from tokbench.generation.sample import SamplingSettings, sample_to_folder
    from tokbench.generation.token_encoding import encode_dataset

    rng = np.random.default_rng(0)
    (tmp_path / "images").mkdir()
    for k in range(8):
        Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "images" / f"{k}.png")
    encode_dataset("vae:size=tiny", tmp_path / "images", tmp_path / "tokens", resolution=32, progress=False)
    argv, _ = translate_arguments(["--config", "mar_tiny", "--tokens", str(tmp_path / "tokens"), "--trainer.max_steps", "3",
                                   "--trainer.default_root_dir", str(tmp_path / "run"), "--trainer.logger", "false",
                                   "--trainer.enable_progress_bar", "false", "--data.batch_size", "4",
                                   "--data.held_out_every", "4", "--trainer.val_check_interval", "3"])
    cli = build_cli(argv)
    cli.trainer.fit(cli.model, cli.datamodule)
    assert cli.trainer.callback_metrics["val/diffusion_loss"] > 0
    # the latent normalisation was measured on the training tokens before the first step
    assert not torch.equal(cli.model.ema.latent_std, torch.ones(4))
    out = sample_to_folder(export_generator(cli.model, tmp_path / "run"), tmp_path / "samples", 2,
                           SamplingSettings(diffusion_steps=5), progress=False)
    assert Image.open(out / "000001.png").size == (32, 32)
