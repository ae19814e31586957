"""Upstream names of the VQGAN/LDM-style conv autoencoder, mapped onto `tokbench.nn.conv`.

One architecture, four namings:

* ``ldm``      -- taming-transformers, latent-diffusion/SD (``down.{i}.block.{j}``,
                  ``mid.block_1``, attention as 1x1 convs ``q, k, v, proj_out``), the decoder's
                  ``up.{i}`` indexed by resolution level (``up.{n-1}`` runs first);
* ``var``      -- VAR: the ``ldm`` naming with one fused ``qkv`` conv;
* ``llamagen`` -- ``conv_blocks.{i}.res.{j}`` / ``.attn.{j}``, ``mid.{0,1,2}``, the decoder's
                  blocks numbered in execution order;
* ``diffusers``-- ``down_blocks.{i}.resnets.{j}``, ``mid_block.attentions.0.to_q`` (Linear),
                  ``conv_norm_out``, up blocks in execution order.

tokbench numbers the blocks of a level sequentially (``down.{n}``/``up.{n}``), so the
map is built from the same plan the conv family builds its modules from.
"""
from __future__ import annotations

from tokbench.nn.conv import attention_levels, resampled_level_count
from tokbench.tokenizers.public.keymap import KeyMap, as_conv1x1, concat_rows

STYLES = ("ldm", "var", "llamagen", "diffusers")


def _attn_map(km: KeyMap, dst: str, src: str, style: str) -> None:
    if style == "diffusers":
        km.params(f"{dst}.norm", f"{src}.group_norm")
        qkv, proj = [f"{src}.to_q", f"{src}.to_k", f"{src}.to_v"], f"{src}.to_out.0"
    elif style == "var":
        km.params(f"{dst}.norm", f"{src}.norm")
        km.params(f"{dst}.qkv", f"{src}.qkv")
        km.params(f"{dst}.proj", f"{src}.proj_out")
        return
    else:
        km.params(f"{dst}.norm", f"{src}.norm")
        qkv, proj = [f"{src}.q", f"{src}.k", f"{src}.v"], f"{src}.proj_out"
    km.concat(f"{dst}.qkv.weight", [f"{s}.weight" for s in qkv], lambda *ts: concat_rows(*map(as_conv1x1, ts)))
    km.concat(f"{dst}.qkv.bias", [f"{s}.bias" for s in qkv], concat_rows)
    km.rename(f"{dst}.proj.weight", f"{proj}.weight", as_conv1x1)
    km.rename(f"{dst}.proj.bias", f"{proj}.bias")


def _res_map(km: KeyMap, dst: str, src: str, style: str, has_skip: bool) -> None:
    for n in ("norm1", "conv1", "norm2", "conv2"):
        km.params(f"{dst}.{n}", f"{src}.{n}")
    if has_skip:
        km.params(f"{dst}.skip", f"{src}.{'conv_shortcut' if style == 'diffusers' else 'nin_shortcut'}")


def _level_name(style: str, part: str, level: int, num_levels: int) -> str:
    """Upstream prefix of one resolution level (``part``: ``encoder``/``decoder``)."""
    exec_index = level if part == "encoder" else num_levels - 1 - level
    if style == "llamagen":
        return f"{part}.conv_blocks.{exec_index}"
    if style == "diffusers":
        return f"{part}.{'down_blocks' if part == 'encoder' else 'up_blocks'}.{exec_index}"
    return f"{part}.{'down' if part == 'encoder' else 'up'}.{level}"


def _block_name(style: str, level_prefix: str, kind: str, j: int) -> str:
    if style == "llamagen":
        return f"{level_prefix}.{'res' if kind == 'res' else 'attn'}.{j}"
    if style == "diffusers":
        return f"{level_prefix}.{'resnets' if kind == 'res' else 'attentions'}.{j}"
    return f"{level_prefix}.{'block' if kind == 'res' else 'attn'}.{j}"


def _resample_name(style: str, level_prefix: str, part: str) -> str:
    if style == "llamagen":
        return f"{level_prefix}.{'downsample' if part == 'encoder' else 'upsample'}"
    if style == "diffusers":
        return f"{level_prefix}.{'downsamplers' if part == 'encoder' else 'upsamplers'}.0"
    return f"{level_prefix}.{'downsample' if part == 'encoder' else 'upsample'}"


def _mid_names(style: str, part: str) -> tuple[str, str, str]:
    if style == "llamagen":
        return f"{part}.mid.0", f"{part}.mid.1", f"{part}.mid.2"
    if style == "diffusers":
        return f"{part}.mid_block.resnets.0", f"{part}.mid_block.attentions.0", f"{part}.mid_block.resnets.1"
    return f"{part}.mid.block_1", f"{part}.mid.attn_1", f"{part}.mid.block_2"


