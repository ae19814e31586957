"""The images of a token dataset and their class labels.

Images are every file under the data folder with an image suffix, in the order of their
relative POSIX paths sorted as strings (``"a/x.png"``, ``"b/y.png"``, ...): image ``i`` of a
token dataset is the ``i``-th of this list. Labels come from one of:

* ``"folders"`` -- ImageFolder style: every image lies in a subfolder, and its class is the
  top-level subfolder's name; classes are the sorted folder names, label = position;
* ``"csv"`` -- a CSV file with columns ``file,label`` naming every image exactly once
  (``file`` relative to the data folder). Labels that are all non-negative integers keep
  their value (classes ``"0" .. str(max)``); other labels are class names, numbered in
  sorted order;
* ``"none"`` -- a flat folder (no subfolders): unconditional data, every label ``-1``.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from tokbench.imageio import IMAGE_SUFFIXES

UNLABELLED = -1


@dataclass(frozen=True)
class LabelledImages:
    """The image list of a dataset and a label per image."""

    root: Path
    files: list[str]  # relative POSIX paths, sorted as strings
    labels: np.ndarray  # int64 (num_images,), UNLABELLED (-1) for unconditional data
    classes: list[str] | None  # class names in label order; None when unlabelled
    source: str  # "folders", "csv" or "none"


def list_images(root: str | Path) -> list[str]:
    """Relative POSIX paths of the image files under ``root`` (recursive), sorted as strings."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"--data {root}: no such folder")
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*")
                   if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise ValueError(f"--data {root}: contains no image files (expected files ending in "
                         f"{', '.join(sorted(IMAGE_SUFFIXES))}, in the folder or its subfolders)")
    return files


def folder_labels(root: Path, files: list[str]) -> tuple[np.ndarray, list[str] | None, str]:
    """``(labels, classes, source)`` of ``files`` (relative POSIX paths under ``root``) by the
    folder rule: the top-level subfolder is the class; a flat folder is unlabelled (``"none"``)."""
    top = [PurePosixPath(f).parts[0] if len(PurePosixPath(f).parts) > 1 else None for f in files]
    loose = [f for f, t in zip(files, top) if t is None]
    if len(loose) == len(files):
        return np.full(len(files), UNLABELLED, dtype=np.int64), None, "none"
    if loose:
        raise ValueError(f"--data {root}: {len(loose)} image(s) lie directly in the folder (first: {loose[0]}) and "
                         f"{len(files) - len(loose)} in subfolders; expected either class subfolders only "
                         "(ImageFolder layout: DIR/CLASS/IMAGE) or a flat folder of unlabelled images "
                         "(or give the labels with --labels CSV)")
    classes = sorted(set(top))  # type: ignore[arg-type]
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index[t] for t in top], dtype=np.int64), classes, "folders"


def _normalize(name: str) -> str:
    return PurePosixPath(name.strip().replace("\\", "/")).as_posix().removeprefix("./")


def read_labels_csv(path: str | Path, root: Path, files: list[str]) -> tuple[np.ndarray, list[str]]:
    """Labels per file from a ``file,label`` CSV that names every image under ``root`` exactly once."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"--labels {path}: no such file")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            columns = [c.strip() for c in (reader.fieldnames or [])]
            if "file" not in columns or "label" not in columns:
                raise ValueError(f"--labels {path}: expected a header with columns 'file' and 'label', got {columns}")
            rows = [{(k or "").strip(): (v or "") for k, v in row.items()} for row in reader]
    except (UnicodeDecodeError, csv.Error) as err:
        raise ValueError(f"--labels {path}: not a readable CSV file ({err})") from None
    by_file: dict[str, str] = {}
    for n, row in enumerate(rows, start=2):  # line 1 is the header
        name, label = _normalize(row["file"]), row["label"].strip()
        if not row["file"].strip() or not label:
            raise ValueError(f"--labels {path}: line {n} needs both a file and a label, got {row['file']!r}, {row['label']!r}")
        if by_file.get(name, label) != label:
            raise ValueError(f"--labels {path}: {name} is labelled twice, {by_file[name]!r} and {label!r}")
        by_file[name] = label
    present = set(files)
    missing = sorted(set(by_file) - present)
    if missing:
        raise ValueError(f"--labels {path}: names {len(missing)} file(s) that are not images under {root} "
                         f"(first: {missing[0]}); expected paths relative to the data folder")
    unlabelled = [f for f in files if f not in by_file]
    if unlabelled:
        raise ValueError(f"--labels {path}: {len(unlabelled)} image(s) under {root} have no label row "
                         f"(first: {unlabelled[0]}); expected one row per image")
    values = [by_file[f] for f in files]
    if all(v.isdigit() for v in values):
        ints = [int(v) for v in values]
        return np.array(ints, dtype=np.int64), [str(i) for i in range(max(ints) + 1)]
    classes = sorted(set(values))
    index = {c: i for i, c in enumerate(classes)}
    return np.array([index[v] for v in values], dtype=np.int64), classes


def labelled_images(root: str | Path, labels_csv: str | Path | None = None) -> LabelledImages:
    """The images under ``root`` with labels from their folders, from ``labels_csv``, or none."""
    root = Path(root)
    files = list_images(root)
    if labels_csv is not None:
        labels, classes = read_labels_csv(labels_csv, root, files)
        return LabelledImages(root, files, labels, classes, "csv")
    labels, classes, source = folder_labels(root, files)
    return LabelledImages(root, files, labels, classes, source)
