"""Learning-rate schedule shared by the training objectives."""
from __future__ import annotations

import math


def warmup_cosine(step: int, warmup_steps: int, max_steps: int, min_ratio: float) -> float:
    """Multiplier of the base learning rate: linear warm-up over ``warmup_steps``, then a
    cosine from 1 down to ``min_ratio`` at ``max_steps`` (held there after)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
