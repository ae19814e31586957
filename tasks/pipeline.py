"""Scoring one per-image task: decode, tokenize, round to 8 bits, score, cache -- batch by batch.

Data-loader worker processes decode and resize images (``--workers``), the tokenizer runs
batched on ``--device`` in the main process, and the task scores each batch (the text task
sends OCR to its own pool of processes). Files that cannot be decoded are cached as skipped
rows with their reason, so a resumed run lists them too.

Batch size: on a CPU, convolution kernels may sum in a different order for another batch
size, so a learned tokenizer's decoder output can differ in the last float bits between
``--batch-size 1`` and ``8`` (reported on ``vq:size=tiny``: ids identical, outputs within
~5e-5, which flips a few pixels by one 8-bit level). That is far below any reported
interval; ``tests/test_eval_resume.py`` checks it stays within one 8-bit level per pixel and
1e-3 dB of PSNR, and a resumed run may therefore use another batch size.
"""
from __future__ import annotations

import time
from typing import Iterator

import torch
from tqdm import tqdm

from tokbench.imageio import quantize_8bit, save_png
from tokbench.tasks.base import MetricContext, Pair, Task
from tokbench.tasks.cache import SKIP_KEY, RowCache, safe_name
from tokbench.tasks.data import BadImageError, Dataset, Item, Prepared, crop_content, prepare, subset


class Interrupted(RuntimeError):
    """Raised by the ``stop_after`` test hook to imitate a crash mid-run."""


class _PreparedImages(torch.utils.data.Dataset):
    """Decode + resolution policy for each item; runs in data-loader worker processes."""

    def __init__(self, items: list[Item], resolution: str, preprocessing: str = "default") -> None:
        self.items, self.resolution, self.preprocessing = items, resolution, preprocessing

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        try:
            return i, prepare(self.items[i].pixels(), self.resolution, self.preprocessing), None
        except BadImageError as err:
            return i, None, str(err)


def _as_is(sample):
    return sample


def prepared_stream(items: list[Item], resolution: str, workers: int,
                    preprocessing: str = "default") -> Iterator[tuple[Item, Prepared | None, str | None]]:
    """``(item, Prepared | None, reason | None)`` in item order, decoded by up to ``workers`` processes."""
    if not items:
        return
    num_workers = min(workers, len(items))
    loader = torch.utils.data.DataLoader(_PreparedImages(items, resolution, preprocessing), batch_size=None, shuffle=False,
                                         num_workers=num_workers, collate_fn=_as_is,
                                         prefetch_factor=4 if num_workers > 0 else None)
    for i, prepared, reason in loader:
        yield items[i], prepared, reason


def batches(stream, batch_size: int):
    """Consecutive good images of one evaluation size, at most ``batch_size``; bad ones alone."""
    batch = []
    for item, prepared, reason in stream:
        if reason is not None:
            yield [(item, None, reason)]
            continue
        if batch and (len(batch) == batch_size or batch[0][1].x_3HW.shape != prepared.x_3HW.shape):
            yield batch
            batch = []
        batch.append((item, prepared, None))
    if batch:
        yield batch


def score_task(cfg, task: Task, tokenizer, ctx: MetricContext, dataset: Dataset, rank: int, world: int,
               timers: dict, new_counter: list[int]) -> None:
    """Score this rank's share of ``dataset`` that is not in the cache yet.

    Each row gets the image's ``bits`` and ``tokens`` at the evaluation resolution, measured
    from the tokens themselves (codecs: their coded size), the rate figure of the results.
    """
    cache = RowCache(cfg.out / "cache", task.name, rank)
    done = cache.load_all()
    items = subset(dataset.items, cfg.limit)[rank::world]
    todo = [it for it in items if it.id not in done]
    rec_dir = cfg.out / "reconstructions" / task.name
    bar = tqdm(total=len(items), initial=len(items) - len(todo), desc=task.name, unit="img", disable=rank != 0)
    t_io = time.perf_counter()
    for batch in batches(prepared_stream(todo, cfg.resolution, cfg.workers, cfg.preprocessing), cfg.batch_size):
        t0 = time.perf_counter()
        timers["io_s"] += t0 - t_io  # waiting for decoded images
        if batch[0][2] is not None:  # an unreadable file: remembered with its reason
            item, _, reason = batch[0]
            if rank == 0:
                tqdm.write(f"skipped {item.id}: {reason}")
            cache.append([{"id": item.id, SKIP_KEY: reason}])
            bar.update(1)
            t_io = time.perf_counter()
            continue
        x = torch.stack([p.x_3HW for _, p, _ in batch]).to(cfg.device)
        with torch.no_grad():
            tokens = tokenizer.encode(x)
            rec = quantize_8bit(tokenizer.decode(tokens)).cpu()
            decodings = {name: quantize_8bit(images).cpu() for name, images in task.decodings(tokenizer, tokens).items()}
        bits = tokens.bits_per_image()
        num_tokens = None if tokens.layout.arrangement == "bytes" else tokens.layout.num_tokens
        t1 = time.perf_counter()
        pairs = [Pair(it, crop_content(quantize_8bit(p.x_3HW), p), crop_content(rec[i], p), p.scale, p.content_origin,
                      {name: crop_content(images[i], p) for name, images in decodings.items()}, source_hw=p.source_hw)
                 for i, (it, p, _) in enumerate(batch)]
        ocr_before = ctx.timers.get("ocr_s", 0.0)
        rows = task.score(pairs, ctx)
        t2 = time.perf_counter()
        ocr = ctx.timers.get("ocr_s", 0.0) - ocr_before
        for i, (row, (it, _, _)) in enumerate(zip(rows, batch)):
            row.update({"id": it.id, "bits": None if bits is None else float(bits[i]), "tokens": num_tokens})
            save_png(pairs[i].reconstruction, rec_dir / f"{safe_name(it.id)}.png")
        cache.append(rows)
        timers["tokenizer_s"] += t1 - t0
        timers["metrics_s"] += t2 - t1 - ocr
        timers["ocr_s"] += ocr
        t_io = time.perf_counter()
        timers["io_s"] += t_io - t2
        bar.update(len(batch))
        new_counter[0] += len(batch)
        if cfg.stop_after is not None and new_counter[0] >= cfg.stop_after:
            raise Interrupted(f"stopped after {new_counter[0]} new images (test hook)")
    bar.close()
