"""Linear probing of the generation measure (GigaTok's "AR probing"): how linearly separable the
classes of a labelled dataset are in the features of the small AR generator fitted on a
tokenizer's tokens (``ar_probe_top1``), and in the tokens themselves (``latent_probe_top1``).

GigaTok (Xiong et al., 2025) found that the linear-probe accuracy of a small AR model's
intermediate features tracks the generation quality of larger AR models better than rFID.

The recipe is fixed, so numbers compare across tokenizers:

* features: the generator's output of its middle block (after ``ceil(depth / 2)`` blocks; EMA
  weights), teacher-forced on a crop's token sequence and averaged over the positions; for
  the tokenizer-level probe, the crop's latents (continuous tokens) or the codewords of its
  ids (discrete tokens with one codebook), averaged over the positions;
* the classifier: multinomial logistic regression on standardised features (mean and std of
  the fitting crops), L2-regularised with ``C`` from {1e-3, ..., 1e2}, chosen by top-1 on a
  held-out part of the training images (every 5th; ties to the stronger regularisation),
  then refitted on all training images' crops with that ``C``;
* the score: on the generation measure's held-out images (never seen by the generator or the
  probe), each image's share of crops classified correctly; its mean and interval over images.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

C_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)
VAL_EVERY = 5  # every 5th training image chooses the regularisation


@dataclass
class ProbeResult:
    top1_per_image: list[float]  # held-out images: share of each image's crops classified correctly
    C: float  # the chosen inverse regularisation strength
    val_top1: float  # top-1 on the selection split with that C
    chance: float  # the share of the most frequent class among the training crops

    def summary(self) -> dict:
        return {"C": self.C, "selection_top1": round(self.val_top1, 4), "majority_class_rate": round(self.chance, 4)}


def _fit(features_ND: np.ndarray, labels_N: np.ndarray, C: float, seed: int):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(C=C, max_iter=2000, random_state=seed))
    return clf.fit(features_ND, labels_N)


def linear_probe(features: dict[int, np.ndarray], labels: dict[int, int], train: list[int], test: list[int],
                 seed: int = 0) -> ProbeResult:
    """Fit the probe on the crops of the ``train`` images and score it on those of ``test``.

    ``features[i]``: ``(crops, D)`` features of image ``i``'s crops; ``labels[i]``: its class.
    ``ValueError`` when the training images do not hold two classes to tell apart.
    """
    val = [i for j, i in enumerate(train) if j % VAL_EVERY == VAL_EVERY - 1] or train[-1:]
    fit = [i for i in train if i not in val]

    def stack(images: list[int]) -> tuple[np.ndarray, np.ndarray]:
        x = np.concatenate([features[i] for i in images]).astype(np.float64)
        return x, np.concatenate([np.full(len(features[i]), labels[i]) for i in images])

    if len({labels[i] for i in fit}) < 2:
        raise ValueError(f"the probe needs training images of at least 2 classes; the {len(fit)} fitting images "
                         f"hold {len({labels[i] for i in fit})}")
    x_fit, y_fit = stack(fit)
    x_val, y_val = stack(val)
    scores = [float((_fit(x_fit, y_fit, C, seed).predict(x_val) == y_val).mean()) for C in C_GRID]
    best = int(np.argmax(scores))  # the first maximum: the strongest regularisation among ties
    x_train, y_train = stack(train)
    clf = _fit(x_train, y_train, C_GRID[best], seed)
    per_image = [float((clf.predict(features[i].astype(np.float64)) == labels[i]).mean()) for i in test]
    chance = float(np.bincount(y_train).max() / len(y_train))
    return ProbeResult(per_image, C_GRID[best], scores[best], chance)


def middle_block(model: torch.nn.Module) -> torch.nn.Module:
    """The generator's block whose output the probe reads: after ``ceil(depth / 2)`` blocks."""
    blocks = model.blocks
    return blocks[(len(blocks) + 1) // 2 - 1]


@torch.no_grad()
def generator_features(module, seqs: torch.Tensor, batch_size: int = 64) -> np.ndarray:
    """``(N, W)``: the (EMA) generator's middle-block output for each teacher-forced sequence,
    averaged over positions. ``module``: a fitted `GeneratorModule`; ``seqs``: ``(N, L)`` ids or
    ``(N, L, C)`` latents in generation order, as it was trained on."""
    model, arch = module.ema, module.hparams.arch
    device = next(model.parameters()).device
    pooled: list[torch.Tensor] = []
    hook = middle_block(model).register_forward_hook(lambda _m, _i, out: pooled.append(out.float().mean(1).cpu()))
    try:
        for start in range(0, len(seqs), batch_size):
            chunk = seqs[start:start + batch_size].to(device)
            if arch == "mar":
                model.conditions(chunk.float())
            elif arch == "next_scale":
                model(module._inputs(chunk.long()))
            else:
                model(chunk.long())
    finally:
        hook.remove()
    return torch.cat(pooled).numpy()


def token_features(tokenizer, seqs: torch.Tensor) -> np.ndarray:
    """``(N, D)``: each sequence's latents, or the codewords of its ids, averaged over positions.
    ``ValueError`` for discrete tokenizers without a single codebook to look ids up in."""
    if seqs.is_floating_point():
        return seqs.float().mean(1).numpy()
    quantizer = getattr(tokenizer, "quantize", None)
    books = quantizer.codebooks() if quantizer is not None and hasattr(quantizer, "codebooks") else []
    if len(books) != 1:
        raise ValueError(f"{type(tokenizer).__name__} exposes no single codebook (tokenizer.quantize.codebooks()) "
                         "to embed its ids")
    with torch.no_grad():
        codebook_KD = books[0].codebook().detach().float().cpu()
    return codebook_KD[seqs.long()].mean(1).numpy()


def run_probes(module, tokenizer, train_seqs: dict[int, torch.Tensor], held_seqs: dict[int, torch.Tensor],
               labels: list[int] | None, seed: int = 0) -> tuple[dict[str, list[float]], dict, dict[str, str]]:
    """Both probes of the generation measure: ``(metrics per held-out image, extra, skipped reasons)``.

    ``train_seqs`` / ``held_seqs``: image index -> the token sequences of its crops; ``labels``:
    the class of each image (``None`` or ``-1`` entries: unlabelled data, both probes skipped)."""
    names = ("ar_probe_top1", "latent_probe_top1")
    if labels is None or min(labels[i] for i in (*train_seqs, *held_seqs)) < 0:
        return {}, {}, dict.fromkeys(names, "no class labels (a labelled folder DIR/CLASS/IMAGE gives them)")
    by_image = {i: int(labels[i]) for i in (*train_seqs, *held_seqs)}
    train, test = list(train_seqs), list(held_seqs)
    metrics, extra, skipped = {}, {}, {}
    feature_sources = {"ar_probe_top1": lambda seqs: generator_features(module, seqs),
                       "latent_probe_top1": lambda seqs: token_features(tokenizer, seqs)}
    for name, features_of in feature_sources.items():
        try:
            features = {i: features_of(seqs) for i, seqs in (*train_seqs.items(), *held_seqs.items())}
            result = linear_probe(features, by_image, train, test, seed)
        except ValueError as err:
            skipped[name] = str(err)
            continue
        metrics[name] = result.top1_per_image
        extra[name] = result.summary()
    if extra:
        extra["recipe"] = (f"logistic regression on standardised features averaged over positions (generator: its "
                           f"middle block), L2 with C chosen from {list(C_GRID)} on every {VAL_EVERY}th training "
                           "image; top-1 per held-out image over its crops")
        extra["classes"] = len(set(by_image.values()))
    return metrics, extra, skipped
