"""The generation measure of `tokbench eval`: fit a small generator on a tokenizer's tokens of
some images, score the likelihood of held-out images' tokens, and draw samples.

Images are split by image (never crops of one image on both sides): every ``k``-th image is
held out. Each image gives ``crops_per_image`` random crops (35-100% of the shorter side,
random flips) resized to ``image_size``, so a small suite still yields enough sequences to
fit a small generator. The held-out score is each image's mean over its crops; the interval
is over held-out images. Next to it, the held-out bits under a unigram model of the training
tokens (their frequencies, add-one smoothed): what a generator that learned no structure
at all would pay, so a reader sees what the generator learned.

Read the NLL next to the distortion: a tokenizer that drops information (a coarser grid, a
smaller vocabulary, blurrier codes) has tokens that are easier to model, so its NLL falls.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF

from tokbench.generation.presets import default_arch
from tokbench.generation.probe import run_probes
from tokbench.generation.sample import SamplingSettings, draw_batch
from tokbench.generation.settings import GenerationSettings
from tokbench.generation.sequence import generation_order, latents_to_sequence, to_sequence
from tokbench.generation.training import fit_in_memory


@dataclass
class GenerationResult:
    metrics: dict[str, list[float]]  # metric name -> its value on each held-out image
    samples_B3HW: torch.Tensor  # decoded samples in [0, 1]
    extra: dict
    skipped: dict[str, str] = field(default_factory=dict)  # metric name -> why it was not computed


def random_crops(image_HW3: np.ndarray, size: int, count: int, generator: torch.Generator) -> torch.Tensor:
    """``(count, 3, size, size)`` float crops in [0, 1] of one uint8 image."""
    x_3HW = torch.from_numpy(np.ascontiguousarray(image_HW3)).permute(2, 0, 1)
    H, W = x_3HW.shape[-2:]
    out = []
    for _ in range(count):
        side = max(1, int(min(H, W) * (0.35 + 0.65 * torch.rand((), generator=generator).item())))
        top = int(torch.randint(0, H - side + 1, (), generator=generator))
        left = int(torch.randint(0, W - side + 1, (), generator=generator))
        crop = TF.resized_crop(x_3HW, top, left, side, side, [size, size], antialias=True)
        if torch.rand((), generator=generator).item() < 0.5:
            crop = TF.horizontal_flip(crop)
        out.append(crop)
    return torch.stack(out).float() / 255


@torch.no_grad()
def encode_sequences(tokenizer, images_B3HW: torch.Tensor, batch_size: int, device: str) -> torch.Tensor:
    """``(N, L)`` ids in generation order, or ``(N, L, C)`` latents in raster order."""
    def sequence(tokens):
        return latents_to_sequence(tokens) if tokens.latents is not None else to_sequence(tokens)

    seqs = [sequence(tokenizer.encode(images_B3HW[i : i + batch_size].to(device))).cpu()
            for i in range(0, len(images_B3HW), batch_size)]
    return torch.cat(seqs)


def unigram_bits(train_NL: torch.Tensor, seqs_ML: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """``(M,)`` bits of each sequence under the training tokens' add-one smoothed frequencies."""
    counts_V = torch.bincount(train_NL.flatten(), minlength=vocab_size).double() + 1
    bits_V = -torch.log2(counts_V / counts_V.sum())
    return bits_V[seqs_ML].sum(1)


def evaluate_generation(tokenizer, images: list[np.ndarray], settings: GenerationSettings | None = None,
                        device: str = "cpu", labels: list[int] | None = None) -> GenerationResult:
    """Fit the generator on the training images' tokens; held-out likelihood and samples, and
    with ``labels`` (a class per image) the linear probes (`tokbench.generation.probe`)."""
    s = settings or GenerationSettings()
    layout = tokenizer.layout_for(s.image_size, s.image_size)
    arch = default_arch(layout) if s.arch == "auto" else s.arch
    if arch == "mar":
        return evaluate_continuous(tokenizer, images, s, device, labels)
    order = generation_order(layout)  # codec tokenizers stop here, with the reason
    held_out, train, crops, train_NL, module = _fit(tokenizer, images, layout, arch, s, device)
    held_seqs = {i: encode_sequences(tokenizer, crops[i], 16, device) for i in held_out}
    per_image_bits, per_image_unigram = [], []
    for i in held_out:
        seqs = held_seqs[i].to(device)
        per_image_bits.append(float(module.nll_bits(seqs).mean()))
        per_image_unigram.append(float(unigram_bits(train_NL, seqs.cpu(), layout.vocab_size).mean()))
    raw_bits = layout.num_tokens * math.log2(layout.vocab_size)
    metrics = {
        "nll_bits_per_image": per_image_bits,
        "nll_bits_per_token": [b / layout.num_tokens for b in per_image_bits],
        # The share of the tokens' raw size the generator still needs: comparable across vocabularies.
        "nll_fraction_of_raw": [b / raw_bits for b in per_image_bits],
        "unigram_bits_per_image": per_image_unigram,
    }
    samples = draw_samples(module, tokenizer, layout, s, device)
    generator = module.ema
    extra = {"order": order if arch == "gpt" else "next-scale (VAR): one map at a time",
             "tokens_per_image": layout.num_tokens, "vocab_size": layout.vocab_size, "raw_bits_per_image": raw_bits,
             "train_images": len(train), "held_out_images": len(held_out), "train_sequences": int(train_NL.shape[0]),
             "generator": {"arch": arch, "preset": s.preset, "config": generator.config,
                           "parameters": sum(p.numel() for p in generator.parameters()), "steps": s.steps},
             "sampling": {"num_samples": s.num_samples, "temperature": s.temperature, "top_k": s.top_k,
                          "top_p": s.top_p, "cfg": 1.0, "seed": s.seed + 1},
             "settings": asdict(s)}
    return _with_probes(GenerationResult(metrics, samples, extra), module, tokenizer, train, train_NL, held_seqs,
                        labels, s)


