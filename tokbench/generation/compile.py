"""Opt-in compilation of the generators (``gen sample --compile``, ``gen fit --compile``).

Sampling: each generator's ``cached_step`` (one step against the static KV cache: the same
shapes and tensor addresses at every step, positions as a device tensor) is compiled with
``fullgraph=True`` -- a graph break would be an error, not a silent slow path -- and on CUDA
in ``reduce-overhead`` mode, which captures the step in a CUDA graph and replays it (one
launch instead of one per kernel). A next-scale generator's maps differ in size, so each map
is compiled once (the recompile limit is raised to the number of maps).

Training: the generator's ``forward`` is compiled in place (``nn.Module.compile``), which keeps
the parameter names, so checkpoints are unchanged.

Compiling costs tens of seconds up front and pays off over a long run (50,000 samples, a
training run); the first call of each new batch size compiles again.
"""
from __future__ import annotations

import torch
from torch import nn


def step_compile_options(device: torch.device | str, backend: str = "inductor") -> dict:
    """`torch.compile` options for a generator's decode step on ``device``."""
    options = {"fullgraph": True, "dynamic": False, "backend": backend}
    if backend == "inductor" and torch.device(device).type == "cuda":
        options["mode"] = "reduce-overhead"  # CUDA graphs for the decode step
    return options


def compile_sampling(model: nn.Module, device: torch.device | str, backend: str = "inductor") -> nn.Module:
    """Compile ``model.cached_step`` in place (see the module docstring). Returns ``model``."""
    import torch._dynamo

    maps = len(getattr(model, "scale_shapes", ())) + 2
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, maps)
    model.cached_step = torch.compile(model.cached_step, **step_compile_options(device, backend))
    return model


def compile_training(model: nn.Module, backend: str = "inductor") -> nn.Module:
    """Compile ``model``'s forward in place for training (parameter names unchanged). Returns ``model``."""
    model.compile(backend=backend)
    return model
