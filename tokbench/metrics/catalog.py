"""Declarations of tokbench's built-in metrics (importing this module registers them).

Order matters for display: tables list a task's metrics in the order declared here.
"""
from __future__ import annotations

import math

from tokbench.metrics.declaration import Metric, register_metrics

INF = math.inf
TEXT_SIZE_BUCKETS = ("small", "medium", "large", "all")

IMAGE_QUALITY = (
    Metric("psnr", "PSNR", "peak signal-to-noise ratio of the 8-bit RGB images, per image (identical images: 100)",
           True, unit="dB", low=0.0, high=100.0),
    Metric("ssim", "SSIM", "structural similarity on 8-bit RGB, Gaussian window 11, sigma 1.5", True, low=-1.0, high=1.0),
    Metric("ssim_llamagen", "SSIM (LlamaGen)", "SSIM as LlamaGen's tables report it: scikit-image defaults (7x7 "
           "uniform window, sample covariance) on [0, 1] images with data_range 2.0; not comparable with ssim",
           True, low=-1.0, high=1.0),
    Metric("lpips", "LPIPS", "learned perceptual distance (AlexNet, v0.1) on [-1, 1] inputs", False, low=0.0, high=2.0,
           weights="lpips", network="tokbench.metrics.perceptual:load_lpips"),
)

RECONSTRUCTION = (
    Metric("rfid", "rFID", "Frechet distance of Inception-v3 pool features, originals vs reconstructions (one value "
           "over the dataset)", False, low=0.0, aggregation="dataset", weights="rfid",
           network="tokbench.metrics.fid:load_inception_features"),
)

DETAIL = (
    Metric("energy_kept", "energy kept", "spectral energy of the reconstruction over the original's, "
           "averaged over frequency bands and capped at 1 per band", True, low=0.0, high=1.0),
    Metric("resolved_frequency", "resolved frequency", "highest grating frequency whose modulation survives "
           "(dataset-level: one value per grating orientation)", True, unit="cycles/px", low=0.0, high=0.5),
    Metric("edge_f1", "edge F1", "F1 of Canny edges of the reconstruction against the original's (1 px tolerance)",
           True, low=0.0, high=1.0),
)

_BUCKET_TITLE = {"small": "small text", "medium": "medium text", "large": "large text", "all": "all words"}
TEXT = (
    Metric("cer_gt", "CER vs ground truth", "character error rate of the reconstruction's page OCR against the "
           "ground-truth text", False, low=0.0),
    Metric("wer_gt", "WER vs ground truth", "word error rate of the reconstruction's page OCR against the "
           "ground-truth text", False, low=0.0),
    Metric("cer_ocr", "CER vs OCR of original", "character error rate of the reconstruction's OCR against the "
           "original's OCR (images whose original reads as empty are excluded)", False, low=0.0),
    Metric("wer_ocr", "WER vs OCR of original", "word error rate of the reconstruction's OCR against the original's "
           "OCR (images whose original reads as empty are excluded)", False, low=0.0),
    *(Metric(f"word_acc_{b}", f"word accuracy, {_BUCKET_TITLE[b]}", f"share of ground-truth words ({b} bucket) read "
             "exactly from their box in the reconstruction", True, low=0.0, high=1.0) for b in TEXT_SIZE_BUCKETS),
    *(Metric(f"word_ned_{b}", f"word similarity, {_BUCKET_TITLE[b]}", f"1 - normalized edit distance of the words "
             f"({b} bucket) read from their boxes in the reconstruction", True, low=0.0, high=1.0)
      for b in TEXT_SIZE_BUCKETS),
)

# TokBench's T-ACC / T-NED (`tokbench.metrics.tokbench_text`), reported with --text-protocol tokbench.
# The leaderboard's TokBench view shows exactly these names.
_TB_RANGE = {"small": "TokBench's small", "medium": "TokBench's medium", "large": "TokBench's large"}
TOKBENCH_TEXT = (
    *(Metric(f"tacc_{b}", f"T-ACC, {b} text", f"share of ground-truth words in {_TB_RANGE[b]} size bucket read "
             "exactly (case-sensitive, raw strings) from their box in the reconstruction, pooled over the dataset's "
             "words (TokBench protocol)", True, low=0.0, high=1.0, aggregation="dataset", percent=True)
      for b in ("small", "medium", "large")),
    Metric("tacc_mean", "T-ACC, mean", "unweighted mean of the small, medium and large T-ACC (TokBench's headline)",
           True, low=0.0, high=1.0, aggregation="dataset", percent=True),
    *(Metric(f"tned_{b}", f"T-NED, {b} text", f"1 - normalized edit distance (raw strings) of the words in "
             f"{_TB_RANGE[b]} size bucket, pooled over the dataset's words (TokBench protocol)", True, low=0.0,
             high=1.0, aggregation="dataset", percent=True) for b in ("small", "medium", "large")),
    Metric("tned_mean", "T-NED, mean", "unweighted mean of the small, medium and large T-NED (TokBench's headline)",
           True, low=0.0, high=1.0, aggregation="dataset", percent=True),
)

