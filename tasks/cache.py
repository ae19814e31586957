"""The run's resumable state under ``OUT/cache/``: per-image rows and the pinned settings.

Every scored image is appended (and fsynced) to ``<task>.r<rank>.jsonl`` before the next
batch starts; a rerun with the same ``--out`` skips the images already there. A line cut
short by a crash is ignored on reading and the next append starts on a fresh line, so that
image is scored again and nothing else is lost: a resumed run always completes in one rerun.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from tokbench.atomic import atomic_path, atomic_write_text

SKIP_KEY = "_skipped"  # a cached row for an unreadable file: {"id": ..., "_skipped": reason}
PRIVATE_PREFIX = "_"  # row keys such as _fid_real hold features, not metrics


def safe_name(item_id: str) -> str:
    """A file name for an item id (``photos/a b.png`` -> ``photos_a_b.png``)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in item_id)


class RowCache:
    """Append-only cache of scored images for one task and rank.

    Scalar results go to ``<task>.r<rank>.jsonl`` (one JSON row per image). Arrays that a
    task keeps per image (private keys holding ``np.ndarray``, e.g. Inception features for
    rFID) go to float32 ``.npz`` chunks in ``<task>.r<rank>.arrays/``, written atomically
    *before* their rows, so every cached row has its arrays (2048 floats as JSON text would
    make an ImageNet-sized cache gigabytes large).
    """

    def __init__(self, folder: Path, task: str, rank: int) -> None:
        self.folder, self.task = folder, task
        self.path = folder / f"{task}.r{rank}.jsonl"
        self.array_dir = folder / f"{task}.r{rank}.arrays"

    def load_all(self) -> dict[str, dict]:
        """Rows of every rank's file (a shared folder lets a resume change the rank count)."""
        rows = {}
        for path in sorted(self.folder.glob(f"{self.task}.r*.jsonl")):
            for line in path.read_text().splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by a crash: that image is scored again
                rows[row["id"]] = row
        return rows

    def load_arrays(self) -> dict[str, dict[str, np.ndarray]]:
        """``id -> {key: array}`` from every rank's array chunks."""
        out: dict[str, dict[str, np.ndarray]] = {}
        for path in sorted(self.folder.glob(f"{self.task}.r*.arrays/*.npz")):
            with np.load(path, allow_pickle=False) as chunk:
                ids = [str(i) for i in chunk["ids"]]
                for key in chunk.files:
                    if key != "ids":
                        for i, row_id in enumerate(ids):
                            out.setdefault(row_id, {})[key] = chunk[key][i]
        return out

    def append(self, rows: list[dict]) -> None:
        arrays = {k for r in rows for k, v in r.items() if isinstance(v, np.ndarray)}
        if arrays:
            path = self.array_dir / f"{len(list(self.array_dir.glob('*.npz'))):07d}.npz"
            with atomic_path(path, suffix=".npz") as tmp:
                np.savez(tmp, ids=np.array([r["id"] for r in rows]),
                         **{k: np.stack([r[k] for r in rows]).astype(np.float32) for k in sorted(arrays)})
            rows = [{k: v for k, v in r.items() if k not in arrays} for r in rows]
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a+b") as f:
            if f.tell() > 0:  # a crash may have cut the last line short: never append onto it
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    f.write(b"\n")
            f.write("".join(json.dumps(row) + "\n" for row in rows).encode())
            f.flush()
            os.fsync(f.fileno())


def pin_settings(cache_dir: Path, pinned: dict, out: Path, rank: int) -> None:
    """Record the run's settings, or refuse to resume a run made with other settings."""
    pinned_path = cache_dir / "run.json"
    if pinned_path.is_file():
        previous = json.loads(pinned_path.read_text())
        if previous != pinned:
            changed = sorted(k for k in {*pinned, *previous} if previous.get(k) != pinned.get(k))
            raise ValueError(f"{out} holds a run with other settings ({', '.join(changed)}); "
                             "use another --out or delete that folder")
    elif rank == 0:
        atomic_write_text(pinned_path, json.dumps(pinned, indent=2))
