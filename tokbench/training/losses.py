"""Loss pieces of the autoencoding objective: PatchGAN discriminator, GAN losses, adaptive weight."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class PatchDiscriminator(nn.Module):
    """PatchGAN (pix2pix / taming): ``num_layers`` stride-2 convs, one logit per patch."""

    def __init__(self, ndf: int = 64, num_layers: int = 3, in_channels: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        ch = ndf
        for i in range(1, num_layers + 1):
            out = ndf * min(2**i, 8)
            stride = 2 if i < num_layers else 1
            # BatchNorm as in the reference; under DDP set trainer.sync_batchnorm so it is reduced across ranks.
            layers += [nn.Conv2d(ch, out, 4, stride, 1, bias=False), nn.BatchNorm2d(out), nn.LeakyReLU(0.2, True)]
            ch = out
        layers.append(nn.Conv2d(ch, 1, 4, 1, 1))
        self.net = nn.Sequential(*layers)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)

    def forward(self, x_B3HW: torch.Tensor) -> torch.Tensor:
        return self.net(x_B3HW * 2 - 1)  # the discriminator sees the [-1, 1] range


def discriminator_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "hinge":
        return 0.5 * (F.relu(1 - logits_real).mean() + F.relu(1 + logits_fake).mean())
    # non-saturating: real -> 1, fake -> 0 (targets as the *second* argument; LlamaGen issue 84 swapped them)
    return 0.5 * (F.binary_cross_entropy_with_logits(logits_real, torch.ones_like(logits_real))
                  + F.binary_cross_entropy_with_logits(logits_fake, torch.zeros_like(logits_fake)))


def generator_loss(logits_fake: torch.Tensor, kind: str) -> torch.Tensor:
    if kind == "hinge":
        return -logits_fake.mean()
    return F.binary_cross_entropy_with_logits(logits_fake, torch.ones_like(logits_fake))


def adaptive_weight(rec_loss: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor, max_weight: float = 1e4) -> torch.Tensor:
    """Taming's balance: ``|grad_last rec| / (|grad_last G| + 1e-4)``, clamped to ``[0, max_weight]``."""
    rec_grad = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    g_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    return (rec_grad.norm() / (g_grad.norm() + 1e-4)).clamp(0.0, max_weight).detach()


class Perceptual(nn.Module):
    """LPIPS as a training loss (gradients flow to the reconstruction)."""

    def __init__(self, weights_dir: str | None = None, random_backbone: bool = False) -> None:
        super().__init__()
        from tokbench import weights
        from tokbench.metrics.perceptual import LPIPSMetric

        path = None if random_backbone else weights.require(["lpips"], weights_dir)["lpips"]
        self.lpips = LPIPSMetric(path, random_backbone=random_backbone).model

    def forward(self, x_B3HW: torch.Tensor, y_B3HW: torch.Tensor) -> torch.Tensor:
        return self.lpips(x_B3HW * 2 - 1, y_B3HW * 2 - 1).mean()