_FACE_BUCKET = {"small": "small faces", "medium": "medium faces", "large": "large faces"}
FACES = (
    *(Metric(f"face_sim_{b}", f"F-Sim, {_FACE_BUCKET[b]}", f"cosine similarity of dlib's 128-d face descriptor, "
             f"original vs reconstruction at the original's landmarks, pooled over the dataset's {b} faces "
             "(TokBench's size buckets)", True, low=-1.0, high=1.0, aggregation="dataset") for b in _FACE_BUCKET),
    Metric("face_sim_mean", "F-Sim, mean", "mean of the per-bucket face similarities (small, medium, large; buckets "
           "without faces left out), as TokBench's table averages its buckets", True, low=-1.0, high=1.0,
           aggregation="dataset"),
)

GENERATION = (
    Metric("nll_bits_per_image", "prior NLL per image", "negative log-likelihood of held-out images' tokens under "
           "the AR prior fitted on the other images' tokens", False, unit="bits", low=0.0),
    Metric("nll_bits_per_token", "prior NLL per token", "the prior's held-out NLL divided by the tokens per image",
           False, unit="bits", low=0.0),
    Metric("nll_fraction_of_raw", "prior NLL / raw bits", "the prior's held-out NLL over the raw size "
           "tokens x log2(vocabulary): comparable across vocabularies", False, low=0.0),
    Metric("unigram_bits_per_image", "unigram NLL per image", "negative log-likelihood of held-out images' tokens "
           "under the training tokens' add-one smoothed frequencies: the cost without any learned structure",
           False, unit="bits", low=0.0),
    Metric("diffusion_loss", "diffusion loss", "held-out denoising loss of the continuous generator's diffusion "
           "head (mean squared noise error per normalised latent channel, fixed timesteps and noise): lower = "
           "latents easier to model; not a likelihood, not comparable with the discrete NLL", False, low=0.0),
    Metric("ar_probe_top1", "AR probe top-1", "linear-probe accuracy (GigaTok's AR probing) on held-out images' "
           "crops: logistic regression on the fitted generator's middle-block features averaged over positions, "
           "standardised, L2 chosen on held-out training images", True, low=0.0, high=1.0),
    Metric("latent_probe_top1", "token probe top-1", "the same linear probe on the tokens themselves: latents, or "
           "the codewords of the ids, averaged over positions", True, low=0.0, high=1.0),
    Metric("gfid", "gFID", "Frechet distance of Inception features, generated samples vs real images", False,
           low=0.0, aggregation="dataset"),
)

# Scores of generated samples against a reference set (`tokbench gen score`,
# `tokbench.generation.scoring`), with the same Inception as rFID.
_GEN_INCEPTION = dict(aggregation="dataset", weights="rfid",
                      network="tokbench.metrics.fid:load_inception_generation_features")
SAMPLE_QUALITY = (
    Metric("inception_score", "IS", "Inception Score exp(E KL(p(y|x) || p(y))) of generated samples from the "
           "Inception's bias-free logits (1008 classes), mean over 10 contiguous splits (or over "
           "ADM's consecutive 5,000-sample splits: gen score --is-split-size 5000)", True, low=1.0,
           high=1008.0, **_GEN_INCEPTION),
    Metric("precision", "precision", "share of generated samples inside the k=3 nearest-neighbour balls of the "
           "real images' Inception pool features (Kynkaanniemi et al. 2019, as ADM's evaluator)", True, low=0.0,
           high=1.0, **_GEN_INCEPTION),
    Metric("recall", "recall", "share of real images inside the k=3 nearest-neighbour balls of the generated "
           "samples' Inception pool features (Kynkaanniemi et al. 2019, as ADM's evaluator)", True, low=0.0,
           high=1.0, **_GEN_INCEPTION),
)

register_metrics((*IMAGE_QUALITY, *RECONSTRUCTION, *DETAIL, *TEXT, *TOKBENCH_TEXT, *FACES, *GENERATION, *SAMPLE_QUALITY))
