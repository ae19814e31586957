"""The generation measure: fit the AR prior on a tokenizer's tokens of some images, score the
likelihood of held-out images' tokens, and draw samples.

Images are split by image (never crops of one image on both sides): every ``k``-th image is
held out. Each image gives ``crops_per_image`` random crops (35-100% of the shorter side,
random flips) resized to ``image_size``, so a small suite still yields enough sequences to
fit a small prior. The held-out score is each image's mean over its crops; the interval is
over held-out images.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF

from tokbench.generation.sequence import from_sequence, generation_order, to_sequence
from tokbench.generation.training import fit_prior


@dataclass
class GenerationSettings:
    # Defaults for small suites (the 14 built-in photos): many augmented crops and a small prior.
    # With 16 crops per image a 4 x 256 prior overfit its 176 sequences within 500 steps (held-out
    # NLL 1.5x the raw bits, vq_tiny at 32 px); 64 crops and 2 x 128 held out at 0.85x.
    image_size: int = 256
    crops_per_image: int = 64
    val_every: int = 4  # every 4th image is held out
    steps: int = 300
    batch_size: int = 32
    width: int = 128
    depth: int = 2
    heads: int = 4
    lr: float = 1e-3
    num_samples: int = 8
    temperature: float = 1.0
    top_k: int | None = None
    seed: int = 0


@dataclass
class GenerationResult:
    metrics: dict[str, list[float]]  # metric name -> its value on each held-out image
    samples_B3HW: torch.Tensor  # decoded samples in [0, 1]
    extra: dict


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
    seqs = [to_sequence(tokenizer.encode(images_B3HW[i : i + batch_size].to(device))).cpu()
            for i in range(0, len(images_B3HW), batch_size)]
    return torch.cat(seqs)


def evaluate_generation(tokenizer, images: list[np.ndarray], settings: GenerationSettings | None = None,
                        device: str = "cpu") -> GenerationResult:
    """Fit the prior on the training images' tokens; held-out likelihood and samples."""
    s = settings or GenerationSettings()
    layout = tokenizer.layout_for(s.image_size, s.image_size)
    order = generation_order(layout)  # continuous or codec tokenizers stop here, with the reason
    if len(images) < 2:
        raise ValueError(f"the generation measure needs at least 2 images (training and held out), got {len(images)}")
    held_out = [i for i in range(len(images)) if i % s.val_every == s.val_every - 1] or [len(images) - 1]
    train = [i for i in range(len(images)) if i not in held_out]
    gen = torch.Generator().manual_seed(s.seed)
    crops = {i: random_crops(images[i], s.image_size, s.crops_per_image, gen) for i in range(len(images))}
    train_BL = encode_sequences(tokenizer, torch.cat([crops[i] for i in train]), 16, device)
    prior = fit_prior(train_BL, layout.vocab_size, steps=s.steps, batch_size=s.batch_size, seed=s.seed,
                      accelerator="gpu" if str(device).startswith("cuda") else "cpu",
                      width=s.width, depth=s.depth, heads=s.heads, lr=s.lr).to(device)
    per_image_bits = [float(prior.nll_bits(encode_sequences(tokenizer, crops[i], 16, device).to(device)).mean())
                      for i in held_out]
    raw_bits = layout.num_tokens * math.log2(layout.vocab_size)
    metrics = {
        "nll_bits_per_image": per_image_bits,
        "nll_bits_per_token": [b / layout.num_tokens for b in per_image_bits],
        # The share of the tokens' raw size the prior still needs: comparable across vocabularies.
        "nll_fraction_of_raw": [b / raw_bits for b in per_image_bits],
    }
    sample_gen = torch.Generator().manual_seed(s.seed + 1)
    seq_BL = prior.sample(s.num_samples, s.temperature, s.top_k, generator=sample_gen)
    with torch.no_grad():
        samples = tokenizer.decode(from_sequence(seq_BL, layout, (s.image_size, s.image_size))).clamp(0, 1).cpu()
    extra = {"order": order, "tokens_per_image": layout.num_tokens, "vocab_size": layout.vocab_size,
             "raw_bits_per_image": raw_bits, "train_images": len(train), "held_out_images": len(held_out),
             "train_sequences": int(train_BL.shape[0]), "prior_parameters": sum(p.numel() for p in prior.parameters()),
             "settings": asdict(s)}
    return GenerationResult(metrics, samples, extra)
