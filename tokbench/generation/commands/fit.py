"""``tokbench gen fit --tokens TOKDIR --config gpt_tiny|gpt_B|gpt_L|var_tiny|var_d16 [--resume] [--compile]
[--trainer.devices 8 --trainer.strategy ddp] [--section.key value ...]``.

Lightning's CLI conventions, as ``tokbench train``: a shipped config by name (or a YAML file),
``--tokens`` for ``--data.root``, ``--resume`` for the run's ``last.ckpt``. At the end rank 0
writes the EMA weights as a generator checkpoint in ``<default_root_dir>/generator``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

GENERATOR_DIR = "generator"


def translate_arguments(rest: list[str]) -> tuple[list[str], bool]:
    """``--config NAME`` -> the shipped YAML, ``--tokens DIR`` -> ``--data.root DIR``, ``--resume``,
    ``--compile`` -> ``--model.compile true``."""
    from tokbench.training.cli import shipped_config

    out, resume, i = [], False, 0
    while i < len(rest):
        arg = rest[i]
        if arg == "--resume":
            resume = True
        elif arg == "--compile":
            out += ["--model.compile", "true"]
        elif arg == "--config" and i + 1 < len(rest) and not rest[i + 1].endswith((".yaml", ".yml")):
            out += ["--config", str(shipped_config(rest[i + 1], "tokbench.generation"))]
            i += 1
        elif arg == "--tokens" and i + 1 < len(rest):
            out += ["--data.root", str(Path(rest[i + 1]).resolve())]
            i += 1
        else:
            out.append(arg)
        i += 1
    return out, resume


def build_cli(argv: list[str]):
    """Parse ``argv`` as LightningCLI does and build the generator, data and trainer (no run)."""
    from tokbench.generation.datamodule import TokenDataModule
    from tokbench.generation.module import GeneratorModule
    from tokbench.training.cli import lightning_cli, shipped_config_names

    # the model sizes itself from the token dataset's layout
    return lightning_cli(GeneratorModule, TokenDataModule, argv, "tokbench gen fit",
                         "Train a generator on a token dataset. Shipped configs (--config NAME): "
                         + ", ".join(shipped_config_names("tokbench.generation")) + ".",
                         links=(("data.root", "model.tokens"),))


def export_generator(module, root_dir: str | Path) -> Path:
    """The EMA weights as ``<root_dir>/generator`` (a generator checkpoint)."""
    from tokbench.generation.checkpoint import save_generator

    h = module.hparams
    return save_generator(module.ema, Path(root_dir) / GENERATOR_DIR, preset=h.preset, tokenizer=h.info["tokenizer"],
                          train_steps=module.global_step,
                          extra={"classes": h.info.get("classes"), "layout": h.info["layout"],
                                 "resolution": h.info.get("resolution"), "weights": "ema", "ema_decay": h.ema_decay,
                                 "token_dataset": h.get("tokens")})


def run_fit(args: argparse.Namespace) -> int:
    from tokbench.training.cli import fit_cli

    argv, resume = translate_arguments(args.rest)
    cli = build_cli(argv)
    fit_cli(cli, resume)
    if cli.trainer.is_global_zero:
        out = export_generator(cli.model, cli.trainer.default_root_dir)
        print(f"wrote {out} ({cli.model.hparams.arch} {cli.model.hparams.preset}, "
              f"{sum(p.numel() for p in cli.model.ema.parameters()):,} parameters, step {cli.model.global_step})")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    from tokbench.training.cli import shipped_config_names

    p = subparsers.add_parser(
        "fit", add_help=False,
        help=f"train a generator: --tokens TOKDIR --config {'|'.join(shipped_config_names('tokbench.generation'))} "
             "[--resume] [--compile]",
        description="All other arguments go to Lightning's CLI: --trainer.*, --model.*, --data.*")
    p.set_defaults(func=run_fit, passthrough=True)
