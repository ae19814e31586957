"""MAR's diffusion process as LTH14/mar runs it (guided-diffusion's formulas), checked against
numbers computed from the published formulas: respacing, the learned-range variance, the
loss's bound term, the reverse steps, temperature, and the linear CFG ramp."""
import math

import numpy as np
import pytest
import torch

from tokbench.generation.continuous import ContinuousGPT
from tokbench.generation.diffusion_head import DiffusionHead, space_timesteps
from tokbench.generation.sampling import mar_cfg
from helpers import one_thread  # noqa: F401  (autouse fixture)


def reference_betas(T: int = 1000) -> np.ndarray:
    # guided-diffusion's cosine schedule: beta_i = min(1 - f((i+1)/T) / f(i/T), 0.999),
    # f(t) = cos((t + 0.008) / 1.008 * pi / 2)^2
    f = lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
    return np.array([min(1 - f((i + 1) / T) / f(i / T), 0.999) for i in range(T)])


def reference_chain(kept: list[int]) -> dict[str, np.ndarray]:
    """A respaced chain the way guided-diffusion builds it: new beta_k = 1 - abar(t_k) / abar(t_{k-1}),
    then its posterior variance beta (1 - abar_prev) / (1 - abar), clipped at k = 0 to k = 1's."""
    ab_full = np.cumprod(1 - reference_betas())
    ab = ab_full[kept]
    ab_prev = np.append(1.0, ab[:-1])
    beta = 1 - ab / ab_prev
    post = beta * (1 - ab_prev) / (1 - ab)
    return {"ab": ab, "ab_prev": ab_prev, "beta": beta, "min_log": np.log(np.append(post[1], post[1:])),
            "max_log": np.log(beta), "c1": beta * np.sqrt(ab_prev) / (1 - ab),
            "c2": (1 - ab_prev) * np.sqrt(1 - beta) / (1 - ab)}


def test_respacing_is_guided_diffusions():
    # space_timesteps(1000, "100"): stride (1000 - 1) / (100 - 1) = 10.0909..., accumulated and
    # rounded: 60.545 -> 61, so 0, 10, 20, 30, 40, 50, 61, 71, ..., 979, 989, 999
    kept = space_timesteps(1000, 100)
    assert kept[:8] == [0, 10, 20, 30, 40, 50, 61, 71] and kept[-3:] == [979, 989, 999] and len(set(kept)) == 100
    assert space_timesteps(1000, 10) == [0, 111, 222, 333, 444, 555, 666, 777, 888, 999]
    assert space_timesteps(1000, 50)[:6] == [0, 20, 41, 61, 82, 102]
    assert space_timesteps(1000, 1) == [0]
    with pytest.raises(ValueError, match="1..1000"):
        space_timesteps(1000, 1001)


def test_the_respaced_chain_matches_published_numbers():
    # numbers from guided-diffusion's formulas (numpy float64) at 100 steps, kept steps k = 1 (t = 10),
    # 6 (t = 61) and 99 (t = 999): log posterior variance (clipped), log beta, 1/sqrt(abar), c1, c2
    head = DiffusionHead(2, cond_width=4, width=16, depth=1)
    kept, chain = head.sampling_chain(100, torch.device("cpu"))
    expected = {1: (-10.15394511055059, -7.293652980830654, 1.0003607432229893, 0.9427674281100751, 0.05723256838029648),
                6: (-6.015077369632066, -5.66890185498093, 1.0059010279730676, 0.293829974334814, 0.7061664341802699),
                99: (-0.00025288514517641907, -1.0000851416131292e-05, 20291.169634711496, 0.015583721365743979,
                     0.003161636366245914)}
    for k, (min_log, max_log, sqrt_recip_ab, c1, c2) in expected.items():
        assert chain["min_log"][k].item() == pytest.approx(min_log, rel=1e-5, abs=1e-7)
        assert chain["max_log"][k].item() == pytest.approx(max_log, rel=1e-5, abs=1e-9)
        assert (1 / chain["ab"][k].sqrt()).item() == pytest.approx(sqrt_recip_ab, rel=1e-5)
        assert chain["x0_coef"][k].item() == pytest.approx(c1, rel=1e-5)
        assert chain["xt_coef"][k].item() == pytest.approx(c2, rel=1e-5)
    assert kept[99] == 999


def _stub(head: DiffusionHead, channels: int):
    """A deterministic 'network': eps = 0.8 x + 0.1 z[:, :C], v = tanh(z[:, C:2C])."""
    def forward(x_NC, t_N, z_NW):
        return torch.cat([0.8 * x_NC + 0.1 * z_NW[:, :channels], torch.tanh(z_NW[:, channels:2 * channels])], dim=-1)
    head.forward = forward


