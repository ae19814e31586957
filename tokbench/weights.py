"""Pretrained weights the metrics need: where they live, whether they are there, how to get them.

Files are looked up in ``--weights-dir`` when given, else in PyTorch's hub cache
(``$TORCH_HOME/hub/checkpoints``, default ``~/.cache/torch/hub/checkpoints``) -- the place
torchvision and torch-fidelity download to, so weights fetched once serve every tool.
Nothing here downloads unless `fetch` is called explicitly (``tokbench weights fetch``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from tokbench.atomic import atomic_path


@dataclass(frozen=True)
class WeightFile:
    metric: str
    filename: str
    url: str
    purpose: str
    sha256_prefix: str | None = None  # checked after download where the publisher states it
    by_name_only: bool = False  # fetched only when named (large files that only some commands need)


WEIGHT_FILES = {
    "lpips": WeightFile("lpips", "alexnet-owt-7be5be79.pth",
                        "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
                        "AlexNet backbone of LPIPS (the linear heads ship inside the lpips package)", "7be5be79"),
    "rfid": WeightFile("rfid", "weights-inception-2015-12-05-6726825d.pth",
                       "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/"
                       "weights-inception-2015-12-05-6726825d.pth",
                       "Inception-v3 of the original TF FID implementation (torch-fidelity's port)"),
    # docTR's release (the name carries the SHA-256 prefix docTR itself checks); --ocr parseq
    "parseq": WeightFile("parseq", "parseq-56125471.pt",
                         "https://doctr-static.mindee.com/models?id=v0.7.0/parseq-56125471.pt&src=0",
                         "docTR's PARSeq word recognizer (TokBench's text protocol, --ocr parseq)", "56125471"),
    # Semantic teachers for `tokbench train --model.semantic_teacher` (Meta's releases; Meta
    # publishes no checksum for them, so none is checked: verify the file's source yourself).
    **{name: WeightFile(name, f"dinov2_{arch}14_pretrain.pth",
                        f"https://dl.fbaipublicfiles.com/dinov2/dinov2_{arch}14/dinov2_{arch}14_pretrain.pth",
                        f"DINOv2 ViT-{arch[-1].upper()}/14 backbone (semantic teacher for training)", by_name_only=True)
       for name, arch in (("dinov2-vits14", "vits"), ("dinov2-vitb14", "vitb"))},
}


class MissingWeightsError(RuntimeError):
    """Raised before any work when a metric's weights are not on disk."""


def weights_dir(override: str | os.PathLike | None = None) -> Path:
    if override:
        return Path(override)
    return Path(torch.hub.get_dir()) / "checkpoints"


def weight_path(metric: str, override: str | os.PathLike | None = None) -> Path:
    return weights_dir(override) / WEIGHT_FILES[metric].filename


def require(metrics: list[str], override: str | os.PathLike | None = None, skippable: bool = True) -> dict[str, Path]:
    """Paths of the weights ``metrics`` need; one clear error naming every missing file.

    ``skippable=False`` (commands that cannot run without them, e.g. ``tokbench gen score``)
    leaves out the ``--skip-metric`` hint."""
    missing, found = [], {}
    for metric in metrics:
        if metric not in WEIGHT_FILES:
            continue
        path = weight_path(metric, override)
        if path.is_file():
            found[metric] = path
        else:
            missing.append(f"{metric}: {path} ({WEIGHT_FILES[metric].purpose})")
    if missing:
        raise MissingWeightsError(
            "missing pretrained weights: " + "; ".join(missing)
            + ". Run 'tokbench weights fetch' on a machine with network (then copy the files to that folder, "
            + ("or pass --weights-dir), or run without them: --skip-metric " + ",".join(m.split(":")[0] for m in missing)
               if skippable else "or pass --weights-dir)")
        )
    return found


def fetch(metrics: list[str] | None = None, override: str | os.PathLike | None = None) -> list[Path]:
    """Download the weights into the cache (needs network; never called by tests or eval)."""
    out = []
    target = weights_dir(override)
    target.mkdir(parents=True, exist_ok=True)
    unknown = [m for m in metrics or () if m not in WEIGHT_FILES]
    if unknown:
        raise ValueError(f"unknown weights {', '.join(unknown)}; known: {', '.join(WEIGHT_FILES)}")
    for metric in metrics or [m for m, spec in WEIGHT_FILES.items() if not spec.by_name_only]:
        spec = WEIGHT_FILES[metric]
        path = target / spec.filename
        if not path.is_file():
            try:
                with atomic_path(path, suffix=".part") as tmp:
                    torch.hub.download_url_to_file(spec.url, str(tmp), hash_prefix=spec.sha256_prefix, progress=True)
            except (OSError, RuntimeError) as err:  # no network, HTTP error, or a hash mismatch
                raise RuntimeError(f"cannot download {spec.url} ({err}); on an offline machine copy "
                                   f"{spec.filename} into {target} or pass --weights-dir") from None
        out.append(path)
    return out
