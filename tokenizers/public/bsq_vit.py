"""BSQ-ViT's releases (zhaoyue-zephyrus/bsq-vit, ``checkpoint.pt``) -> `BSQViTTokenizer`.

A release is the training script's own checkpoint (``scripts/main_image_tokenizer.py``, a
DistributedDataParallel run with ``--use-ema``): ``state_dict`` holds the live weights under DDP's
``module.`` prefix (with the quantizer's constant ``basis``/``group_basis`` buffers),
``ema_state_dict`` timm's ``ModelEmaV2`` copy of the DDP model under ``module.module.`` (or None
without ``--use-ema``); beside them the optimizer, discriminator and GradScaler states, the
OmegaConf training ``config`` and the argparse ``args``.

Only tensors and plain data are read: the container's known non-tensor objects
(`CONTAINER_GLOBALS`) are unpickled as inert stand-ins, anything else is refused. The config's
data (`plain`) give what the tensors do not say: the heads (``model.params.vitconfig.heads``) and
the input range (``data.zero_mean``: ``[-1, 1]`` when true, as in every released config, else
``[0, 1]``, the range VTBench's loader feeds); a file without a config gets the released values.
Upstream's ``init_from_ckpt`` loads the EMA weights when the file has them, else the live ones; so
does this loader (``use_ema=False`` takes the live ones, as VTBench's loader does).

The ``basis`` buffer is checked: it must be ``2**(bits-1) ... 1``, the most-significant-first id
layout the model reproduces. Sizes are read off the tensors. The 36-bit release is refused: its
ids (2**36 codes) are beyond tokbench's binary quantizers (at most 24 bits).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from tokbench.checkpoint import CheckpointError, ReleasedClassStandIn, torch_load_safely
from tokbench.quantize.binary import MAX_BITS
from tokbench.tokenizers.public.bsq_vit_model import BSQViTTokenizer
from tokbench.tokenizers.public.conv_keys import count_indexed
from tokbench.tokenizers.public.keymap import KeyMap, load_converted
from tokbench.tokenizers.public.release import PICKLE_SUFFIXES, Release, file_index, public_factory, resolve_options

# The non-tensor objects of the release container: OmegaConf's config tree, argparse's
# namespace, and a numpy float (``best_fid`` of a best-FID copy of the file).
CONTAINER_GLOBALS = (
    "omegaconf.dictconfig.DictConfig", "omegaconf.listconfig.ListConfig", "omegaconf.base.ContainerMetadata",
    "omegaconf.base.Metadata", "omegaconf.nodes.AnyNode", "typing.Any", "builtins.dict", "builtins.list",
    "builtins.int", "collections.defaultdict", "argparse.Namespace",
    "numpy.dtype", "numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar",
)
PREFIXES = {"ema_state_dict": "module.module.", "state_dict": "module."}
QUANTIZER_BUFFERS = ("quantize.basis", "quantize.group_basis")
MARKERS = ("encoder.conv1.weight", "quant_embed.weight", "quantize.basis")  # what recognises a release
OWN_BUFFERS = ("quantize.step", "quantize.last_hit_step", "quantize.hit_ema")
PREPROCESSING = "shorter side resized to 256 (Lanczos), center crop 256x256; then 2x - 1 (zero_mean)"
RELEASES = {
    # imagenet_256x256_bsqvit_b18g{18,2}_stylegan_f8_fp16.yaml: ViT-B (768 wide, 12 layers, 12 heads)
    # on 8x8 patches, 18 bits: 32x32 tokens at 256 px; the decoder's ffn is 3072 wide.
    "bsq-vit-18bit": dict(image_size=256, patch_size=8, width=768, depth=12, heads=12, mlp_ratio=4.0, bits=18,
                          ffn_dim=3072),
}


def read_release(path: Path) -> dict[str, Any]:
    """The checkpoint's dict, its non-tensor objects as inert stand-ins."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file (a BSQ-ViT release is its checkpoint.pt)")
    blob = torch_load_safely(path, stand_ins=CONTAINER_GLOBALS)
    if not isinstance(blob, dict):
        raise CheckpointError(f"{path}: expected BSQ-ViT's checkpoint dict, got {type(blob).__name__}")
    return blob


