"""Generator checkpoints: the tokenizers' format (``config.json`` + ``model.safetensors``)
with the tokenizer the generator belongs to (its spec and SHA-256), so that sampling decodes
with the right one and refuses another."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from tokbench.atomic import atomic_path, atomic_write_text
from tokbench.checkpoint import CheckpointError, load_weights_strict, read_safetensors
from tokbench.generation.presets import rebuild
from tokbench.version import __version__

FORMAT = "tokbench-generator"
CONFIG_NAME, WEIGHTS_NAME = "config.json", "model.safetensors"


def save_generator(model: nn.Module, directory: str | Path, *, preset: str, tokenizer: dict, train_steps: int,
                   extra: dict | None = None) -> Path:
    """Write ``model``'s weights and config; ``tokenizer``: ``{"spec", "sha256", ...}`` of its tokens."""
    from safetensors.torch import save_file

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    with atomic_path(out / WEIGHTS_NAME) as tmp:
        save_file(state, str(tmp), metadata={"format": "pt", "tokbench_version": __version__})
    config = {"format": FORMAT, "format_version": 1, "arch": model.arch, "preset": preset, "config": model.config,
              "parameters": sum(p.numel() for p in model.parameters()), "tokenizer": tokenizer,
              "train_steps": int(train_steps), "tokbench_version": __version__, **(extra or {})}
    atomic_write_text(out / CONFIG_NAME, json.dumps(config, indent=2, sort_keys=True) + "\n")  # last: marks complete
    return out


def read_generator_config(directory: str | Path) -> dict:
    path = Path(directory) / CONFIG_NAME
    if not path.is_file():
        raise CheckpointError(f"{path}: missing; a generator checkpoint holds {CONFIG_NAME} and {WEIGHTS_NAME} "
                              "(written by `tokbench gen fit`)")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a generator checkpoint (expected \"format\": \"{FORMAT}\"; a tokenizer "
                              "checkpoint goes to --tokenizer)")
    return config


def load_generator(directory: str | Path, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """``(generator in eval mode, its config.json)``."""
    config = read_generator_config(directory)
    try:
        model = rebuild(config["arch"], config["config"])
    except (TypeError, ValueError, KeyError) as err:
        raise CheckpointError(f"{Path(directory) / CONFIG_NAME}: cannot rebuild the generator ({err})") from err
    weights = Path(directory) / WEIGHTS_NAME
    state = read_safetensors(weights)
    if hasattr(model, "upgrade_state_dict"):  # weights written by an earlier layout of the model
        state = model.upgrade_state_dict(state)
    load_weights_strict(model, state, str(weights))
    return model.to(device).eval(), config
