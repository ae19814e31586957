"""VAR's multi-scale residual quantizer (next-scale token maps).

Per scale k (small to large): area-downsample the remaining residual to the k-th map
size, quantize it with the shared codebook, bicubic-upsample the codes back to the full
grid, refine them with phi_k (phi(h) = (1-r) h + r conv3x3(h); a few convolutions shared
across all scales, each scale using the one whose tick is nearest to its position), add
the result to f_hat and subtract it from the residual. Decoding from the first k maps
gives a coarse-to-fine reconstruction.

The per-scale codes come from any quantizer with the `VectorQuantizer` surface
(``quantizer="vq"``, VAR's; or the search-free ``"lfq"``, ``"bsq"``, ``"fsq"``, see
`make_quantizer`). The searched residuals are detached (as VAR); a quantizer with its own
regularizer (LFQ/BSQ entropy) sees each scale's residual with its gradient to the encoder,
and the loss is averaged over scales.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from tokbench.quantize.base import Quantizer
from tokbench.quantize.factory import make_quantizer
from tokbench.quantize.output import QuantizerOutput
from tokbench.tokens import scale_schedule_shapes

VAR_SCALES_256 = (1, 2, 3, 4, 5, 6, 8, 10, 13, 16)


class Phi(nn.Conv2d):
    """``(1 - r) * h + r * conv3x3(h)``: the residual refinement of one scale."""

    def __init__(self, channels: int, ratio: float) -> None:
        super().__init__(channels, channels, kernel_size=3, padding=1)
        self.ratio = ratio

    def forward(self, h_BChw: torch.Tensor) -> torch.Tensor:
        return h_BChw.mul(1 - self.ratio) + super().forward(h_BChw).mul_(self.ratio)


PHI_TICKS = ("centered", "var")


class SharedPhis(nn.Module):
    """``num_convs`` Phi convolutions shared by all scales; scale i of n uses the nearest tick.

    ``ticks="centered"``: ticks at the centres of ``num_convs`` equal bins. ``"var"``: VAR's
    rule -- with 4 convs the ticks are ``linspace(1/12, 11/12, 4)`` (otherwise centred), and
    the nearest tick is found in float64 numpy, whose rounding decides VAR's exact ties
    (scale 3 of 7 sits half-way between two ticks).
    """

    def __init__(self, channels: int, num_convs: int = 4, ratio: float = 0.5, ticks: str = "centered") -> None:
        super().__init__()
        if ticks not in PHI_TICKS:
            raise ValueError(f"phi ticks must be one of {PHI_TICKS}, got {ticks!r}")
        self.phis = nn.ModuleList(Phi(channels, ratio) for _ in range(num_convs))
        n = num_convs
        self.tick_rule = ticks
        self.register_buffer("ticks", torch.linspace(1 / (2 * n), 1 - 1 / (2 * n), n), persistent=False)
        margin = 1 / 3 / n if n == 4 else 1 / 2 / n
        self.var_ticks = np.linspace(margin, 1 - margin, n)

    def for_scale(self, si: int, num_scales: int) -> Phi:
        position = si / max(1, num_scales - 1)
        if self.tick_rule == "var":
            return self.phis[int(np.argmin(np.abs(self.var_ticks - position)))]
        return self.phis[int((self.ticks - position).abs().argmin())]


class MultiScaleResidualQuantizer(Quantizer):
    """Residual quantization over a schedule of map sizes with one shared codebook."""

    def __init__(
        self,
        codebook_size: int,
        code_dim: int,
        scales: tuple[int, ...] = VAR_SCALES_256,
        *,
        beta: float = 0.25,
        num_phi_convs: int = 4,
        phi_ratio: float = 0.5,
        dead_code_steps: int = 0,
        phi_ticks: str = "centered",
        truncate_scales: bool = False,
        quantizer: str = "vq",
        quantizer_options: dict | None = None,
    ) -> None:
        super().__init__()
        scales = tuple(int(s) for s in scales)
        if not scales or any(b <= a for a, b in zip(scales, scales[1:])):
            raise ValueError(f"scales must be a non-empty increasing schedule, got {scales}")
        self.scales, self.beta, self.truncate_scales = scales, beta, truncate_scales
        self.codes = make_quantizer(quantizer, codebook_size, code_dim, beta=beta, dead_code_steps=dead_code_steps,
                                    options=quantizer_options)
        self.phis = SharedPhis(code_dim, num_phi_convs, phi_ratio, ticks=phi_ticks)

    def codebooks(self) -> list:
        return self.codes.codebooks()

    @property
    def codebook_size(self) -> int:
        return self.codes.codebook_size

    def schedule_for(self, grid: tuple[int, int]) -> tuple[int, ...]:
        """The schedule used on a final grid ``(h, w)``: ``scales`` itself, or with
        ``truncate_scales`` the scales below the grid's side followed by that side (VAR's
        release schedule at 64 px is 1,2,3,4)."""
        if not self.truncate_scales:
            return self.scales
        side = max(int(grid[0]), int(grid[1]))
        return tuple(s for s in self.scales if s < side) + (side,)

    def scale_shapes(self, h: int, w: int) -> list[tuple[int, int]]:
        """Map sizes for a final grid of ``h x w`` (the last scale is the full grid)."""
        return scale_schedule_shapes(self.schedule_for((h, w)), (h, w))

    def _codes_to_full_grid(self, idx_Bhw: torch.Tensor, si: int, hw: tuple[int, int],
                            num_scales: int | None = None) -> torch.Tensor:
        h_BChw = self.codes.lookup(idx_Bhw, channel_dim=1)
        if h_BChw.shape[-2:] != hw:
            h_BChw = F.interpolate(h_BChw, size=hw, mode="bicubic", align_corners=False)
        return self.phis.for_scale(si, num_scales or len(self.scales))(h_BChw)

    def forward(self, f_BChw: torch.Tensor) -> QuantizerOutput:
        """Quantize ``f`` at every scale; returns f_hat (straight-through) and per-scale ids."""
        B, C, H, W = f_BChw.shape
        f_fp32 = f_BChw.float()
        f_target = f_fp32.detach()
        f_rest = f_target.clone()
        f_hat = torch.zeros_like(f_fp32)
        ids, commitment, codebook = [], f_fp32.new_zeros(()), f_fp32.new_zeros(())
        regularizers: dict[str, torch.Tensor] = {}
        shapes = self.scale_shapes(H, W)
        for si, (ph, pw) in enumerate(shapes):
            z_BChw = f_rest if (ph, pw) == (H, W) else F.interpolate(f_rest, size=(ph, pw), mode="area")
            idx_N = self.codes.assign(self.codes.prepare(z_BChw.permute(0, 2, 3, 1).reshape(-1, C)))
            if self.training and self.codes.has_regularizers:
                for name, value in self.codes.regularizers(self._live(z_BChw, f_fp32, f_hat)).items():
                    regularizers[name] = regularizers.get(name, 0) + value / len(shapes)
            idx_Bhw = idx_N.view(B, ph, pw)
            h_BChw = self._codes_to_full_grid(idx_Bhw, si, (H, W), len(shapes))
            f_hat = f_hat + h_BChw
            f_rest = f_rest - h_BChw.detach()
            ids.append(idx_Bhw)
            # beta * commitment (moves the encoder) + codebook/phi term (moves the codes), as VAR.
            commitment = commitment + self.beta * F.mse_loss(f_hat.detach(), f_fp32)
            codebook = codebook + F.mse_loss(f_hat, f_target)
        f_hat_st = f_fp32 + (f_hat - f_fp32).detach()
        return QuantizerOutput(
            z_q=f_hat_st.to(f_BChw.dtype), ids=ids,
            losses={"codebook": codebook / len(shapes), "commitment": commitment / len(shapes), **regularizers},
            stats=self.codes.usage_stats(),
        )

    def _live(self, z_BChw: torch.Tensor, f_BChw: torch.Tensor, f_hat_BChw: torch.Tensor) -> torch.Tensor:
        """Prepared vectors ``(N, C)`` equal to the searched residual ``z`` but carrying the
        gradient of ``f - f_hat`` (``f_hat`` so far, held fixed) to the encoder."""
        r_BChw = f_BChw - f_hat_BChw.detach()
        if r_BChw.shape[-2:] != z_BChw.shape[-2:]:
            r_BChw = F.interpolate(r_BChw, size=tuple(z_BChw.shape[-2:]), mode="area")
        live_BChw = z_BChw + (r_BChw - r_BChw.detach())
        return self.codes.prepare(live_BChw.permute(0, 2, 3, 1).reshape(-1, z_BChw.shape[1]))

    @torch.no_grad()
    def encode(self, f_BChw: torch.Tensor) -> list[torch.Tensor]:
        """Per-scale id maps ``[(B, h_k, w_k), ...]``."""
        was_training = self.training
        self.eval()
        try:
            return self.forward(f_BChw).ids
        finally:
            self.train(was_training)

    def accumulate(self, f_hat_BChw: torch.Tensor | None, idx_Bhw: torch.Tensor, si: int, hw: tuple[int, int],
                   num_scales: int) -> torch.Tensor:
        """``f_hat`` after adding map ``si`` (``None`` before the first map)."""
        h_BChw = self._codes_to_full_grid(idx_Bhw, si, hw, num_scales)
        return h_BChw if f_hat_BChw is None else f_hat_BChw + h_BChw

    @torch.no_grad()
    def next_scale_inputs(self, ids: list[torch.Tensor], hw: tuple[int, int]) -> list[torch.Tensor]:
        """What a next-scale generator reads to predict map ``k`` (``k = 1 .. K-1``): ``f_hat``
        accumulated from maps ``< k``, area-downsampled to map ``k``'s size (VAR's teacher forcing)."""
        inputs, f_hat = [], None
        for si in range(len(ids) - 1):
            f_hat = self.accumulate(f_hat, ids[si], si, hw, len(ids))
            inputs.append(F.interpolate(f_hat, size=tuple(ids[si + 1].shape[-2:]), mode="area"))
        return inputs

    def decode(self, ids: list[torch.Tensor], hw: tuple[int, int] | None = None,
               num_scales: int | None = None) -> torch.Tensor:
        """f_hat ``(B, C, H, W)`` from the first ``num_scales`` maps (all by default)."""
        if not ids:
            raise ValueError("decode needs at least one scale of ids")
        k = len(ids) if num_scales is None else num_scales
        if not 1 <= k <= len(ids):
            raise ValueError(f"num_scales must be in 1..{len(ids)}, got {k}")
        hw = tuple(ids[-1].shape[-2:]) if hw is None else hw
        f_hat = 0
        for si in range(k):
            f_hat = f_hat + self._codes_to_full_grid(ids[si], si, hw, len(ids))
        return f_hat