@pytest.mark.parametrize("cfg", [1.0, 2.5])
def test_sampling_follows_guided_diffusion_step_by_step(cfg):
    C, N, steps, temperature = 3, 4, 10, 0.7
    head = DiffusionHead(C, cond_width=8, width=16, depth=1)
    _stub(head, C)
    z = torch.randn(2 * N if cfg != 1 else N, 8, generator=torch.Generator().manual_seed(5))
    got = head.sample(z, steps=steps, temperature=temperature, cfg=cfg, generator=torch.Generator().manual_seed(3))

    # Reference (float64): p_sample_loop with LEARNED_RANGE and eps prediction. Starting noise plain
    # N(0, I); each step: x0 = x / sqrt(abar) - sqrt(1 / abar - 1) eps, mean = c1 x0 + c2 x,
    # log var = frac log beta + (1 - frac) log posterior var with frac = (v + 1) / 2, and
    # x <- mean + exp(log var / 2) * noise * temperature, no noise at the last step. CFG:
    # eps = eps_u + cfg (eps_c - eps_u), v from the conditional rows.
    ch = reference_chain(space_timesteps(1000, steps))
    g = torch.Generator().manual_seed(3)
    x = torch.randn(N, C, generator=g).double().numpy()
    zd = z.double().numpy()
    for k in reversed(range(steps)):
        eps_rows = 0.8 * np.concatenate([x, x] if cfg != 1 else [x]) + 0.1 * zd[:, :C]
        v = np.tanh(zd[:N, C:2 * C])
        eps = eps_rows[N:] + cfg * (eps_rows[:N] - eps_rows[N:]) if cfg != 1 else eps_rows
        x0 = x / np.sqrt(ch["ab"][k]) - np.sqrt(1 / ch["ab"][k] - 1) * eps
        mean = ch["c1"][k] * x0 + ch["c2"][k] * x
        if k == 0:
            x = mean
            break
        frac = (v + 1) / 2
        log_var = frac * ch["max_log"][k] + (1 - frac) * ch["min_log"][k]
        noise = torch.randn(N, C, generator=g).double().numpy()
        x = mean + np.exp(0.5 * log_var) * noise * temperature
    np.testing.assert_allclose(got.double().numpy(), x, rtol=2e-4, atol=2e-4)


def test_temperature_leaves_the_starting_noise_alone():
    # one kept step (t = 0): the sample is the posterior mean x_T / sqrt(1 - beta_0) for eps = 0,
    # whatever the temperature (MAR scales only the noise added at each step)
    head = DiffusionHead(2, cond_width=4, width=16, depth=1)
    head.forward = lambda x, t, z: torch.zeros(len(x), 4)
    start = torch.randn(5, 2, generator=torch.Generator().manual_seed(0))
    got = head.sample(torch.zeros(5, 4), steps=1, temperature=0.3, generator=torch.Generator().manual_seed(0))
    # 1 / sqrt(1 - beta_0) = 1 / sqrt(abar_0) = 1.000020642751578
    torch.testing.assert_close(got, start * 1.000020642751578)


@pytest.mark.parametrize("t", [500, 0, 999])
def test_loss_terms_match_the_published_bound(t):
    # x0 = (0.3, -0.5), noise = (1.2, -0.7), predicted eps = (1.0, -0.4), v = (0.2, -0.6) at timestep t of
    # the 1,000-step chain. MSE = mean((eps - noise)^2) = 0.065. VB (bits per channel): for t > 0
    # mean KL(q(x_{t-1} | x_t, x0) || p(x_{t-1} | x_t)) / ln 2 with the learned-range variance;
    # at t = 0 the decoder NLL -log(Phi((x0 - mu + 1/255) / s) - Phi((x0 - mu - 1/255) / s)) / ln 2
    # (Phi's tanh approximation). Values from guided-diffusion's formulas in numpy float64.
    expected_vb = {500: 0.00029364184297185554, 0: 0.9493135419916348, 999: 46.84077828723127}[t]
    head = DiffusionHead(2, cond_width=4, width=16, depth=1)
    head.forward = lambda x, tt, z: torch.tensor([[1.0, -0.4, 0.2, -0.6]]).expand(len(x), 4)
    mse, vb = head.loss_terms(torch.tensor([[0.3, -0.5]]), torch.zeros(1, 4), t_N=torch.tensor([t]),
                              noise_NC=torch.tensor([[1.2, -0.7]]))
    assert mse.item() == pytest.approx(0.065, rel=1e-5)
    assert vb.item() == pytest.approx(expected_vb, rel=2e-3)


