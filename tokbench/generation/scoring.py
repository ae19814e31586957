"""Scoring generated samples: gFID, Inception Score and precision/recall against a reference.

The pure functions work on feature arrays:

* `precision_recall` -- improved precision and recall (Kynkäänniemi et al. 2019) with ``k = 3``,
  as the ADM evaluator (openai/guided-diffusion ``evaluations/evaluator.py``) computes it:
  each set's manifold is the union of balls around its points whose radius is the distance to
  the point's k-th nearest neighbour within the set (the point itself not counted); precision
  is the share of generated points inside some real point's ball, recall the share of real
  points inside some generated point's ball (``<=``, squared Euclidean distances, blocks of
  rows x columns so that no ``N x N`` matrix is held).
* `inception_score` -- ``exp(E_x KL(p(y|x) || p(y)))`` over contiguous splits (10 by default:
  for 50,000 samples exactly ADM's 5,000-sample splits), mean and standard deviation over
  splits. Logits are the bias-free ones (torch-fidelity's ``logits_unbiased``, as ADM's and
  torch-fidelity's IS use).
* gFID -- `tokbench.metrics.fid.frechet_distance` of the samples' pool-feature statistics
  against the reference's (an ADM batch's own ``mu``/``sigma`` when given).

`score_samples` streams images in batches through a feature function (memory holds one image
batch plus the features), so the same code scores with the real Inception
(`tokbench.metrics.fid.load_inception_generation_features`) or with a stand-in in tests.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import Callable, Iterable

import numpy as np
import torch
from scipy.special import log_softmax, logsumexp

from tokbench.generation.sources import ImageSource, Samples, open_samples
from tokbench.metrics.fid import frechet_distance

# uint8 (B, 3, H, W) -> (pool features (B, F), logits (B, C)); an ``extractor_id`` attribute,
# when present, names the extractor in reference-cache fingerprints.
FeatureFn = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]

DEFAULT_K = 3
DEFAULT_IS_SPLITS = 10
DEFAULT_BATCH_SIZE = 50
PR_BLOCK = 4096  # rows/columns of one distance block: 4096 x 4096 float32 = 64 MiB


def extractor_id(feature_fn: FeatureFn) -> str:
    """What identifies ``feature_fn`` in a cache fingerprint: its ``extractor_id`` attribute,
    else its module and qualified name."""
    given = getattr(feature_fn, "extractor_id", None)
    if given:
        return str(given)
    return f"{getattr(feature_fn, '__module__', '?')}.{getattr(feature_fn, '__qualname__', type(feature_fn).__name__)}"


# --------------------------------------------------------------------------- pure functions

def _features_2d(name: str, x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name}: expected a non-empty (N, F) feature array, got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name}: features contain NaN or infinite values")
    return x


def _sq_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances of every row of ``a`` to every row of ``b`` (clamped at 0)."""
    d = (a * a).sum(1, keepdim=True) - 2.0 * (a @ b.T) + (b * b).sum(1)[None, :]
    return d.clamp_min_(0.0)


def knn_radii(features_NF: torch.Tensor, k: int = DEFAULT_K, block: int = PR_BLOCK) -> torch.Tensor:
    """Squared distance of each point to its k-th nearest neighbour in the same set (itself
    excluded: the (k+1)-th smallest distance, the point's own 0 being the first)."""
    n = features_NF.shape[0]
    radii = torch.empty(n, dtype=features_NF.dtype, device=features_NF.device)
    for r0 in range(0, n, block):
        rows = features_NF[r0:r0 + block]
        best = None  # the k+1 smallest distances so far, per row
        for c0 in range(0, n, block):
            d = _sq_distances(rows, features_NF[c0:c0 + block])
            cand = d if best is None else torch.cat([best, d], dim=1)
            best = torch.topk(cand, min(k + 1, cand.shape[1]), dim=1, largest=False).values
        radii[r0:r0 + block] = best[:, k]
    return radii


