"""Quantizers: codes are the exact nearest ones, gradients pass, statistics and restarts behave."""
import torch

from tokbench.quantize import MultiScaleResidualQuantizer, VectorQuantizer


def brute_force_ids(z_ND, codebook_KD):
    return torch.cdist(z_ND.double(), codebook_KD.double()).argmin(dim=1)


def test_vq_codes_equal_brute_force_search_plain_and_l2_normalized():
    torch.manual_seed(0)
    for l2 in (False, True):
        q = VectorQuantizer(512, 8, l2_normalize=l2).eval()
        z = torch.randn(4, 8, 6, 7)
        out = q(z)
        z_ND = q.prepare(z.permute(0, 2, 3, 1).reshape(-1, 8))
        assert torch.equal(out.ids.flatten(), brute_force_ids(z_ND, q.codebook()))
        assert out.ids.shape == (4, 6, 7) and out.z_q.shape == z.shape


def test_straight_through_gradients_reach_the_input_and_the_codebook():
    q = VectorQuantizer(64, 4).train()
    z = torch.randn(2, 4, 3, 3, requires_grad=True)
    out = q(z)
    (out.z_q.square().sum() + sum(out.losses.values())).backward()
    assert z.grad is not None and z.grad.abs().sum() > 0
    assert q.embedding.grad is not None and q.embedding.grad.abs().sum() > 0


def test_commitment_is_weighted_by_beta():
    torch.manual_seed(1)
    z = torch.randn(2, 4, 3, 3)
    a, b = VectorQuantizer(16, 4, beta=0.25), VectorQuantizer(16, 4, beta=1.0)
    b.load_state_dict(a.state_dict())
    la, lb = a(z).losses, b(z).losses
    assert torch.allclose(lb["commitment"], 4 * la["commitment"])
    assert torch.allclose(la["codebook"], lb["codebook"])


def test_ema_updates_pull_codes_towards_their_data():
    torch.manual_seed(0)
    q = VectorQuantizer(4, 2, use_ema=True, ema_decay=0.5).train()
    centers = torch.tensor([[5.0, 5.0], [-5.0, 5.0], [5.0, -5.0], [-5.0, -5.0]])
    q.embedding.data = centers + torch.randn(4, 2)
    before = (q.embedding - centers).norm(dim=1)
    z = (centers.repeat(50, 1) + 0.01 * torch.randn(200, 2)).unsqueeze(-1)  # (N, D, 1)
    for _ in range(10):
        q(z, channel_dim=1)
    after = (q.embedding - centers).norm(dim=1)
    assert (after < 0.1).all() and (after < before).all()
    assert "codebook" not in q(z, channel_dim=1).losses


def test_dead_codes_restart_from_data_and_usage_counts_real_hits_only():
    torch.manual_seed(0)
    q = VectorQuantizer(32, 2, dead_code_steps=3, usage_window=1000).train()
    q.embedding.data[1:] += 100.0  # only code 0 is near the data
    z = torch.randn(64, 2, 1)
    q(z, channel_dim=1)
    assert float(q.usage_stats()["usage"]) == 1 / 32
    for _ in range(3):
        q(z, channel_dim=1)
    assert (q.embedding[1:].abs() < 10).all(), "dead codes were not moved onto the data"
    for _ in range(3):
        q(z, channel_dim=1)
    assert float(q.usage_stats()["usage"]) > 0.5


def test_perplexity_is_the_number_of_equally_used_codes():
    q = VectorQuantizer(8, 1, ema_decay=0.0).train()
    q.embedding.data = torch.arange(8.0).unsqueeze(1)
    q(torch.tensor([0.0, 1.0, 2.0, 3.0]).view(4, 1), channel_dim=1)
    assert abs(float(q.usage_stats()["perplexity"]) - 4.0) < 1e-4


def test_residual_quantizer_ids_decode_to_its_f_hat_and_codes_are_nearest():
    torch.manual_seed(0)
    q = MultiScaleResidualQuantizer(64, 8, scales=(1, 2, 3, 5)).eval()
    f = torch.randn(2, 8, 5, 5)
    out = q(f)
    assert [tuple(i.shape) for i in out.ids] == [(2, 1, 1), (2, 2, 2), (2, 3, 3), (2, 5, 5)]
    assert torch.allclose(q.decode(out.ids), out.z_q, atol=1e-5)
    # the first scale's code is the nearest to the area-averaged feature
    z0 = f.mean(dim=(2, 3))
    assert torch.equal(out.ids[0].flatten(), brute_force_ids(z0, q.codes.codebook()))


def test_residual_quantizer_non_square_grid_and_partial_decode():
    q = MultiScaleResidualQuantizer(32, 4, scales=(1, 2, 4)).eval()
    ids = q.encode(torch.randn(1, 4, 2, 4))
    assert [tuple(i.shape[-2:]) for i in ids] == [(1, 1), (1, 2), (2, 4)]
    assert q.decode(ids, num_scales=1).shape == (1, 4, 2, 4)