def _with_probes(result: GenerationResult, module, tokenizer, train: list[int], train_seqs: torch.Tensor,
                 held_seqs: dict[int, torch.Tensor], labels: list[int] | None,
                 s: GenerationSettings) -> GenerationResult:
    """``result`` with the probes' metrics, their settings in ``extra["probe"]`` and the reasons
    for any probe not run."""
    by_image = dict(zip(train, train_seqs.split(s.crops_per_image)))  # the training crops, image by image
    metrics, extra, skipped = run_probes(module, tokenizer, by_image, held_seqs, labels, s.seed)
    result.metrics.update(metrics)
    result.skipped.update(skipped)
    if extra:
        result.extra["probe"] = extra
    return result


def _fit(tokenizer, images: list[np.ndarray], layout, arch: str, s: GenerationSettings, device: str):
    """Split by image, crop, encode, and fit the generator on the training images' tokens."""
    if len(images) < 2:
        raise ValueError(f"the generation measure needs at least 2 images (training and held out), got {len(images)}")
    held_out = [i for i in range(len(images)) if i % s.val_every == s.val_every - 1] or [len(images) - 1]
    train = [i for i in range(len(images)) if i not in held_out]
    gen = torch.Generator().manual_seed(s.seed)
    crops = {i: random_crops(images[i], s.image_size, s.crops_per_image, gen) for i in range(len(images))}
    train_NL = encode_sequences(tokenizer, torch.cat([crops[i] for i in train]), 16, device)
    module = fit_in_memory(train_NL, layout, arch=arch, preset=s.preset, steps=s.steps, batch_size=s.batch_size,
                           lr=s.lr, seed=s.seed, device=str(device),
                           tokenizer=tokenizer if arch == "next_scale" else None,
                           model_options={k: v for k, v in (("width", s.width), ("depth", s.depth), ("heads", s.heads))
                                          if v is not None}).to(device)
    return held_out, train, crops, train_NL, module


def evaluate_continuous(tokenizer, images: list[np.ndarray], s: GenerationSettings, device: str,
                        labels: list[int] | None = None) -> GenerationResult:
    """The continuous route (KL-VAE latents, MAR's diffusion head): held-out denoising loss and samples.

    The loss is the head's mean squared noise error per normalised latent channel, with
    timesteps and noise drawn from a fixed seed for every image and run; it is not a
    likelihood and is not comparable with the discrete routes' bits.
    """
    layout = tokenizer.layout_for(s.image_size, s.image_size)
    held_out, train, crops, train_NLC, module = _fit(tokenizer, images, layout, "mar", s, device)
    held_seqs = {i: encode_sequences(tokenizer, crops[i], 16, device) for i in held_out}
    losses = [float(module.held_out_loss(held_seqs[i].to(device), seed=s.seed).mean()) for i in held_out]
    samples = draw_samples(module, tokenizer, layout, s, device)
    generator = module.ema
    extra = {"order": "raster (continuous tokens, one diffusion-head draw each)", "tokens_per_image": layout.num_tokens,
             "latent_channels": layout.latent_channels, "train_images": len(train), "held_out_images": len(held_out),
             "train_sequences": int(train_NLC.shape[0]),
             "generator": {"arch": "mar", "preset": s.preset, "config": generator.config,
                           "parameters": sum(p.numel() for p in generator.parameters()), "steps": s.steps,
                           "head": {"kind": "diffusion (MAR)", "width": generator.config["head_width"],
                                    "depth": generator.config["head_depth"], "train_steps": 1000,
                                    "schedule": "cosine", "variance": "learned range (MAR)",
                                    "respacing": "guided-diffusion", "diffusion_batch_mul": generator.diffusion_batch_mul}},
             "sampling": {"num_samples": s.num_samples, "temperature": s.temperature, "cfg": 1.0,
                          "diffusion_steps": s.diffusion_steps, "seed": s.seed + 1},
             "settings": asdict(s)}
    return _with_probes(GenerationResult({"diffusion_loss": losses}, samples, extra), module, tokenizer, train,
                        train_NLC, held_seqs, labels, s)


@torch.no_grad()
def draw_samples(module, tokenizer, layout, s: GenerationSettings, device: str) -> torch.Tensor:
    """``num_samples`` decoded unconditional samples of the EMA generator, in batches of 32."""
    g = torch.Generator(device=device).manual_seed(s.seed + 1)
    sampling = SamplingSettings(temperature=s.temperature, top_k=s.top_k, top_p=s.top_p,
                                diffusion_steps=s.diffusion_steps)
    return torch.cat([draw_batch(module.ema, tokenizer, layout, None, min(32, s.num_samples - start), sampling, g,
                                 (s.image_size, s.image_size)).cpu()
                      for start in range(0, s.num_samples, 32)])
