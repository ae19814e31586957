"""UniTok's reconstruction path (FoundationVision/UniTok ``models/unitok.py``): a ViTamin encoder
(convolutional stem and two MBConv stages, a strided conv to the 16x-downsampled grid, then ViT
blocks), an attention projection to ``vocab_width`` channels, ``num_codebooks`` independent
l2-normalised codebooks each quantizing its own ``vocab_width / num_codebooks`` channel slice
(cosine search), a projection back, and a ViT + inverted-MBConv decoder to pixels.

The CLIP parts of upstream's model (text tower, ``fc_norm``, ``projection``, ``logit_scale``) are
not reconstruction and are not built. Module names follow upstream's so that the state dict maps
one to one (timm's ``VisionTransformer`` layout for the ViT parts).

Ids layout: upstream's ``img_to_idx`` gives ``(B, num_codebooks, h*w)``; tokbench's ids are the
``sequence`` of ``h*w*num_codebooks`` tokens over a vocabulary of ``vocab_size / num_codebooks``,
position-major with the codebook index innermost (``ids[b, p*M + m] = upstream[b, m, p]``, ``p`` in
raster order), the order in which upstream's Liquid AR head emits a position's sub-tokens. Every
sub-id is kept, and bits per image (``h*w*M*log2(vocab/M)``) are exact.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tokbench.nn.family import from_model_range, to_model_range
from tokbench.quantize import VectorQuantizer
from tokbench.tokenizer import Tokenizer
from tokbench.tokens import TokenLayout, Tokens

STRIDE = 16  # stem, two MBConv stages and the strided conv each halve the side


class LayerNorm2d(nn.LayerNorm):
    """LayerNorm over channels of a ``(B, C, H, W)`` map, optionally followed by exact GELU."""

    def __init__(self, channels: int, act: bool = False, eps: float = 1e-6) -> None:
        super().__init__(channels, eps=eps)
        self.act = nn.GELU() if act else nn.Identity()

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        return self.act(super().forward(x_BCHW.permute(0, 2, 3, 1)).permute(0, 3, 1, 2))


class Upsample2d(nn.Module):
    """Nearest 2x then a 3x3 conv."""

    def __init__(self, ch_in: int, ch_out: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(ch_in, ch_out, 3, padding=1)

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x_BCHW, scale_factor=2, mode="nearest"))


class Downsample2d(nn.Module):
    """3x3 average pool, stride 2 (padding not counted), then a 1x1 conv when the width changes."""

    def __init__(self, ch_in: int, ch_out: int) -> None:
        super().__init__()
        self.pool = nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False)
        self.expand = nn.Conv2d(ch_in, ch_out, 1) if ch_in != ch_out else nn.Identity()

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        return self.expand(self.pool(x_BCHW))


class MbConvBlock(nn.Module):
    """Pre-norm inverted bottleneck (1x1 up, depthwise 3x3, 1x1 down) with a shortcut; ``resample``
    is ``"down"`` (stride-2 depthwise conv, pooled shortcut), ``"up"`` (2x upsampling before the
    depthwise conv, upsampled shortcut) or ``None``."""

    def __init__(self, ch_in: int, ch_out: int, resample: str | None = None, expand: int = 4) -> None:
        super().__init__()
        mid = ch_out * expand
        if resample == "down":
            self.shortcut: nn.Module = Downsample2d(ch_in, ch_out)
        elif resample == "up":
            self.shortcut = Upsample2d(ch_in, ch_out)
        else:
            self.shortcut = nn.Conv2d(ch_in, ch_out, 1) if ch_in != ch_out else nn.Identity()
        self.pre_norm = LayerNorm2d(ch_in)
        self.conv1_1x1 = nn.Conv2d(ch_in, mid, 1)
        self.up = Upsample2d(mid, mid) if resample == "up" else nn.Identity()
        stride = 2 if resample == "down" else 1
        self.conv2_kxk = nn.Conv2d(mid, mid, 3, stride=stride, padding=1, groups=mid)
        self.conv3_1x1 = nn.Conv2d(mid, ch_out, 1)

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        h = self.up(F.gelu(self.conv1_1x1(self.pre_norm(x_BCHW))))
        return self.conv3_1x1(F.gelu(self.conv2_kxk(h))) + self.shortcut(x_BCHW)


class Stem(nn.Module):
    """Encoder: 3x3 conv stride 2, LayerNorm + GELU, 3x3 conv. Decoder (``up``): the first conv
    is an `Upsample2d` keeping the width."""

    def __init__(self, ch_in: int, ch_out: int, up: bool = False) -> None:
        super().__init__()
        self.conv1 = Upsample2d(ch_in, ch_in) if up else nn.Conv2d(ch_in, ch_out, 3, stride=2, padding=1)
        self.norm1 = LayerNorm2d(ch_in if up else ch_out, act=True)
        self.conv2 = nn.Conv2d(ch_in if up else ch_out, ch_out, 3, padding=1)

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        return self.conv2(self.norm1(self.conv1(x_BCHW)))


class StridedConv(nn.Module):
    def __init__(self, ch_in: int, ch_out: int) -> None:
        super().__init__()
        self.norm = LayerNorm2d(ch_in)
        self.proj = nn.Conv2d(ch_in, ch_out, 3, stride=2, padding=1)

    def forward(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        return self.proj(self.norm(x_BCHW))


class ConvStages(nn.Module):
    """The encoder's convolutional part: image -> ``(B, width, H/16, W/16)``."""

    def __init__(self, stem: int, dims: tuple[int, int], depths: tuple[int, int], width: int) -> None:
        super().__init__()
        self.stem = Stem(3, stem)
        ins = (stem, dims[0])
        self.stages = nn.ModuleList(
            nn.Sequential(*(MbConvBlock(ins[s] if d == 0 else dims[s], dims[s], "down" if d == 0 else None)
                            for d in range(depths[s]))) for s in range(2))
        self.pool = StridedConv(dims[1], width)

    def forward(self, x_B3HW: torch.Tensor) -> torch.Tensor:
        x = self.stem(x_B3HW)
        for stage in self.stages:
            x = stage(x)
        return self.pool(x)