def test_the_bound_trains_the_variance_and_not_the_mean():
    head = DiffusionHead(2, cond_width=4, width=16, depth=1)
    torch.nn.init.normal_(head.out.weight, std=0.1)
    x0, z = torch.randn(64, 2), torch.randn(64, 4)
    _, vb = head.loss_terms(x0, z, t_N=torch.full((64,), 3), noise_NC=torch.randn(64, 2))
    vb.mean().backward()
    assert head.out.weight.grad[:2].abs().max() == 0  # the noise outputs get no gradient from the bound
    assert head.out.weight.grad[2:].abs().max() > 0


def test_cfg_ramps_linearly_over_the_tokens_as_mar():
    # MAR: cfg_t = 1 + (cfg - 1) * (L - mask_len) / L, with L - mask_len = t + 1 tokens known after
    # drawing token t: for L = 4, cfg = 3 -> 1.5, 2.0, 2.5, 3.0
    assert [mar_cfg(3.0, t, 4) for t in range(4)] == [1.5, 2.0, 2.5, 3.0]
    assert [mar_cfg(3.0, t, 4, "constant") for t in range(4)] == [3.0] * 4
    model = ContinuousGPT(2, 4, num_classes=2, width=16, depth=1, heads=2, head_width=16, head_depth=1).eval()
    used = []

    def record(z, steps, temperature, cfg, generator):
        used.append(cfg)
        return torch.zeros(len(z) // 2 if cfg != 1 else len(z), 2)  # the conditional rows
    model.head.sample = record
    model.generate(torch.tensor([0, 1]), cfg=3.0, diffusion_steps=2)  # linear is the default
    assert used == [1.5, 2.0, 2.5, 3.0]
    used.clear()
    model.generate(torch.tensor([0, 1]), cfg=3.0, diffusion_steps=2, cfg_schedule="constant")
    assert used == [3.0] * 4
    with pytest.raises(ValueError, match="linear, constant"):
        model.generate(torch.tensor([0]), cfg=3.0, cfg_schedule="cosine")


def test_generators_saved_with_the_fixed_variance_head_load_and_sample_as_trained(tmp_path):
    from safetensors.torch import save_file

    from tokbench.generation.checkpoint import WEIGHTS_NAME, load_generator, save_generator

    torch.manual_seed(0)
    model = ContinuousGPT(3, 4, width=16, depth=1, heads=2, head_width=16, head_depth=1)
    torch.nn.init.normal_(model.head.out.weight, std=0.1)
    save_generator(model, tmp_path / "g", preset="tiny", tokenizer={"spec": "vae:size=tiny", "sha256": None},
                   train_steps=1)
    old = {k: v.clone() for k, v in model.state_dict().items()}
    old["head.out.weight"], old["head.out.bias"] = old["head.out.weight"][:3], old["head.out.bias"][:3]
    save_file(old, str(tmp_path / "g" / WEIGHTS_NAME))  # as the former head wrote it: the noise only
    loaded, _ = load_generator(tmp_path / "g")
    torch.testing.assert_close(loaded.head.out.weight[:3], old["head.out.weight"])
    assert torch.all(loaded.head.out.weight[3:] == 0) and torch.all(loaded.head.out.bias[3:] == -1)
    # v = -1 everywhere: every step's variance is the posterior one, the fixed-small variance it was trained with
    out = loaded.head(torch.randn(5, 3), torch.full((5,), 400), torch.randn(5, 16))
    assert torch.all(out[:, 3:] == -1)


def test_resuming_a_run_of_the_fixed_variance_head_is_refused():
    from tokbench.checkpoint import CheckpointError
    from tokbench.generation.module import GeneratorModule

    layout = {"arrangement": "grid", "shape": [2, 2], "latent_channels": 3}
    module = GeneratorModule(info={"layout": layout, "num_classes": 0, "tokenizer": {"spec": "vae:size=tiny"}},
                             arch="mar", preset="tiny")
    state = {k: v.clone() for k, v in module.state_dict().items()}
    module.on_load_checkpoint({"state_dict": state})  # the current head resumes
    state["model.head.out.weight"] = state["model.head.out.weight"][:3]
    with pytest.raises(CheckpointError, match="former MAR head .* cannot be resumed"):
        module.on_load_checkpoint({"state_dict": state})
