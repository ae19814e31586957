"""Turning logits into tokens: temperature, top-k, top-p (nucleus) and classifier-free guidance."""
from __future__ import annotations

import torch


def check_sampling(temperature: float, top_k: int | None, top_p: float | None, cfg: float) -> None:
    """Clear errors for settings with no meaning, before any work."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if top_k is not None and top_k < 0:
        raise ValueError(f"top_k must be >= 0 (0 = off), got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1] (1 = off), got {top_p}")
    if cfg < 1:
        raise ValueError(f"the guidance scale must be >= 1 (1 = no guidance), got {cfg}")


def filter_logits(logits_BV: torch.Tensor, top_k: int | None = None, top_p: float | None = None) -> torch.Tensor:
    """Set to -inf every logit outside the ``top_k`` largest (0/None: all) and outside the
    smallest set whose probability reaches ``top_p`` (1/None: all). The most likely token is
    always kept; ties at the k-th value are kept (LlamaGen's rule)."""
    out = logits_BV
    if top_k:
        kth_B1 = out.topk(min(top_k, out.shape[-1]), dim=-1).values[:, -1:]
        out = out.masked_fill(out < kth_B1, float("-inf"))
    if top_p is not None and top_p < 1:
        sorted_BV, order_BV = out.sort(dim=-1, descending=True)
        cumulative_BV = sorted_BV.softmax(dim=-1).cumsum(dim=-1)
        # Drop a token when the tokens before it already reach top_p.
        drop_sorted = (cumulative_BV - sorted_BV.softmax(dim=-1)) >= top_p
        drop_sorted[:, 0] = False
        drop = torch.zeros_like(drop_sorted).scatter(1, order_BV, drop_sorted)
        out = out.masked_fill(drop, float("-inf"))
    return out


def class_indices(labels_B: torch.Tensor | None, num_classes: int, batch: int, device) -> torch.Tensor:
    """Labels as class-embedding indices; ``None`` or ``-1`` = "no class" (index ``num_classes``)."""
    if labels_B is None:
        return torch.full((batch,), num_classes, dtype=torch.long, device=device)
    labels_B = labels_B.long().to(device)
    if labels_B.numel() and (labels_B.max() >= num_classes or labels_B.min() < -1):
        raise ValueError(f"labels must lie in [0, {num_classes}) or be -1 (no class), "
                         f"got [{int(labels_B.min())}, {int(labels_B.max())}]")
    return torch.where(labels_B < 0, num_classes, labels_B)


def guidance_batch(model, labels_B: torch.Tensor | None, num: int | None, cfg: float,
                   device) -> tuple[int, torch.Tensor, bool]:
    """``(B, class ids, guide)`` for a generator's ``generate``: ``B`` samples of ``labels_B`` (or
    ``num`` unconditional ones); with guidance (``cfg != 1``) the class ids are ``[classes; no class]``."""
    B = len(labels_B) if labels_B is not None else num
    if not B:
        raise ValueError("generate needs labels or a number of samples")
    classes_B = model.class_ids(labels_B, B, device)
    guide = cfg != 1.0
    if guide:
        classes_B = torch.cat([classes_B, torch.full_like(classes_B, model.null_class)])
    return B, classes_B, guide


def guided(logits_2BV: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance on a batch stacked ``[conditional; unconditional]``:
    ``uncond + scale * (cond - uncond)`` (LlamaGen's convention: 1 = no guidance)."""
    cond, uncond = logits_2BV.chunk(2)
    return uncond + scale * (cond - uncond)


def draw(logits_BV: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None,
         generator: torch.Generator | None) -> torch.Tensor:
    """``(B,)`` tokens drawn from ``softmax(filter(logits / temperature))`` with ``generator``."""
    probs_BV = filter_logits(logits_BV.float() / temperature, top_k, top_p).softmax(dim=-1)
    device = generator.device if generator is not None else probs_BV.device
    return torch.multinomial(probs_BV.to(device), 1, generator=generator).to(logits_BV.device)[:, 0]


def in_interval(step: int, total: int, interval: tuple[float, float]) -> bool:
    """Whether guidance applies at ``step`` of ``total``: ``interval`` is a fraction range
    ``[start, end)`` of the steps (``(0, 1)``: all)."""
    return interval[0] <= step / total < interval[1]


CFG_SCHEDULES = ("linear", "constant")


def mar_cfg(cfg: float, t: int, seq_len: int, schedule: str = "linear") -> float:
    """MAR's guidance scale for token ``t`` (0-based) of ``seq_len``: ``linear`` is its ramp (after
    Muse), ``1 + (cfg - 1) * generated / L`` with ``generated = t + 1``, the tokens known once this
    one is drawn (MAR's ``seq_len - mask_len``); ``constant``: ``cfg`` throughout."""
    if schedule not in CFG_SCHEDULES:
        raise ValueError(f"cfg schedule must be one of {', '.join(CFG_SCHEDULES)}, got {schedule!r}")
    return 1 + (cfg - 1) * (t + 1) / seq_len if schedule == "linear" else cfg
