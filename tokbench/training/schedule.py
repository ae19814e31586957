"""Learning-rate schedule shared by the training objectives, and its length."""
from __future__ import annotations

import math


def warmup_cosine(step: int, warmup_steps: int, max_steps: int, min_ratio: float) -> float:
    """Multiplier of the base learning rate: linear warm-up over ``warmup_steps``, then a
    cosine from 1 down to ``min_ratio`` at ``max_steps`` (held there after)."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, max_steps - warmup_steps))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def schedule_length(model_max_steps: int | None, trainer_max_steps: int, estimated_steps: float | None = None) -> int:
    """How many steps the schedule spans: the trainer's ``max_steps`` (one setting for both).

    ``model_max_steps`` may repeat it, and must then agree: a schedule over 300 steps in a
    60-step run would never decay, so a mismatch is refused (``ValueError``) before training.
    Without ``trainer.max_steps`` (-1: a run bounded by epochs), ``model.max_steps`` or else
    Lightning's ``estimated_steps`` for the whole run.
    """
    if trainer_max_steps is not None and trainer_max_steps >= 0:
        if model_max_steps is not None and model_max_steps != trainer_max_steps:
            raise ValueError(f"model.max_steps ({model_max_steps}) differs from trainer.max_steps ({trainer_max_steps}): "
                             "the learning-rate schedule must span the run; set trainer.max_steps only")
        return max(1, trainer_max_steps)
    if model_max_steps is not None:
        return max(1, model_max_steps)
    if estimated_steps is None or not math.isfinite(estimated_steps):
        raise ValueError("trainer.max_steps is not set and the run's length is unbounded: set trainer.max_steps "
                         "(the learning-rate schedule spans it)")
    return max(1, int(estimated_steps))
