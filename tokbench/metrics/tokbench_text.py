"""TokBench's word-level text protocol (T-ACC / T-NED), rule by rule.

Reference: TokBench (Wu et al., 2025, "TokBench: Evaluating Your Visual Tokenizer before
Visual Generation"), code ``wjf5203/TokBench`` -- ``eval_text.py`` (per-word scores, the
``--refine`` step), ``compute_all_metrics.py`` (buckets, pooling, headline figure) and its
doctr ``utils/metrics.py`` (string comparison). The rules, as that code applies them:

* **Matching**: raw strings, case-sensitive, no Unicode or whitespace normalization.
  Accuracy is ``gt == pred``; NED similarity is ``1 - lev(gt, pred) / max(len(gt), len(pred))``
  (Levenshtein with unit costs, no transpositions).
* **Size measure** (the word's ``ratio``): TokBench's annotation files carry it precomputed;
  it is the mean character width of the word's box -- box width / number of characters --
  over the image's longer side. (Inferred from the per-word ratios in TokBench's released
  ``output/*.json``: exact for all 35,205 words of its Total-Text, ICDAR15, SROIE, CORD,
  InfoGraphicVQA and DocVQA files and the 721 ICDAR13 words on landscape images; its 161
  ICDAR13 words on portrait images divide by the image width instead.)
* **Buckets per resolution setting** ``[low, high)``: 256 px: 0.02 / 0.03 / 0.04 / 1;
  512 px: 0.01 / 0.02 / 0.03 / 1; 1024 px: 0.005 / 0.01 / 0.02 / 1 -- small, medium, large.
  A word outside ``[first edge, 1)`` is in no bucket and is dropped.
* **Source size**: the ratio is always measured on the source image (TokBench's annotations),
  whatever resolution policy prepares it. A centre crop (``--resolution N``) can cut words
  out of the evaluated image: they are counted as ``dropped_crop`` and not scored (TokBench
  has no crop: ``letterbox:N``, which its preset uses, keeps every word).
* **Refine**: ground-truth words that the recognizer misreads (not an exact raw match) on
  the *original* image are dropped before scoring any reconstruction.
* **Pooling**: every kept word of the dataset goes into its bucket; each bucket's score is
  the mean over its words (not per image first); the headline ``mean`` is the unweighted
  mean of the three bucket means. An empty bucket has no mean (TokBench's ``np.mean([])``
  is NaN, and so is its headline): here both are left out of the results, with the reason.
"""
from __future__ import annotations

from dataclasses import dataclass

from rapidfuzz.distance import Levenshtein

BUCKETS = ("small", "medium", "large")
# compute_all_metrics.py, ratio_ranges: bucket edges by resolution setting.
RATIO_EDGES: dict[int, tuple[float, float, float, float]] = {
    256: (0.02, 0.03, 0.04, 1.0),
    512: (0.01, 0.02, 0.03, 1.0),
    1024: (0.005, 0.01, 0.02, 1.0),
}
SETTINGS = tuple(RATIO_EDGES)


def check_setting(setting: int) -> int:
    """``setting`` if TokBench defines thresholds for it, else a ``ValueError`` naming those it does."""
    if setting not in RATIO_EDGES:
        raise ValueError(f"TokBench's text protocol has size buckets for {', '.join(map(str, SETTINGS))} px images "
                         f"only, not {setting}")
    return setting


def word_ratio(box: list[float], text: str, image_hw: tuple[int, int]) -> float:
    """TokBench's size measure: (box width / characters in the word) / the image's longer side.

    ``box = [x0, y0, x1, y1]`` in the pixels of an image of size ``image_hw = (H, W)``.
    """
    if not text:
        raise ValueError("a ground-truth word is empty: TokBench's scores are undefined for it")
    if min(image_hw) <= 0:
        raise ValueError(f"image size must be positive, got {image_hw}")
    return (box[2] - box[0]) / len(text) / max(image_hw)


def bucket_of(ratio: float, setting: int) -> str | None:
    """small / medium / large for ``ratio`` at ``setting`` px, or None (dropped: too small or >= 1)."""
    edges = RATIO_EDGES[check_setting(setting)]
    for name, low, high in zip(BUCKETS, edges[:-1], edges[1:]):
        if low <= ratio < high:
            return name
    return None


def word_scores(ground_truth: str, prediction: str) -> tuple[float, float]:
    """(exact raw match 0/1, 1 - normalized edit distance), case-sensitive, no normalization."""
    if not ground_truth:
        raise ValueError("a ground-truth word is empty: TokBench's NED divides by zero for it")
    ned = Levenshtein.distance(ground_truth, prediction) / max(len(ground_truth), len(prediction))
    return float(ground_truth == prediction), 1.0 - ned


@dataclass(frozen=True)
class WordResult:
    """One ground-truth word: its size ratio and what the recognizer read on the original and the reconstruction."""

    text: str
    ratio: float
    original_reading: str | None  # None: not read (a word outside every bucket is dropped unread)
    reconstruction_reading: str | None
    cut_by_crop: bool = False  # in a bucket, but a centre crop cut it out of the evaluated image: dropped


@dataclass
class ProtocolSummary:
    """Pooled scores by bucket (``tacc_small`` ... ``tned_mean``), word counts, and the metrics left out (with why)."""

    metrics: dict[str, float]
    counts: dict[str, int]
    missing: dict[str, str]


def summarize(words: list[WordResult], setting: int, refine: bool = True, reading: str = "reconstruction") -> ProtocolSummary:
    """TokBench's figures over a whole dataset's words (see the module docstring).

    ``reading``: score the ``"reconstruction"`` readings, or the ``"original"`` ones (the
    identity upper bound; with ``refine`` its accuracy is 1 by construction).
    """
    if reading not in ("reconstruction", "original"):
        raise ValueError(f"reading must be 'reconstruction' or 'original', got {reading!r}")
    pooled: dict[str, list[tuple[float, float]]] = {b: [] for b in BUCKETS}
    counts = {"words": len(words), "dropped_size": 0, "dropped_crop": 0, "dropped_refine": 0,
              **{f"sized_{b}": 0 for b in BUCKETS}}
    for word in words:
        bucket = bucket_of(word.ratio, setting)
        if bucket is None:
            counts["dropped_size"] += 1
            continue
        counts[f"sized_{bucket}"] += 1  # TokBench's size bucket, before the crop and refine drop words
        if word.cut_by_crop:
            counts["dropped_crop"] += 1
            continue
        if refine and word.original_reading != word.text:
            counts["dropped_refine"] += 1
            continue
        pred = word.reconstruction_reading if reading == "reconstruction" else word.original_reading
        pooled[bucket].append(word_scores(word.text, pred))
    metrics, missing = {}, {}
    for bucket, scores in pooled.items():
        counts[bucket] = len(scores)
        if scores:
            metrics[f"tacc_{bucket}"] = sum(a for a, _ in scores) / len(scores)
            metrics[f"tned_{bucket}"] = sum(n for _, n in scores) / len(scores)
        else:
            why = f"no {bucket} words at {setting} px (TokBench's mean of an empty bucket is NaN)"
            missing[f"tacc_{bucket}"] = missing[f"tned_{bucket}"] = why
    for kind in ("tacc", "tned"):
        means = [metrics.get(f"{kind}_{b}") for b in BUCKETS]
        if all(m is not None for m in means):
            metrics[f"{kind}_mean"] = sum(means) / len(means)
        else:
            missing[f"{kind}_mean"] = "a bucket has no words: TokBench's mean of the bucket means would be NaN"
    return ProtocolSummary(metrics, counts, missing)
