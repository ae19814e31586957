"""LPIPS (AlexNet, v0.1) through the ``lpips`` package.

Inputs are scaled from ``[0, 1]`` to the ``[-1, 1]`` range LPIPS was trained on (a common
mistake elsewhere is to feed ``[0, 1]``). The AlexNet backbone is read from the weights
cache with ``weights_only=True``; ``random_backbone=True`` (tests only) uses a random one.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn


class LPIPSMetric(nn.Module):
    def __init__(self, backbone_weights: Path | None = None, random_backbone: bool = False) -> None:
        super().__init__()
        import lpips

        if backbone_weights is None and not random_backbone:
            raise ValueError("LPIPS needs the AlexNet weights file (see tokbench.weights) or random_backbone=True")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torchvision's deprecation notes about `pretrained`
            # pnet_rand=True builds AlexNet without downloading; we load its weights ourselves.
            self.model = lpips.LPIPS(net="alex", version="0.1", pretrained=True, pnet_rand=True, verbose=False)
        if backbone_weights is not None:
            state = torch.load(backbone_weights, map_location="cpu", weights_only=True)
            features = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
            tv_alex = nn.Sequential(*self._torchvision_alexnet_features())
            tv_alex.load_state_dict(features)
            self._copy_backbone(tv_alex)
        self.model.eval().requires_grad_(False)

    @staticmethod
    def _torchvision_alexnet_features():
        from torchvision.models import alexnet

        return list(alexnet(weights=None).features)

    def _copy_backbone(self, features: nn.Sequential) -> None:
        # lpips splits torchvision's alexnet.features into slice1..slice5 keeping the indices.
        net = self.model.net
        for name in ("slice1", "slice2", "slice3", "slice4", "slice5"):
            for idx, layer in getattr(net, name)._modules.items():
                layer.load_state_dict(features[int(idx)].state_dict())

    @torch.no_grad()
    def forward(self, x_B3HW: torch.Tensor, y_B3HW: torch.Tensor) -> torch.Tensor:
        """Per-image LPIPS distance ``(B,)`` of two ``[0, 1]`` batches."""
        return self.model(x_B3HW * 2 - 1, y_B3HW * 2 - 1).flatten().float()


def load_lpips(weights_path: Path, device: str | torch.device = "cpu") -> LPIPSMetric:
    """The LPIPS network of the ``lpips`` metric (see `tokbench.metrics.catalog`)."""
    return LPIPSMetric(weights_path).to(device)