def plain(node: Any) -> Any:
    """An OmegaConf tree read as stand-ins -> plain dicts, lists and values (None for other objects)."""
    if isinstance(node, ReleasedClassStandIn):
        state = node.state if isinstance(node.state, dict) else {}
        if "_content" in state:  # DictConfig / ListConfig
            return plain(state["_content"])
        return plain(state.get("_val"))  # a value node
    if isinstance(node, dict):
        return {k: plain(v) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return [plain(v) for v in node]
    return node


def options_from_config(config: Any, source: str) -> dict[str, Any]:
    """``heads`` and ``zero_mean`` from the file's training config; ``{}`` when the file has none.
    Variants this model does not express are refused by name."""
    cfg = plain(config)
    if not isinstance(cfg, dict) or not isinstance(cfg.get("model"), dict):
        return {}
    model = cfg["model"]
    params = model.get("params") or {}
    if not str(model.get("target", "")).endswith("VITBSQModel"):
        raise CheckpointError(f"{source}: the file's config builds {model.get('target')!r}, not BSQ-ViT's VITBSQModel")
    for key, supported in (("l2_norm", True), ("post_q_l2_norm", True), ("logit_laplace", False)):
        if bool(params.get(key, False)) != supported:
            raise CheckpointError(f"{source}: model.params.{key}={params.get(key)!r} is not supported (the "
                                  f"released configs set {key}={supported})")
    vit = params.get("vitconfig") or {}
    dvit = params.get("dvitconfig") or vit
    for key in ("width", "layers", "heads", "patch_size", "image_size"):
        if dvit.get(key) != vit.get(key):
            raise CheckpointError(f"{source}: the decoder's {key}={dvit.get(key)!r} differs from the encoder's "
                                  f"{vit.get(key)!r}; BSQ-ViT here has one ViT size (as every release)")
    data = cfg.get("data") or {}
    return dict(heads=int(vit["heads"]), zero_mean=bool(data.get("zero_mean", False)))


def weights_in(blob: dict[str, Any], path: Path, use_ema: bool) -> tuple[dict[str, torch.Tensor], str]:
    """The model's tensors without their DDP prefix, and which set they are (``ema_state_dict`` or ``state_dict``)."""
    order = ("ema_state_dict", "state_dict") if use_ema else ("state_dict",)
    entry = next((k for k in order if isinstance(blob.get(k), dict)), None)
    if entry is None:
        raise CheckpointError(f"{path}: no {' or '.join(order)} in the file (top-level keys "
                              f"{sorted(map(str, blob))[:8]}); a BSQ-ViT release is its training checkpoint.pt")
    state, prefix = blob[entry], PREFIXES[entry]
    if all(k.startswith(prefix) for k in state):  # DDP's prefix; a single-process save has none
        state = {k[len(prefix):]: v for k, v in state.items()}
    return state, entry


def check_basis(state: dict[str, torch.Tensor], source: str) -> None:
    """The file's id weights must be upstream's most-significant-first ``basis``."""
    basis = state.get("quantize.basis")
    if basis is None:
        return  # the key check reports the missing buffer
    expected = 2 ** torch.arange(basis.numel() - 1, -1, -1)
    if not torch.equal(basis.long(), expected):
        raise CheckpointError(f"{source}: quantize.basis is {basis.tolist()[:4]}..., expected the powers of two "
                              f"from 2**{basis.numel() - 1} down to 1 (BSQ-ViT's id layout)")


def options_from_state(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Sizes read off the tensors (KeyError where the file is not BSQ-ViT's layout)."""
    width, patch_dim = state["encoder.conv1.weight"].shape
    patch_size = round((patch_dim / 3) ** 0.5)
    grid = round(state["encoder.positional_embedding"].shape[0] ** 0.5)
    return dict(image_size=grid * patch_size, patch_size=patch_size, width=width,
                depth=count_indexed(state, "encoder.transformer.resblocks."),
                mlp_ratio=state["encoder.transformer.resblocks.0.mlp.c_fc.weight"].shape[0] / width,
                bits=state["quant_embed.weight"].shape[0], ffn_dim=state["decoder.ffn.0.weight"].shape[0])


def keymap_for(model: BSQViTTokenizer) -> KeyMap:
    """Identity for every tensor but tokbench's own usage counters."""
    km = KeyMap()
    for key in model.state_dict():
        if not key.endswith(OWN_BUFFERS):
            km.rename(key, key)
    return km


def build(release: Release, weights: Path | None, *, use_ema: bool = True, **overrides: Any) -> BSQViTTokenizer:
    if not isinstance(use_ema, bool):
        raise ValueError(f"{release.name}: use_ema must be true or false, got {use_ema!r}")
    base = RELEASES[release.name]
    if weights is None:
        return BSQViTTokenizer(**resolve_options(release.name, base, {}, overrides))
    blob = read_release(weights)
    state, entry = weights_in(blob, weights, use_ema)
    source = f"{weights} ({entry}, as {release.name})"
    check_basis(state, source)
    try:
        from_file = options_from_state(state)
    except (KeyError, IndexError, ValueError):
        from_file = {}  # not this layout: the key check below says what differs
    from_file.update(options_from_config(blob.get("config"), source))
    if from_file.get("bits", 0) > MAX_BITS:
        raise CheckpointError(f"{source}: {from_file['bits']}-bit codes are not supported (tokbench's binary "
                              f"quantizers hold at most {MAX_BITS} bits per id); the 18-bit releases are")
    model = BSQViTTokenizer(**resolve_options(release.name, base, from_file, overrides, source=str(weights)))
    tensors = {k: v for k, v in state.items() if k not in QUANTIZER_BUFFERS}
    load_converted(model, keymap_for(model).apply(tensors, source), source, OWN_BUFFERS)
    return model.eval()


def build_bsq_vit_family(**options: Any) -> BSQViTTokenizer:
    """The ``bsq_vit`` family: rebuilds a BSQ-ViT from a tokbench checkpoint's config."""
    return BSQViTTokenizer(**options)


def recognizes(path: Path) -> bool:
    """BSQ-ViT's training checkpoint: its ViT encoder, BSQ projection and ``basis`` buffer in
    ``state_dict`` (or the EMA copy), whatever the code width -- the loader names a width it refuses."""
    if path.is_dir() or path.suffix not in PICKLE_SUFFIXES:
        return False
    index = file_index(path)
    return any(all(f"{entry}/{prefix}{key}" in index for key in MARKERS)
               for entry, ddp_prefix in PREFIXES.items() for prefix in (ddp_prefix, ""))


build_18bit = public_factory(
    Release("bsq-vit-18bit", "bsq_vit",
            "checkpoint.pt (state_dict with DDP's module. prefix; EMA weights in ema_state_dict, module.module.)",
            "github.com/zhaoyue-zephyrus/bsq-vit (UTBox links, README); huggingface.co/huaweilin/bsqvit_256x256 "
            "(VTBench's copy)", PREPROCESSING),
    build, recognizes, stand_ins=CONTAINER_GLOBALS)
