"""Training throughput of the shipped configs: images per second, peak memory, model FLOPs and MFU.

    python benchmarks/train_throughput.py                      # tiny configs, CPU
    python benchmarks/train_throughput.py --configs vq_small --accelerator gpu --image-size 256
    python benchmarks/train_throughput.py --configs vq_tiny --threads 1 --profile-search
    python benchmarks/train_throughput.py --configs vq_tiny --peak-tflops 1.5   # MFU on a CPU

Each config runs ``--warmup`` steps untimed, then ``--steps`` timed training steps (data
loading, forward, backward, optimizer, EMA; no validation, logging or checkpoints). Peak
memory: the process's peak resident set on CPU, ``torch.cuda.max_memory_allocated`` on GPU.
Model FLOPs are counted (`benchmarks/mfu.py`: every matmul, convolution and attention of the
last warm-up step, forward and backward); ``TFLOP_per_s`` divides them by the timed step time
and ``MFU_%`` by the device's peak too (a table for known GPUs at the run's precision, or
``--peak-tflops``; none on a CPU unless given).
``--profile-search`` also times every nearest-codeword search of the timed steps (synchronizing
the GPU around each, which costs a little itself) and reports its share of the step time and
the path it took (the fused CPU/CUDA kernel, or the chunked path when switched off with
``TOKBENCH_DISABLE_CPU_EXT=1`` / ``TOKBENCH_DISABLE_CUDA_EXT=1``).
"""
from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
from pathlib import Path

import torch
from lightning.pytorch.callbacks import Callback

import tokbench.quantize.vector as vector_quantizer
from tokbench.ops import active_backend

from tokbench.training.cli import build_cli, shipped_config

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mfu import counted_flops, peak_flops, throughput_columns  # noqa: E402

TINY = "vq_tiny,residual_scale_tiny,holistic_1d_tiny,vae_tiny"


class StepTimer(Callback):
    """Wall time of the training steps after the first ``warmup`` ones."""

    def __init__(self, warmup: int) -> None:
        self.warmup, self.start, self.end, self.timed_steps = warmup, None, None, 0

    def _sync(self, trainer) -> None:
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.warmup:
            self._sync(trainer)
            self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self.start is not None:
            self._sync(trainer)
            self.end = time.perf_counter()
            self.timed_steps += 1


class FlopCounter(Callback):
    """Counts the model FLOPs of one (untimed) warm-up step: the one just before the timed ones."""

    def __init__(self, step: int) -> None:
        self.step, self.flops, self._context, self._count = step, None, None, None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            self._context = counted_flops()
            self._count = self._context.__enter__()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if self._context is not None:
            self._context.__exit__(None, None, None)
            self.flops, self._context = self._count(), None


class SearchTimer:
    """Wraps the quantizers' `nearest_codeword` to time the calls made during timed steps."""

    def __init__(self, timer: StepTimer) -> None:
        self.timer, self.seconds, self.calls, self.shape = timer, 0.0, 0, None
        self.real = vector_quantizer.nearest_codeword

    def __call__(self, z, codebook, metric="l2"):
        if self.timer.start is None:
            return self.real(z, codebook, metric)
        if z.is_cuda:
            torch.cuda.synchronize()
        t = time.perf_counter()
        out = self.real(z, codebook, metric)
        if z.is_cuda:
            torch.cuda.synchronize()
        self.seconds += time.perf_counter() - t
        self.calls += 1
        self.shape = (z.shape[0], codebook.shape[0], z.shape[1], z.device.type)
        return out


def measure(config: str, steps: int, warmup: int, accelerator: str, extra: list[str], root: Path,
            profile_search: bool = False, peak_tflops: float | None = None) -> dict:
    argv = ["--config", str(shipped_config(config)), "--trainer.max_steps", str(warmup + steps),
            "--trainer.accelerator", accelerator, "--trainer.devices", "1", "--trainer.strategy", "auto",
            "--trainer.logger", "false", "--trainer.callbacks", "[]", "--trainer.enable_checkpointing", "false",
            "--trainer.limit_val_batches", "0", "--trainer.enable_progress_bar", "false",
            "--trainer.default_root_dir", str(root / config), "--model.log_images_every", "0", *extra]
    if accelerator == "cpu":
        argv += ["--trainer.precision", "32-true"]
    cli = build_cli(argv)
    timer = StepTimer(warmup)
    flop_counter = FlopCounter(warmup - 1)
    cli.trainer.callbacks += [timer, flop_counter]
    search = SearchTimer(timer) if profile_search else None
    if search:
        vector_quantizer.nearest_codeword = search
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    try:
        cli.trainer.fit(cli.model, cli.datamodule)
    finally:
        if search:
            vector_quantizer.nearest_codeword = search.real
    batch = cli.datamodule.hparams.batch_size
    seconds = timer.end - timer.start
    if cli.trainer.strategy.root_device.type == "cuda":
        peak_mib = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    row = {"config": config, "image_size": cli.datamodule.hparams.image_size, "batch": batch,
           "params_M": cli.model.tokenizer.num_parameters() / 1e6, "steps": timer.timed_steps,
           "images_per_s": timer.timed_steps * batch / seconds, "s_per_step": seconds / timer.timed_steps,
           "peak_mem_MiB": peak_mib}
    if flop_counter.flops:
        device = cli.trainer.strategy.root_device
        row.update(throughput_columns(flop_counter.flops, seconds / timer.timed_steps,
                                      peak_flops(device, str(cli.trainer.precision), peak_tflops)))
    if search and search.calls:
        n, k, d, device = search.shape
        row.update({"search_path": active_backend(device, d=d), "search_NxKxD": f"{n}x{k}x{d}",
                    "search_ms_per_step": 1e3 * search.seconds / timer.timed_steps,
                    "search_share_%": 100 * search.seconds / seconds})
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default=TINY, help="comma-separated shipped config names")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps (>= 1: the last one counts the FLOPs)")
    parser.add_argument("--accelerator", default="cpu", choices=["cpu", "gpu"])
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    parser.add_argument("--image-size", type=int, default=None, help="training crop size (--data.image_size)")
    parser.add_argument("--profile-search", action="store_true",
                        help="time the nearest-codeword searches and report their share of a step")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="the device's peak TFLOP/s for MFU (default: the table in mfu.py for known GPUs)")
    args, extra = parser.parse_known_args()  # anything else goes to the training CLI, e.g. --data.batch_size 4
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.image_size:
        extra += ["--data.image_size", str(args.image_size)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for config in args.configs.split(","):
            rows.append(measure(config, args.steps, args.warmup, args.accelerator, extra, Path(tmp), args.profile_search,
                                args.peak_tflops))
    header = list(dict.fromkeys(key for row in rows for key in row))
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in rows:
        print("| " + " | ".join(f"{row[h]:.3g}" if isinstance(row.get(h), float) else str(row.get(h, "")) for h in header) + " |")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads"
          + (f", {torch.cuda.get_device_name()}" if args.accelerator == "gpu" else ""))


if __name__ == "__main__":
    main()
