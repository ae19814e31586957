"""Face identity: dlib's face detector, 5-point landmarks and 128-d ResNet face descriptor.

What TokBench does (``wjf5203/TokBench``, ``eval_face.py`` / ``compute_all_metrics.py``),
and what this module keeps of it:

* Each face's identity embedding is computed on the original *and* on the reconstruction
  at the **same** landmarks, those of the original (TokBench passes the annotated keypoints
  of the original to the recognizer for both images). Nothing is detected on the
  reconstruction, so a face the tokenizer destroyed still gets a (low) score instead of
  silently dropping out.
* The score is the **cosine similarity** of the two embeddings (TokBench's definition).
  TokBench's recognizer is insightface's ArcFace (antelopev2); tokbench uses dlib's ResNet
  descriptor, which ships offline as a pip package. The two are not on the same scale:
  dlib's descriptors of *different* faces are far from orthogonal (over the 76 faces found in the
  built-in suite, pairwise cosine similarity 0.86 on average, 0.80-0.91 for 90% of pairs;
  dlib itself separates identities by a Euclidean distance of 0.6), so a dlib F-Sim near
  0.86 means "identity lost", and it is not numerically comparable with a published ArcFace
  F-Sim: compare tokenizers with each other on the same data.
* Faces are bucketed by size relative to the image, with TokBench's thresholds, which
  depend on the evaluation resolution (:data:`RATIO_EDGES`). TokBench's annotations carry
  a precomputed ``ratio``; its code does not show the formula. tokbench uses the longer
  side of the face box over the longer side of the evaluated image.

The model files come from the ``face-recognition-models`` package (never downloaded here)
and are checked against :data:`MODEL_SHA256` before use.
"""
from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from tokbench.provenance import file_sha256

BUCKETS = ("small", "medium", "large")
# TokBench's face-size buckets (compute_all_metrics.py, summarize_face): ratio edges per
# evaluation setting; small = [0, a), medium = [a, b), large = [b, 1].
RATIO_EDGES: dict[int, tuple[float, float]] = {256: (0.1, 0.2), 512: (0.05, 0.2), 1024: (0.05, 0.1)}
# Up-sampling passes of the HOG detector: each halves the smallest face it finds (80 px at
# 0 passes); 2 finds faces down to about 20 px, TokBench's small bucket at 256 px (< 25.6 px).
DETECTOR_UPSAMPLE = 2
# Detections scoring below this are dropped (dlib's own default is 0). At 2 up-sampling passes
# the one detection of the built-in suite under 0.1 is a false positive (the mission patch on
# the astronaut's suit, score 0.01); the faces of the LFW mosaics score above it but for one.
DETECTOR_THRESHOLD = 0.1
FACES_EXTRA_HINT = "pip install 'tokbench[faces]' (the dlib-bin and face-recognition-models packages)"

# SHA-256 of the unpacked model files. dlib.net and github.com/davisking/dlib-models publish
# only the .bz2 archives, and no checksum of the unpacked .dat files: these are the values we
# measured on the files of face-recognition-models 0.3.0 (the same bytes as the upstream
# archives unpacked, as other projects that pin these files recorded too).
MODEL_SHA256 = {
    "shape_predictor_5_face_landmarks.dat": "c4b1e9804792707d3a405c2c16a80a20269e6675021f64a41d30fffafbc41888",
    "dlib_face_recognition_resnet_model_v1.dat": "55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
}


class FaceModelsMissingError(RuntimeError):
    """dlib or the face models are not installed, or a model file is not the expected one."""


@dataclass
class FaceModels:
    """dlib's HOG frontal face detector, 5-point shape predictor and ResNet face encoder."""

    dlib: Any
    detector: Any
    predictor: Any
    encoder: Any


