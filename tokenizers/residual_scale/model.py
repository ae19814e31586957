"""Multi-scale residual tokenizer (VAR's VQVAE): next-scale token maps from one shared codebook."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tokbench.nn.conv import ConvDecoder, ConvEncoder, stride_of
from tokbench.nn.family import from_model_range, to_model_range
from tokbench.quantize import VAR_SCALES_256, MultiScaleResidualQuantizer
from tokbench.tokenizer import AutoencoderOutput, Tokenizer
from tokbench.tokens import TokenLayout, Tokens


class ResidualScaleTokenizer(Tokenizer):
    """Images -> maps of ``1x1, 2x2, ..., 16x16`` ids (at 256 px), flattened scale by scale.

    The schedule's last scale is the full token grid; at other image sizes the schedule is
    mapped onto that grid (`TokenLayout.scale_shapes`). `decode_scales(tokens, k)` decodes
    from the first ``k`` maps only: the coarse-to-fine order a next-scale AR model generates in.

    VAR's own convention is available as options: ``phi_ticks="var"`` (its four φ ticks
    at 1/12 ... 11/12, chosen in float64) and ``truncate_scales`` (the schedule cut at the
    final map size instead of stretched onto it, as VAR runs its release schedule on
    smaller images). ``quantizer``: ``"vq"`` (VAR's codebook) or the search-free ``"lfq"``,
    ``"bsq"``, ``"fsq"`` for the per-scale codes, with ``quantizer_options`` (see
    `tokbench.quantize.make_quantizer`).
    """

    family, kind = "residual_scale", "discrete"

    def __init__(self, ch: int = 160, ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4), num_res_blocks: int = 2,
                 z_channels: int = 32, codebook_size: int = 4096, code_dim: int = 32,
                 scales: tuple[int, ...] = VAR_SCALES_256, beta: float = 0.25, num_phi_convs: int = 4,
                 phi_ratio: float = 0.5, dead_code_steps: int = 0, phi_ticks: str = "centered",
                 truncate_scales: bool = False, quantizer: str = "vq", quantizer_options: dict | None = None) -> None:
        super().__init__()
        ch_mult, scales = tuple(ch_mult), tuple(scales)
        self.config = dict(ch=ch, ch_mult=list(ch_mult), num_res_blocks=num_res_blocks, z_channels=z_channels,
                           codebook_size=codebook_size, code_dim=code_dim, scales=list(scales), beta=beta,
                           num_phi_convs=num_phi_convs, phi_ratio=phi_ratio, dead_code_steps=dead_code_steps,
                           phi_ticks=phi_ticks, truncate_scales=truncate_scales, quantizer=quantizer,
                           quantizer_options=dict(quantizer_options or {}))
        self.stride = stride_of(ch_mult)
        self.encoder = ConvEncoder(ch, ch_mult, num_res_blocks, z_channels, lowest_level_attn=True)
        self.quant_conv = nn.Conv2d(z_channels, code_dim, 3, padding=1)
        self.quantize = MultiScaleResidualQuantizer(codebook_size, code_dim, scales, beta=beta,
                                                    num_phi_convs=num_phi_convs, phi_ratio=phi_ratio,
                                                    dead_code_steps=dead_code_steps, phi_ticks=phi_ticks,
                                                    truncate_scales=truncate_scales, quantizer=quantizer,
                                                    quantizer_options=quantizer_options)
        self.post_quant_conv = nn.Conv2d(code_dim, z_channels, 3, padding=1)
        self.decoder = ConvDecoder(ch, ch_mult, num_res_blocks, z_channels, lowest_level_attn=True)

    def layout_for(self, height: int, width: int) -> TokenLayout:
        grid = (height // self.stride, width // self.stride)
        return TokenLayout("scales", grid, vocab_size=self.quantize.codebook_size, scales=self.quantize.schedule_for(grid))

    def features(self, x_B3HW: torch.Tensor) -> torch.Tensor:
        return self.quant_conv(self.encoder(to_model_range(x_B3HW)))

    def decode_features(self, f_hat_BChw: torch.Tensor) -> torch.Tensor:
        return from_model_range(self.decoder(self.post_quant_conv(f_hat_BChw)))

    def encode_padded(self, x_B3HW: torch.Tensor) -> Tokens:
        ids = self.quantize.encode(self.features(x_B3HW))
        idx_BL = torch.cat([m.flatten(1) for m in ids], dim=1)
        return Tokens(self.layout_for(*x_B3HW.shape[-2:]), ids=idx_BL)

    def decode_padded(self, tokens: Tokens) -> torch.Tensor:
        maps = tokens.ids_per_scale()
        f_hat = self.quantize.decode(maps, hw=tokens.layout.grid, num_scales=tokens.extra.get("num_scales"))
        return self.decode_features(f_hat)

    def decode_scales(self, tokens: Tokens, num_scales: int) -> torch.Tensor:
        """Decode from the first ``num_scales`` maps only (all later maps left out)."""
        partial = Tokens(tokens.layout, tokens.image_size, ids=tokens.ids, extra={**tokens.extra, "num_scales": num_scales})
        return self.decode(partial)

    def prefix_lengths(self, layout: TokenLayout) -> tuple[int, ...]:
        """The token count after each scale (1, 1+4, 1+4+9, ... at VAR's schedule): a prefix ends
        at a whole map."""
        counts, total = [], 0
        for h, w in layout.scale_shapes():
            total += h * w
            counts.append(total)
        return tuple(counts)

    def decode_prefix(self, tokens: Tokens, num_tokens: int) -> torch.Tensor:
        """Decode from the first ``num_tokens`` ids, which must end at a whole scale (`prefix_lengths`)."""
        lengths = self.prefix_lengths(tokens.layout)
        if num_tokens not in lengths:
            raise ValueError(f"a residual-scale prefix ends at a whole scale: num_tokens must be one of "
                             f"{', '.join(map(str, lengths))}, got {num_tokens}")
        return self.decode_scales(tokens, lengths.index(num_tokens) + 1)

    # The tokenizer <-> next-scale generator contract (`tokbench.generation.next_scale`):
    # the generator reads the codes' feature space, not ids, to predict the next map.

    @property
    def code_dim(self) -> int:
        """Channels of the accumulated feature map ``f_hat`` a next-scale generator reads."""
        return self.quantize.codes.code_dim

    @torch.no_grad()
    def next_scale_inputs(self, ids_BL: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
        """Teacher-forcing inputs ``(B, L - n_0, C)``: for every map after the first, ``f_hat``
        accumulated from the maps before it, area-downsampled to its size, in raster order."""
        maps = Tokens(layout, ids=ids_BL).ids_per_scale()
        inputs = self.quantize.next_scale_inputs(maps, layout.grid)
        return torch.cat([f_BChw.flatten(2).transpose(1, 2) for f_BChw in inputs], dim=1)

    @torch.no_grad()
    def next_scale_step(self, f_hat_BChw: torch.Tensor | None, ids_Bhw: torch.Tensor, si: int,
                        layout: TokenLayout) -> tuple[torch.Tensor, torch.Tensor | None]:
        """While sampling: add map ``si`` to ``f_hat``; returns it and the input ``(B, n_{si+1}, C)``
        of the next map (``None`` after the last)."""
        shapes = layout.scale_shapes()
        f_hat_BChw = self.quantize.accumulate(f_hat_BChw, ids_Bhw, si, layout.grid, len(shapes))
        if si + 1 == len(shapes):
            return f_hat_BChw, None
        next_BChw = F.interpolate(f_hat_BChw, size=shapes[si + 1], mode="area")
        return f_hat_BChw, next_BChw.flatten(2).transpose(1, 2)

    def autoencode(self, x_B3HW: torch.Tensor) -> AutoencoderOutput:
        q = self.quantize(self.features(x_B3HW))
        return AutoencoderOutput(self.decode_features(q.z_q), q.losses, q.stats)

    def last_layer(self) -> torch.Tensor:
        return self.decoder.conv_out.weight