def precision_recall(real_NF: np.ndarray, fake_NF: np.ndarray, k: int = DEFAULT_K,
                     device: str | torch.device = "cpu", block: int = PR_BLOCK) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) of ``fake_NF`` against ``real_NF``.

    Returns ``(precision, recall)``: the share of fake points within the k-NN ball of some real
    point, and the share of real points within the k-NN ball of some fake point. Distances are
    computed in float32 on ``device`` (ADM uses float16) after centering both sets on the real
    mean, which keeps round-off small; ``ValueError`` for sets smaller than ``k + 1`` or
    feature dimensions that differ.
    """
    real, fake = _features_2d("real features", real_NF), _features_2d("fake features", fake_NF)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if real.shape[1] != fake.shape[1]:
        raise ValueError(f"real features are {real.shape[1]}-d but fake features are {fake.shape[1]}-d; "
                         "both sets must come from the same feature extractor")
    for name, x in (("reference", real), ("sample", fake)):
        if x.shape[0] < k + 1:
            raise ValueError(f"precision/recall with k={k} needs at least {k + 1} {name} images "
                             f"(a k-th nearest neighbour besides the point itself), got {x.shape[0]}")
    center = torch.as_tensor(real.mean(0, dtype=np.float64), dtype=torch.float32, device=device)
    real_t = torch.as_tensor(real, dtype=torch.float32, device=device) - center
    fake_t = torch.as_tensor(fake, dtype=torch.float32, device=device) - center
    r_real, r_fake = knn_radii(real_t, k, block), knn_radii(fake_t, k, block)
    fake_in = torch.zeros(fake_t.shape[0], dtype=torch.bool, device=device)
    real_in = torch.zeros(real_t.shape[0], dtype=torch.bool, device=device)
    for r0 in range(0, real_t.shape[0], block):
        for c0 in range(0, fake_t.shape[0], block):
            d = _sq_distances(real_t[r0:r0 + block], fake_t[c0:c0 + block])  # real rows x fake columns
            fake_in[c0:c0 + block] |= (d <= r_real[r0:r0 + block, None]).any(0)
            real_in[r0:r0 + block] |= (d <= r_fake[None, c0:c0 + block]).any(1)
    return float(fake_in.double().mean()), float(real_in.double().mean())


def inception_score(logits_NC: np.ndarray, splits: int = DEFAULT_IS_SPLITS,
                    split_size: int | None = None) -> tuple[float, float]:
    """Inception Score ``exp(E_x KL(p(y|x) || p(y)))`` from classifier logits: ``(mean, std)``
    over ``splits`` contiguous, near-equal splits (``numpy.array_split``; no shuffling).

    ``split_size``: instead, consecutive splits of that many samples, the last one holding the
    remainder -- ADM's evaluator (``compute_inception_score``, 5,000 per split): 12,000 samples
    give splits of 5,000, 5,000 and 2,000; fewer than 5,000 give one split.
    Uniform predictions give 1; confident predictions spread evenly over C classes give C.
    """
    logits = _features_2d("logits", logits_NC).astype(np.float64)
    if split_size is not None:
        if split_size < 1:
            raise ValueError(f"split_size must be >= 1, got {split_size}")
        parts = [logits[i : i + split_size] for i in range(0, logits.shape[0], split_size)]
    else:
        if splits < 1:
            raise ValueError(f"splits must be >= 1, got {splits}")
        if logits.shape[0] < splits:
            raise ValueError(f"the Inception Score over {splits} splits needs at least {splits} samples, "
                             f"got {logits.shape[0]}")
        parts = np.array_split(logits, splits)
    scores = []
    for part in parts:
        log_p = log_softmax(part, axis=1)
        log_marginal = logsumexp(log_p, axis=0) - np.log(part.shape[0])
        kl = float((np.exp(log_p) * (log_p - log_marginal)).sum(1).mean())
        scores.append(np.exp(max(kl, 0.0)))  # KL >= 0; round-off must not give IS < 1
    return float(np.mean(scores)), float(np.std(scores))


def feature_statistics(features_NF: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (float64, ``np.cov`` with N-1) of a feature set, as FID uses them."""
    x = _features_2d("features", features_NF).astype(np.float64)
    if x.shape[0] < 2:
        raise ValueError(f"FID needs at least 2 images for a covariance, got {x.shape[0]}")
    return x.mean(0), np.cov(x, rowvar=False)


