"""RQ-VAE stage-1 releases (kakaobrain/rq-vae-transformer) -> `RQVAETokenizer`.

Each released tar.gz (ImageNet, FFHQ, LSUN church/cat/bedroom, CC-3M, CC3M+CC12M+YFCC) holds
``<release>/stage1/model.pt`` beside its ``config.yaml``; upstream's ``load_model`` builds
``RQVAE(**arch.hparams, ddconfig=arch.ddconfig)`` from the yaml and loads
``torch.load(model.pt)["state_dict"]`` (the file also holds ``epoch`` and, from the trainer,
optimizer and scheduler states, which are ignored). Either the file or its ``stage1/`` folder
may be given. The yaml is read when it lies beside the file; otherwise the sizes are read off
the tensors. Only what the releases use is supported:
``bottleneck_type: rq``, a shared codebook, and a code grid equal to the latent grid.

Upstream's codebook (``quantizer.codebooks.N.weight``) has ``n_embed + 1`` rows, the last a
padding row the search never picks: it is dropped. The shared module appears once per depth in
the state dict (``codebooks.0`` .. ``codebooks.{D-1}``, equal tensors) and is read once; its EMA
statistics (``cluster_size_ema``, ``embed_ema``) are training-only and ignored. Ids: see
`rqvae_model` (a ``sequence`` of ``h*w*D`` codes, depth innermost).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import yaml

from tokbench.checkpoint import CheckpointError
from tokbench.tokenizers.public.conv_keys import autoencoder_keymap, count_indexed, encoder_sizes
from tokbench.tokenizers.public.keymap import KeyMap, load_converted
from tokbench.tokenizers.public.release import (PICKLE_SUFFIXES, Release, file_index, options_read_off,
                                                public_factory, read_any, refuse_fixed_overrides, resolve_options,
                                                state_dict_of)
from tokbench.tokenizers.public.rqvae_model import RQVAETokenizer

CODEBOOK = "quantizer.codebooks.{}.weight"
EMA_SUFFIXES = (".cluster_size_ema", ".embed_ema")
OWN_BUFFERS = ("quantize.vq.step", "quantize.vq.last_hit_step", "quantize.vq.last_restart_step",
               "quantize.vq.hit_ema")
PREPROCESSING = ("shorter side resized to 256 (torchvision Resize, bilinear), center crop 256x256; then 2x - 1 "
                 "(rqvae/img_datasets/transforms.py, imagenet256x256 / ffhq256x256 / lsun)")
_ARCH = dict(ch=128, ch_mult=(1, 1, 2, 2, 4, 4), num_res_blocks=2, z_channels=256, code_dim=256, depth=4)
RELEASES = {
    # configs/imagenet256/stage1/in256-rqvae-8x8x4.yaml (LSUN's configs are the same but for the data)
    "rqvae-imagenet-8x8x4": dict(_ARCH, attn_levels=(5,), codebook_size=16384),
    # configs/ffhq/stage1/ffhq256-rqvae-8x8x4.yaml: 2,048 codes, attention at the 16 x 16 level
    "rqvae-ffhq-8x8x4": dict(_ARCH, attn_levels=(4,), codebook_size=2048),
}
FIXED = ("depth",)


def options_from_config(path: Path) -> dict[str, Any]:
    """Options from upstream's stage-1 ``config.yaml`` (``arch.hparams`` and ``arch.ddconfig``)."""
    try:
        arch = yaml.safe_load(path.read_text())["arch"]
        hp, dd = arch["hparams"], arch["ddconfig"]
        levels = len(dd["ch_mult"])
        attn = tuple(lvl for lvl in range(levels) if dd["resolution"] // 2 ** lvl in set(dd["attn_resolutions"]))
        latent, code = list(hp["latent_shape"]), list(hp["code_shape"])
        unsupported = (arch.get("type", "rq-vae") != "rq-vae" or hp.get("bottleneck_type", "rq") != "rq"
                       or not hp["shared_codebook"] or latent[:2] != code[:2] or latent[2] != hp["embed_dim"])
        options = dict(ch=dd["ch"], ch_mult=tuple(dd["ch_mult"]), num_res_blocks=dd["num_res_blocks"],
                       z_channels=dd["z_channels"], attn_levels=attn, codebook_size=hp["n_embed"],
                       code_dim=hp["embed_dim"], depth=code[2])
    except (OSError, yaml.YAMLError, KeyError, TypeError, IndexError) as err:
        raise CheckpointError(f"{path}: not an RQ-VAE stage-1 config.yaml with arch.hparams and arch.ddconfig "
                              f"({err})") from err
    if unsupported:
        raise CheckpointError(f"{path}: only the released RQ-VAE variant is supported (type rq-vae, bottleneck_type "
                              f"rq, shared_codebook true, code_shape[:2] == latent_shape[:2], latent depth == "
                              f"embed_dim); got shared_codebook={hp['shared_codebook']}, latent_shape={latent}, "
                              f"code_shape={code}")
    return options


def options_from_state(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The same options read off the tensors (KeyError/IndexError if it is not this layout)."""
    rows, code_dim = state[CODEBOOK.format(0)].shape
    levels = len(encoder_sizes(state)["ch_mult"])
    return dict(encoder_sizes(state), z_channels=state["quant_conv.weight"].shape[1], codebook_size=rows - 1,
                code_dim=code_dim, depth=count_indexed(state, "quantizer.codebooks."),
                attn_levels=tuple(i for i in range(levels) if f"encoder.down.{i}.attn.0.q.weight" in state))


def shared_codebook(state: dict[str, torch.Tensor], depth: int, where: str) -> dict[str, torch.Tensor]:
    """The state without the EMA statistics and the per-depth copies of the one shared codebook."""
    first = state.get(CODEBOOK.format(0))
    for d in range(1, depth):
        other = state.get(CODEBOOK.format(d))
        if first is not None and other is not None and not torch.equal(first, other):
            raise CheckpointError(f"{where}: {CODEBOOK.format(d)} differs from {CODEBOOK.format(0)}; only RQ-VAEs "
                                  "with a shared codebook (shared_codebook: true, as released) are supported")
    copies = {CODEBOOK.format(d) for d in range(1, depth)}
    return {k: v for k, v in state.items() if k not in copies and not k.endswith(EMA_SUFFIXES)}


def without_padding_row(weight: torch.Tensor) -> torch.Tensor:
    return weight[:-1]


def keymap_for(options: dict[str, Any]) -> KeyMap:
    """taming's (LDM) encoder/decoder names, plus the shared codebook without its padding row."""
    km = autoencoder_keymap("ldm", options["ch"], tuple(options["ch_mult"]), options["num_res_blocks"],
                            attn_levels=tuple(options["attn_levels"]))
    km.rename("quantize.vq.embedding", CODEBOOK.format(0), without_padding_row)
    return km


def find_config(weights: Path) -> Path | None:
    candidate = weights.parent / "config.yaml"
    return candidate if candidate.is_file() else None


def model_file(weights: Path) -> Path:
    """``model.pt`` itself, or the ``stage1/`` folder holding it (upstream's container)."""
    if weights.is_dir():
        if not (weights / "model.pt").is_file():
            raise CheckpointError(f"{weights}: a folder without model.pt (an RQ-VAE release's stage1/ folder holds "
                                  "model.pt and config.yaml)")
        return weights / "model.pt"
    return weights


def build(release: Release, weights: Path | None, **overrides: Any) -> RQVAETokenizer:
    base = RELEASES[release.name]
    refuse_fixed_overrides(release, base, overrides)
    if weights is None:
        return RQVAETokenizer(**resolve_options(release.name, base, {}, overrides))
    weights = model_file(weights)
    state = state_dict_of(read_any(weights), weights, ("state_dict",))
    config = find_config(weights)
    from_file = options_from_config(config) if config else options_read_off(options_from_state, state)
    options = resolve_options(release.name, base, from_file, overrides, source=str(config or weights))
    source = f"{weights} (as {release.name})"
    model = RQVAETokenizer(**options)
    state = shared_codebook(state, options["depth"], source)
    load_converted(model, keymap_for(options).apply(state, source), source, OWN_BUFFERS)
    return model.eval()


def _recognizes(codebook_size: int):
    def recognizes(path: Path) -> bool:
        if path.is_dir():
            path = path / "model.pt"
            if not (path.is_file() and find_config(path)):
                return False
        if path.suffix not in PICKLE_SUFFIXES:
            return False
        index = file_index(path)
        key = "state_dict/" + CODEBOOK.format(0)
        if key not in index or "state_dict/quantizer.codebooks.0.embed_ema" not in index:
            return False
        size = index[key][0] - 1
        # Another size than either release: both names fit, and the caller must choose.
        return size == codebook_size or size not in {r["codebook_size"] for r in RELEASES.values()}
    return recognizes


def build_rqvae_family(**options: Any) -> RQVAETokenizer:
    """The ``rqvae`` family: rebuilds an RQ-VAE from a tokbench checkpoint's config."""
    return RQVAETokenizer(**options)


_WHERE = "github.com/kakaobrain/rq-vae-transformer (README: Pretrained Checkpoints, tar.gz per dataset)"
build_imagenet = public_factory(
    Release("rqvae-imagenet-8x8x4", "rqvae",
            "<release>/stage1/model.pt + config.yaml (ImageNet; any release by its config.yaml)", _WHERE,
            PREPROCESSING, fixed=FIXED), build, _recognizes(16384))
build_ffhq = public_factory(
    Release("rqvae-ffhq-8x8x4", "rqvae", "ffhq/stage1/model.pt + config.yaml", _WHERE, PREPROCESSING, fixed=FIXED),
    build, _recognizes(2048))
