"""Face boxes given with a ``--data`` folder, used by the faces task instead of detection.

Two forms, in the data folder:

* ``faces.json``: ``{"relative/path.jpg": [[x0, y0, x1, y1], ...], ...}``
* ``faces.csv``: columns ``file,x0,y0,x1,y1``, one row per face.

Boxes are in pixels of the image file (x1, y1 exclusive). When a folder has such a file it
is authoritative: the detector is not run, and images it does not name have no faces.
"""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

FACE_MANIFESTS = ("faces.json", "faces.csv")


def _box(values, where: str) -> list[float]:
    try:
        box = [float(v) for v in values]
    except (TypeError, ValueError):
        raise ValueError(f"{where}: a face box is four numbers x0, y0, x1, y1, got {values!r}") from None
    if len(box) != 4 or not all(math.isfinite(v) for v in box):
        raise ValueError(f"{where}: a face box is four finite numbers x0, y0, x1, y1, got {values!r}")
    if box[0] < 0 or box[1] < 0 or box[2] <= box[0] or box[3] <= box[1]:
        raise ValueError(f"{where}: face box {box} must have 0 <= x0 < x1 and 0 <= y0 < y1")
    return box


def read_face_manifest(folder: Path) -> dict[str, list[list[float]]] | None:
    """Face boxes per relative path, or None when the folder has no face manifest."""
    present = [name for name in FACE_MANIFESTS if (folder / name).is_file()]
    if not present:
        return None
    if len(present) > 1:
        raise ValueError(f"{folder}: give face boxes in one of {' or '.join(FACE_MANIFESTS)}, not both")
    path = folder / present[0]
    boxes: dict[str, list[list[float]]] = {}
    if path.suffix == ".json":
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"{path}: cannot read JSON ({err})") from None
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected an object mapping file -> list of [x0, y0, x1, y1] boxes")
        for file, faces in data.items():
            if not isinstance(faces, list):
                raise ValueError(f"{path}: {file!r} must map to a list of boxes, got {faces!r}")
            boxes[str(file)] = [_box(b, f"{path}: {file}") for b in faces]
        return boxes
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = {"file", "x0", "y0", "x1", "y1"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path}: needs columns file,x0,y0,x1,y1 (missing {', '.join(sorted(missing))})")
        for n, row in enumerate(reader, 2):
            boxes.setdefault(row["file"], []).append(_box([row[k] for k in ("x0", "y0", "x1", "y1")], f"{path}: line {n}"))
    return boxes