def fid_from_statistics(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """`frechet_distance` after checking that both statistics have the same dimension; clamped at 0."""
    mu1, mu2 = np.atleast_1d(mu1), np.atleast_1d(mu2)
    sigma1, sigma2 = np.atleast_2d(sigma1), np.atleast_2d(sigma2)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape or sigma1.shape != (mu1.shape[0],) * 2:
        raise ValueError(f"FID statistics do not match: mean {mu1.shape} / covariance {sigma1.shape} against "
                         f"mean {mu2.shape} / covariance {sigma2.shape} (were they computed with the same network?)")
    return max(0.0, frechet_distance(mu1, sigma1, mu2, sigma2))


def fid_of_features(features_NF: np.ndarray, mu: np.ndarray, sigma: np.ndarray) -> float:
    """FID of a feature set against statistics ``mu``/``sigma``: `fid_from_statistics`, or, when the
    set has fewer points than dimensions, the same value through its N x N Gram form.

    With ``S1 = A^T A / (N - 1)`` (``A`` the centered features), the non-zero eigenvalues of
    ``S1 S2`` are those of the symmetric ``A S2 A^T / (N - 1)``, so ``Tr((S1 S2)^(1/2))`` needs one
    N x N eigendecomposition instead of two F x F ones (20 samples of 2048-d features: a
    20 x 20 problem, not 2048 x 2048).
    """
    x = _features_2d("features", features_NF).astype(np.float64)
    n, f = x.shape
    if n < 2:
        raise ValueError(f"FID needs at least 2 images for a covariance, got {n}")
    if n - 1 >= f:
        return fid_from_statistics(*feature_statistics(x), mu, sigma)
    mu, sigma = np.atleast_1d(np.asarray(mu, np.float64)), np.atleast_2d(np.asarray(sigma, np.float64))
    if mu.shape != (f,) or sigma.shape != (f, f):
        raise ValueError(f"FID statistics do not match: {f}-d features against mean {mu.shape} / covariance "
                         f"{sigma.shape} (were they computed with the same network?)")
    mean = x.mean(0)
    a = x - mean
    inner = np.linalg.eigvalsh(a @ sigma @ a.T / (n - 1))
    diff = mean - mu
    value = diff @ diff + (a * a).sum() / (n - 1) + np.trace(sigma) - 2 * np.sqrt(np.clip(inner, 0, None)).sum()
    return max(0.0, float(value))


# --------------------------------------------------------------------------- streaming

def extract_features(batches: Iterable[np.ndarray], feature_fn: FeatureFn,
                     progress: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Run ``feature_fn`` on uint8 ``(B, H, W, 3)`` batches: ``(pool (N, F), logits (N, C))`` float32.
    ``progress``: a progress bar with this label (images per second) on stderr."""
    from tqdm import tqdm

    pools, logits = [], []
    bar = tqdm(desc=progress, unit="img", disable=progress is None)
    for batch in batches:
        bar.update(len(batch))
        x = torch.from_numpy(np.require(batch, dtype=np.uint8, requirements=["C", "W"])).permute(0, 3, 1, 2)
        out = feature_fn(x)
        if not (isinstance(out, (tuple, list)) and len(out) == 2):
            raise TypeError("a feature function must return (pool features (B, F), logits (B, C))")
        pool, logit = (torch.as_tensor(t).detach().float().cpu().reshape(len(batch), -1).numpy() for t in out)
        pools.append(pool)
        logits.append(logit)
    bar.close()
    if not pools:
        raise ValueError("no images to score (the set is empty)")
    return np.concatenate(pools), np.concatenate(logits)


@dataclass(frozen=True)
class GenerationScores:
    """What `score_samples` measured (``asdict`` gives a JSON-ready view without the features)."""

    gfid: float
    inception_score: float
    inception_score_std: float
    precision: float
    recall: float
    num_samples: int
    num_reference: int
    k: int
    is_splits: int
    feature_dim: int
    reference_stats: str  # "npz mu/sigma" (an ADM batch's own statistics) or "features"

    def to_dict(self) -> dict:
        return asdict(self)


def score_features(sample_pool: np.ndarray, sample_logits: np.ndarray, reference, *, k: int = DEFAULT_K,
                   is_splits: int = DEFAULT_IS_SPLITS, is_split_size: int | None = None,
                   device: str | torch.device = "cpu") -> GenerationScores:
    """Scores of already-extracted sample features against a `tokbench.generation.reference.Reference`.

    ``is_split_size``: Inception Score over consecutive splits of that many samples (ADM: 5,000)
    instead of ``is_splits`` equal ones; ``is_splits`` then records how many splits that made."""
    if sample_pool.shape[1] != reference.features.shape[1]:
        raise ValueError(f"sample features are {sample_pool.shape[1]}-d but the reference's are "
                         f"{reference.features.shape[1]}-d (computed with another feature extractor?)")
    gfid = fid_of_features(sample_pool, reference.mu, reference.sigma)
    is_mean, is_std = inception_score(sample_logits, is_splits, split_size=is_split_size)
    if is_split_size is not None:
        is_splits = -(-int(sample_logits.shape[0]) // is_split_size)
    precision, recall = precision_recall(reference.features, sample_pool, k, device=device)
    return GenerationScores(gfid=gfid, inception_score=is_mean, inception_score_std=is_std, precision=precision,
                            recall=recall, num_samples=int(sample_pool.shape[0]),
                            num_reference=int(reference.num_images), k=k, is_splits=is_splits,
                            feature_dim=int(sample_pool.shape[1]), reference_stats=reference.stats_source)


def score_samples(samples: ImageSource | Samples, reference, feature_fn: FeatureFn, *,
                  batch_size: int = DEFAULT_BATCH_SIZE, k: int = DEFAULT_K, is_splits: int = DEFAULT_IS_SPLITS,
                  cache_dir: str | os.PathLike | None = None, device: str | torch.device = "cpu") -> GenerationScores:
    """gFID, Inception Score and precision/recall of generated ``samples`` against ``reference``.

    ``samples``: a folder of images (its ``manifest.json`` is honoured), an ADM ``.npz`` whose
    ``arr_0`` is uint8 ``(N, H, W, 3)``, an iterable of uint8 ``(H, W, 3)`` images or
    ``(B, H, W, 3)`` batches, or an opened `Samples`. ``reference``: a
    `tokbench.generation.reference.Reference`, or a path (image folder or ADM reference batch)
    loaded with `load_reference` (its features cached under ``cache_dir``). ``feature_fn`` maps
    uint8 ``(B, 3, H, W)`` to ``(pool features, logits)``: the real one is
    `tokbench.metrics.fid.load_inception_generation_features`. Images are read ``batch_size`` at
    a time; ``device`` is where the precision/recall distances are computed.
    """
    from tokbench.generation.reference import Reference, load_reference

    if not isinstance(reference, Reference):
        reference = load_reference(reference, feature_fn, batch_size=batch_size, cache_dir=cache_dir)
    opened = samples if isinstance(samples, Samples) else open_samples(samples)
    pool, logits = extract_features(opened.batches(batch_size), feature_fn)
    return score_features(pool, logits, reference, k=k, is_splits=is_splits, device=device)