class PatchEmbed(nn.Module):
    def __init__(self, backbone: ConvStages) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, x_B3HW: torch.Tensor) -> torch.Tensor:
        return self.backbone(x_B3HW).flatten(2).transpose(1, 2)


class GeGluMlp(nn.Module):
    """LayerNorm, then ``gelu_tanh(w0 x) * w1 x``, then ``w2``."""

    def __init__(self, width: int, hidden: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.w0, self.w1, self.w2 = nn.Linear(width, hidden), nn.Linear(width, hidden), nn.Linear(hidden, width)

    def forward(self, x_BLC: torch.Tensor) -> torch.Tensor:
        x_BLC = self.norm(x_BLC)
        return self.w2(F.gelu(self.w0(x_BLC), approximate="tanh") * self.w1(x_BLC))


class Attention(nn.Module):
    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv, self.proj = nn.Linear(width, 3 * width), nn.Linear(width, width)

    def forward(self, x_BLC: torch.Tensor) -> torch.Tensor:
        B, L, C = x_BLC.shape
        q, k, v = self.qkv(x_BLC).view(B, L, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(B, L, C))


class Block(nn.Module):
    """timm's pre-norm ViT block with ViTamin's GeGLU MLP (ratio 2, its own inner LayerNorm)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(width, eps=1e-6), Attention(width, heads)
        self.norm2, self.mlp = nn.LayerNorm(width, eps=1e-6), GeGluMlp(width, 2 * width)

    def forward(self, x_BLC: torch.Tensor) -> torch.Tensor:
        x_BLC = x_BLC + self.attn(self.norm1(x_BLC))
        return x_BLC + self.mlp(self.norm2(x_BLC))


class Encoder(nn.Module):
    """ViTamin as upstream builds it: no class or register tokens, a (zero, frozen) 1x1 position
    embedding broadcast over the grid, a final LayerNorm; ``(B, h*w, width)`` tokens out."""

    def __init__(self, stem: int, dims: tuple[int, int], depths: tuple[int, int], width: int, depth: int,
                 heads: int) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed(ConvStages(stem, dims, depths, width))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1, width), requires_grad=False)
        self.blocks = nn.Sequential(*(Block(width, heads) for _ in range(depth)))
        self.norm = nn.LayerNorm(width, eps=1e-6)

    def forward(self, x_B3HW: torch.Tensor) -> torch.Tensor:
        return self.norm(self.blocks(self.patch_embed(x_B3HW) + self.pos_embed))


class PlainAttention(nn.Module):
    """Attention between widths ``d_in`` and ``d_out`` (one a multiple of the other) over
    ``heads`` heads of ``max(d_in, d_out) / heads`` channels; no key bias. Narrowing averages the
    heads (then pools to ``d_out`` when a head is wider); widening concatenates them."""

    def __init__(self, d_in: int, d_out: int, heads: int) -> None:
        super().__init__()
        wide = max(d_in, d_out)
        self.d_in, self.d_out, self.heads, self.head_dim = d_in, d_out, heads, wide // heads
        self.qkv = nn.Linear(d_in, 3 * wide, bias=False)
        self.q_bias, self.v_bias = nn.Parameter(torch.zeros(wide)), nn.Parameter(torch.zeros(wide))
        self.proj = nn.Linear(d_out, d_out)

    def forward(self, x_BLC: torch.Tensor) -> torch.Tensor:
        B, L, _ = x_BLC.shape
        bias = torch.cat((self.q_bias, torch.zeros_like(self.q_bias), self.v_bias))
        qkv = F.linear(x_BLC, self.qkv.weight, bias).view(B, L, 3, self.heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        x_BhLd = F.scaled_dot_product_attention(q, k, v)
        if self.d_in > self.d_out:
            x_BLd = x_BhLd.mean(dim=1)
            x_BLC = F.adaptive_avg_pool1d(x_BLd, self.d_out) if self.head_dim != self.d_out else x_BLd
        else:
            x_BLC = x_BhLd.transpose(1, 2).reshape(B, L, -1)
        return self.proj(x_BLC)


class AttnProjection(nn.Module):
    """``proj(norm3 x) + attn(norm1 x)``, then a residual GeGLU MLP (ratio 2) at ``d_out``."""

    def __init__(self, d_in: int, d_out: int, heads: int) -> None:
        super().__init__()
        self.norm1, self.norm3 = nn.LayerNorm(d_in), nn.LayerNorm(d_in)
        self.attn, self.proj = PlainAttention(d_in, d_out, heads), nn.Linear(d_in, d_out)
        self.norm2, self.mlp = nn.LayerNorm(d_out), GeGluMlp(d_out, 2 * d_out)

    def forward(self, x_BLC: torch.Tensor) -> torch.Tensor:
        x_BLC = self.proj(self.norm3(x_BLC)) + self.attn(self.norm1(x_BLC))
        return x_BLC + self.mlp(self.norm2(x_BLC))


class MultiCodebookQuantizer(nn.Module):
    """``num_codebooks`` cosine-search codebooks, codebook ``m`` quantizing channels
    ``[m*d, (m+1)*d)`` of the ``num_codebooks*d`` input; ids ``(B, L, num_codebooks)``."""

    def __init__(self, num_codebooks: int, codebook_size: int, code_dim: int) -> None:
        super().__init__()
        self.codebook_size, self.code_dim = codebook_size, code_dim
        self.codebooks = nn.ModuleList(
            VectorQuantizer(codebook_size, code_dim, l2_normalize=True, search="inner_product")
            for _ in range(num_codebooks))

    def ids(self, z_BLC: torch.Tensor) -> torch.Tensor:
        parts = z_BLC.float().split(self.code_dim, dim=-1)
        return torch.stack([q.search(q.prepare(p.reshape(-1, self.code_dim))).view(p.shape[:-1])
                            for q, p in zip(self.codebooks, parts)], dim=-1)

    def lookup(self, ids_BLM: torch.Tensor) -> torch.Tensor:
        return torch.cat([q.lookup(ids_BLM[..., m], channel_dim=-1) for m, q in enumerate(self.codebooks)], dim=-1)


class Decoder(nn.Module):
    """ViT blocks and LayerNorm on the tokens, then to pixels: `Upsample2d` to ``dims[0]``,
    inverted-MBConv stages upsampling to ``dims[0]`` and ``dims[1]``, and the upsampling stem."""

    def __init__(self, width: int, depth: int, heads: int, dims: tuple[int, int], depths: tuple[int, int]) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*(Block(width, heads) for _ in range(depth)))
        self.norm = nn.LayerNorm(width, eps=1e-6)
        self.up_conv1 = Upsample2d(width, dims[0])
        self.up_conv2 = nn.Sequential(*(MbConvBlock(dims[0], dims[0], "up" if d == 0 else None)
                                        for d in range(depths[0])))
        self.up_conv3 = nn.Sequential(*(MbConvBlock(dims[0] if d == 0 else dims[1], dims[1], "up" if d == 0 else None)
                                        for d in range(depths[1])))
        self.up_conv4 = Stem(dims[1], 3, up=True)

    def forward(self, x_BLC: torch.Tensor, h: int, w: int) -> torch.Tensor:
        x_BCHW = self.norm(self.blocks(x_BLC)).transpose(1, 2).reshape(x_BLC.shape[0], -1, h, w)
        return self.up_conv4(self.up_conv3(self.up_conv2(self.up_conv1(x_BCHW))))


class UniTokTokenizer(Tokenizer):
    """UniTok: square images (side a multiple of 16) -> ``(side/16)^2 * num_codebooks`` ids.

    ``stem``/``dims``/``depths`` size the encoder's conv part, ``width``/``depth``/``heads`` its ViT
    (the decoder's ViT is the same size), ``dec_dims``/``dec_depths`` the decoder's conv part.
    """

    family, kind = "unitok", "discrete"

    def __init__(self, stem: int = 160, dims: tuple[int, int] = (160, 320), depths: tuple[int, int] = (2, 4),
                 width: int = 1024, depth: int = 31, heads: int = 16, dec_dims: tuple[int, int] = (320, 160),
                 dec_depths: tuple[int, int] = (4, 2), vocab_size: int = 32768, vocab_width: int = 64,
                 num_codebooks: int = 8) -> None:
        super().__init__()
        if vocab_size % num_codebooks or vocab_width % num_codebooks:
            raise ValueError(f"vocab_size {vocab_size} and vocab_width {vocab_width} must be multiples of "
                             f"num_codebooks {num_codebooks}")
        if width % vocab_width and vocab_width % width:
            raise ValueError(f"width {width} and vocab_width {vocab_width}: one must be a multiple of the other")
        self.config: dict[str, Any] = dict(
            stem=stem, dims=[int(d) for d in dims], depths=[int(d) for d in depths], width=width, depth=depth,
            heads=heads, dec_dims=[int(d) for d in dec_dims], dec_depths=[int(d) for d in dec_depths],
            vocab_size=vocab_size, vocab_width=vocab_width, num_codebooks=num_codebooks)
        self.stride, self.num_codebooks = STRIDE, num_codebooks
        proj_heads = max(width // vocab_width, 1)  # upstream: embed_dim // vocab_width
        self.encoder = Encoder(stem, tuple(dims), tuple(depths), width, depth, heads)
        self.quant_proj = AttnProjection(width, vocab_width, proj_heads)
        self.quantizer = MultiCodebookQuantizer(num_codebooks, vocab_size // num_codebooks,
                                                vocab_width // num_codebooks)
        self.post_quant_proj = AttnProjection(vocab_width, width, proj_heads)
        self.decoder = Decoder(width, depth, heads, tuple(dec_dims), tuple(dec_depths))

    def layout_for(self, height: int, width: int) -> TokenLayout:
        self._check_square(height, width)
        tokens = (height // self.stride) * (width // self.stride) * self.num_codebooks
        return TokenLayout("sequence", (tokens,), vocab_size=self.quantizer.codebook_size)

    def _check_square(self, h: int, w: int) -> None:
        if h != w:
            raise ValueError(f"UniTok's decoder folds its tokens back into a square grid; got {h}x{w} images: "
                             "crop or pad them to a square first")

    def upstream_ids(self, x_B3HW: torch.Tensor) -> torch.Tensor:
        """Upstream's own ``img_to_idx`` layout, ``(B, num_codebooks, h*w)``, of images in ``[0, 1]``."""
        z_BLC = self.quant_proj(self.encoder(to_model_range(x_B3HW)).float())
        return self.quantizer.ids(z_BLC).transpose(1, 2)

    def encode_padded(self, x_B3HW: torch.Tensor) -> Tokens:
        layout = self.layout_for(*x_B3HW.shape[-2:])
        ids_BML = self.upstream_ids(x_B3HW)
        return Tokens(layout, ids=ids_BML.transpose(1, 2).reshape(ids_BML.shape[0], -1))

    def decode_padded(self, tokens: Tokens) -> torch.Tensor:
        B, K = tokens.ids.shape
        side = math.isqrt(K // self.num_codebooks)
        if K % self.num_codebooks or side * side * self.num_codebooks != K:
            raise ValueError(f"UniTok decodes {self.num_codebooks} ids per position of a square grid; "
                             f"{K} ids are not that")
        f_BLC = self.post_quant_proj(self.quantizer.lookup(tokens.ids.view(B, side * side, self.num_codebooks)))
        return from_model_range(self.decoder(f_BLC, side, side).clamp(-1, 1))
