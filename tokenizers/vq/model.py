"""2D VQ tokenizer (VQGAN / LlamaGen): conv encoder -> low-dim l2-normalized codes -> conv decoder."""
from __future__ import annotations

import torch
from torch import nn

from tokbench.nn.conv import ConvDecoder, ConvEncoder, stride_of
from tokbench.nn.family import from_model_range, to_model_range
from tokbench.quantize import make_quantizer
from tokbench.tokenizer import AutoencoderOutput, Tokenizer
from tokbench.tokens import TokenLayout, Tokens


class VQTokenizer(Tokenizer):
    """Images -> an ``h x w`` grid of code ids (``h = H / stride``).

    ``l2_normalize``: codes and features compared on the unit sphere (LlamaGen) or as
    they are (taming's VQGAN). ``attn_levels``: levels (0 = full resolution) with
    attention after every ResNet block; None means the lowest level if ``lowest_level_attn``.
    ``quantizer``: ``"vq"`` (nearest codeword; ``l2_normalize``, ``use_ema``, ``dead_code_steps``
    apply to it) or the search-free ``"lfq"``, ``"bsq"``, ``"fsq"`` with ``quantizer_options``
    (see `tokbench.quantize.make_quantizer`). ``mid_attn``: attention between the middle
    ResNet blocks (aMUSEd's VQ-GAN has none). ``unit_range``: the networks take and give
    images in [0, 1] (aMUSEd's VQ-GAN) instead of [-1, 1].
    """

    family, kind = "vq", "discrete"

    def __init__(self, ch: int = 128, ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4), num_res_blocks: int = 2,
                 z_channels: int = 256, codebook_size: int = 16384, code_dim: int = 8, l2_normalize: bool = True,
                 beta: float = 0.25, use_ema: bool = False, dead_code_steps: int = 0,
                 lowest_level_attn: bool = True, attn_levels: list[int] | None = None, quantizer: str = "vq",
                 quantizer_options: dict | None = None, mid_attn: bool = True, unit_range: bool = False) -> None:
        super().__init__()
        ch_mult = tuple(ch_mult)
        attn_levels = None if attn_levels is None else [int(a) for a in attn_levels]
        self.config = dict(ch=ch, ch_mult=list(ch_mult), num_res_blocks=num_res_blocks, z_channels=z_channels,
                           codebook_size=codebook_size, code_dim=code_dim, l2_normalize=l2_normalize, beta=beta,
                           use_ema=use_ema, dead_code_steps=dead_code_steps, lowest_level_attn=lowest_level_attn,
                           attn_levels=attn_levels, quantizer=quantizer, quantizer_options=dict(quantizer_options or {}),
                           mid_attn=mid_attn, unit_range=unit_range)
        self.unit_range = unit_range
        self.stride = stride_of(ch_mult)
        self.encoder = ConvEncoder(ch, ch_mult, num_res_blocks, z_channels, lowest_level_attn=lowest_level_attn,
                                   attn_levels=attn_levels, mid_attn=mid_attn)
        self.quant_conv = nn.Conv2d(z_channels, code_dim, 1)
        self.quantize = make_quantizer(quantizer, codebook_size, code_dim, beta=beta, l2_normalize=l2_normalize,
                                       use_ema=use_ema, dead_code_steps=dead_code_steps, options=quantizer_options)
        self.post_quant_conv = nn.Conv2d(code_dim, z_channels, 1)
        self.decoder = ConvDecoder(ch, ch_mult, num_res_blocks, z_channels, lowest_level_attn=lowest_level_attn,
                                   attn_levels=attn_levels, mid_attn=mid_attn)

    def layout_for(self, height: int, width: int) -> TokenLayout:
        return TokenLayout("grid", (height // self.stride, width // self.stride), vocab_size=self.quantize.codebook_size)

    def features(self, x_B3HW: torch.Tensor) -> torch.Tensor:
        """Pre-quantization features ``(B, code_dim, h, w)``."""
        return self.quant_conv(self.encoder(x_B3HW if self.unit_range else to_model_range(x_B3HW)))

    def decode_codes(self, zq_BDhw: torch.Tensor) -> torch.Tensor:
        y_B3HW = self.decoder(self.post_quant_conv(zq_BDhw))
        return y_B3HW if self.unit_range else from_model_range(y_B3HW)

    def encode_padded(self, x_B3HW: torch.Tensor) -> Tokens:
        idx_Bhw = self.quantize(self.features(x_B3HW)).ids
        return Tokens(self.layout_for(*x_B3HW.shape[-2:]), ids=idx_Bhw)

    def decode_padded(self, tokens: Tokens) -> torch.Tensor:
        return self.decode_codes(self.quantize.lookup(tokens.ids, channel_dim=1))

    def autoencode(self, x_B3HW: torch.Tensor) -> AutoencoderOutput:
        q = self.quantize(self.features(x_B3HW))
        return AutoencoderOutput(self.decode_codes(q.z_q), q.losses, q.stats)

    def last_layer(self) -> torch.Tensor:
        return self.decoder.conv_out.weight