def model_paths() -> dict[str, Path]:
    """The two model files of the installed ``face-recognition-models`` package.

    Found through the package's location, without importing it: its ``__init__`` imports
    ``pkg_resources``, which new environments may lack (it is deprecated in setuptools).
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FaceModelsMissingError(f"the faces task needs dlib's face models: {FACES_EXTRA_HINT}")
    folder = Path(list(spec.submodule_search_locations)[0]) / "models"
    return {name: folder / name for name in MODEL_SHA256}


def check_model_files(paths: dict[str, Path]) -> None:
    """Raise :class:`FaceModelsMissingError` unless every file exists with its pinned SHA-256."""
    for name, path in paths.items():
        if not path.is_file():
            raise FaceModelsMissingError(f"face model {name} not found at {path}; {FACES_EXTRA_HINT}")
        found = file_sha256(path)
        if found != MODEL_SHA256[name]:
            raise FaceModelsMissingError(f"face model {path} has SHA-256 {found}, expected {MODEL_SHA256[name]} "
                                         f"(a different or corrupted file); reinstall: {FACES_EXTRA_HINT}")


@lru_cache(maxsize=1)
def load_face_models() -> FaceModels:
    """The dlib models, loaded once per process after their checksums are verified."""
    try:
        import dlib
    except ImportError as err:
        raise FaceModelsMissingError(f"the faces task needs dlib: {FACES_EXTRA_HINT}") from err
    paths = model_paths()
    check_model_files(paths)
    return FaceModels(dlib, dlib.get_frontal_face_detector(),
                      dlib.shape_predictor(str(paths["shape_predictor_5_face_landmarks.dat"])),
                      dlib.face_recognition_model_v1(str(paths["dlib_face_recognition_resnet_model_v1.dat"])))


def _rgb(image_HW3: np.ndarray) -> np.ndarray:
    if image_HW3.ndim != 3 or image_HW3.shape[2] != 3 or image_HW3.dtype != np.uint8:
        raise ValueError(f"expected a uint8 (H, W, 3) RGB image, got {image_HW3.dtype} {image_HW3.shape}")
    return np.ascontiguousarray(image_HW3)  # dlib's bindings take C-contiguous arrays only


def detect_faces(models: FaceModels, image_HW3: np.ndarray, upsample: int = DETECTOR_UPSAMPLE,
                 threshold: float = DETECTOR_THRESHOLD) -> list[list[int]]:
    """Boxes ``[x0, y0, x1, y1]`` (x1, y1 exclusive) of the frontal faces found, clipped to the image."""
    image = _rgb(image_HW3)
    H, W = image.shape[:2]
    boxes = []
    rects, _scores, _kinds = models.detector.run(image, upsample, threshold)
    for r in rects:
        box = [max(0, r.left()), max(0, r.top()), min(W, r.right() + 1), min(H, r.bottom() + 1)]
        if box[2] > box[0] and box[3] > box[1]:
            boxes.append(box)
    return sorted(boxes, key=lambda b: (b[1], b[0]))


def face_similarities(models: FaceModels, original_HW3: np.ndarray, reconstruction_HW3: np.ndarray,
                      boxes: Sequence[Sequence[float]]) -> list[float]:
    """Cosine similarity of each face's descriptor, original vs reconstruction.

    Landmarks are found once, on the original, inside each box; both descriptors are computed
    at those landmarks (dlib aligns a 150x150 chip from them), so identical images give 1.
    """
    a, b = _rgb(original_HW3), _rgb(reconstruction_HW3)
    if a.shape != b.shape:
        raise ValueError(f"original {a.shape} and reconstruction {b.shape} differ in size")
    if not boxes:
        return []
    dlib = models.dlib
    shapes = dlib.full_object_detections()
    for x0, y0, x1, y1 in boxes:
        shapes.append(models.predictor(a, dlib.rectangle(int(round(x0)), int(round(y0)),
                                                         int(round(x1)) - 1, int(round(y1)) - 1)))
    d_orig = np.array(models.encoder.compute_face_descriptor(a, shapes), dtype=np.float64)
    d_rec = np.array(models.encoder.compute_face_descriptor(b, shapes), dtype=np.float64)
    return [cosine(u, v) for u, v in zip(d_orig, d_rec)]


def cosine(u: np.ndarray, v: np.ndarray) -> float:
    """Cosine similarity, clipped to [-1, 1] (rounding); 0 if either vector is zero."""
    nu, nv = float(np.linalg.norm(u)), float(np.linalg.norm(v))
    if nu == 0.0 or nv == 0.0:
        return 0.0
    return float(min(1.0, max(-1.0, float(u @ v) / (nu * nv))))


def setting_for(side: int) -> int:
    """TokBench's evaluation setting (256, 512 or 1024) nearest to an image's longer side (log scale)."""
    return min(RATIO_EDGES, key=lambda s: abs(math.log2(max(side, 1) / s)))


def face_ratio(box: Sequence[float], height: int, width: int) -> float:
    """Face size relative to the image: longer side of the box over the image's longer side."""
    return max(box[2] - box[0], box[3] - box[1]) / max(height, width)


def size_bucket(ratio: float, side: int) -> str:
    """``small``, ``medium`` or ``large`` under TokBench's edges for the setting nearest ``side``."""
    low, high = RATIO_EDGES[setting_for(side)]
    return "small" if ratio < low else "medium" if ratio < high else "large"