def add_autoencoder_part(km: KeyMap, style: str, part: str, ch: int, ch_mult: tuple[int, ...],
                         num_res_blocks: int, attn_levels: set[int], mid_attn: bool = True,
                         dst_prefix: str | None = None, resampled_levels: int | None = None) -> None:
    """Entries for ``encoder.*`` or ``decoder.*`` (``part``) of a `ConvEncoder`/`ConvDecoder`
    (``resampled_levels`` as theirs)."""
    if style not in STYLES:
        raise ValueError(f"unknown naming style {style!r}; one of {STYLES}")
    dst_root = dst_prefix or part
    n = len(ch_mult)
    resampled = resampled_level_count(n, resampled_levels)
    km.params(f"{dst_root}.conv_in", f"{part}.conv_in")
    stack = "down" if part == "encoder" else "up"
    seq, c = 0, ch if part == "encoder" else ch * ch_mult[-1]
    levels = range(n) if part == "encoder" else reversed(range(n))
    blocks_per_level = num_res_blocks if part == "encoder" else num_res_blocks + 1
    mids = _mid_names(style, part)
    if part == "decoder":
        _add_mid(km, style, f"{dst_root}.mid", mids, mid_attn)
    for level in levels:
        lp = _level_name(style, part, level, n)
        for j in range(blocks_per_level):
            out = ch * ch_mult[level]
            _res_map(km, f"{dst_root}.{stack}.{seq}", _block_name(style, lp, "res", j), style, c != out)
            c, seq = out, seq + 1
            if level in attn_levels:
                _attn_map(km, f"{dst_root}.{stack}.{seq}", _block_name(style, lp, "attn", j), style)
                seq += 1
        if (level < resampled) if part == "encoder" else (level >= n - resampled):
            km.params(f"{dst_root}.{stack}.{seq}.conv", f"{_resample_name(style, lp, part)}.conv")
            seq += 1
    if part == "encoder":
        _add_mid(km, style, f"{dst_root}.mid", mids, mid_attn)
    km.params(f"{dst_root}.norm_out", f"{part}.{'conv_norm_out' if style == 'diffusers' else 'norm_out'}")
    km.params(f"{dst_root}.conv_out", f"{part}.conv_out")


def _add_mid(km: KeyMap, style: str, dst: str, mids: tuple[str, str, str], mid_attn: bool) -> None:
    _res_map(km, f"{dst}.0", mids[0], style, False)
    if mid_attn:
        _attn_map(km, f"{dst}.1", mids[1], style)
    _res_map(km, f"{dst}.2", mids[2], style, False)


def autoencoder_keymap(style: str, ch: int, ch_mult: tuple[int, ...], num_res_blocks: int,
                       attn_levels: tuple[int, ...] | None = None, lowest_level_attn: bool = False,
                       quant_convs: bool = True, dec_attn_levels: tuple[int, ...] | None = None) -> KeyMap:
    """Encoder, decoder and the 1x1/3x3 ``quant_conv``/``post_quant_conv`` around the bottleneck.

    ``attn_levels`` serve both sides unless ``dec_attn_levels`` names the decoder's apart.
    """
    levels = attention_levels(len(ch_mult), lowest_level_attn, attn_levels)
    dec_levels = levels if dec_attn_levels is None else attention_levels(len(ch_mult), False, dec_attn_levels)
    km = KeyMap()
    for part, part_levels in (("encoder", levels), ("decoder", dec_levels)):
        add_autoencoder_part(km, style, part, ch, tuple(ch_mult), num_res_blocks, part_levels)
    if quant_convs:
        km.params("quant_conv", "quant_conv")
        km.params("post_quant_conv", "post_quant_conv")
    return km


def count_indexed(state: dict, prefix: str) -> int:
    """How many ``prefix{N}.`` sub-modules a state dict holds (``N`` = 0, 1, ...)."""
    seen = {k[len(prefix):].split(".", 1)[0] for k in state if k.startswith(prefix)}
    return len({s for s in seen if s.isdigit()})


def encoder_sizes(state: dict, stack: str = "encoder.down", block: str = "block") -> dict:
    """``ch``, ``ch_mult`` and ``num_res_blocks`` of a conv encoder, read off its tensors: levels
    ``{stack}.N``, each with residual blocks ``{stack}.N.{block}.M`` (LDM's names by default;
    LlamaGen's are ``encoder.conv_blocks`` / ``res``). KeyError when the state holds no level."""
    ch = state["encoder.conv_in.weight"].shape[0]
    levels = count_indexed(state, f"{stack}.")
    if levels == 0:
        raise KeyError(f"{stack}.0")
    return dict(ch=ch, ch_mult=tuple(state[f"{stack}.{i}.{block}.0.conv1.weight"].shape[0] // ch for i in range(levels)),
                num_res_blocks=count_indexed(state, f"{stack}.0.{block}."))


__all__ = ["autoencoder_keymap", "add_autoencoder_part", "count_indexed", "encoder_sizes", "STYLES"]
