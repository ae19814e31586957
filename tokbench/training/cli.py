"""``tokbench train`` (Lightning's CLI conventions) and ``tokbench export``."""
from __future__ import annotations

import argparse
import difflib
import re
import warnings
from importlib import resources
from pathlib import Path


def shipped_config_names(package: str = "tokbench.training") -> list[str]:
    """Names of the YAML configs shipped in ``package``'s ``configs`` folder, sorted."""
    return sorted(p.stem for p in Path(str(resources.files(package).joinpath("configs"))).glob("*.yaml"))


def shipped_config(name: str, package: str = "tokbench.training") -> Path:
    """``vq_tiny`` -> the YAML shipped in ``tokbench/training/configs`` (or ``package``'s ``configs``)."""
    path = Path(str(resources.files(package).joinpath("configs", f"{name}.yaml")))
    if not path.is_file():
        raise FileNotFoundError(f"no shipped config {name!r}; available: {', '.join(shipped_config_names(package))}")
    return path


def closest_keys(option: str, valid: list[str], n: int = 3) -> list[str]:
    """The valid options nearest a misspelt one: same section first (``--model.*``), by difflib's
    ratio, and an abbreviation made of the words' initials (``learning_rate`` -> ``lr``)."""
    section, _, key = option.lstrip("-").rpartition(".")
    same = [v for v in valid if v.lstrip("-").rpartition(".")[0] == section] or valid
    by_key = {v.lstrip("-").rpartition(".")[2]: v for v in same}
    initials = "".join(word[0] for word in key.split("_") if word)
    found = [by_key[initials]] if len(initials) > 1 and initials in by_key else []
    found += [by_key[k] for k in difflib.get_close_matches(key, list(by_key), n=n, cutoff=0.5)]
    found += difflib.get_close_matches(option, valid, n=n, cutoff=0.6)
    return list(dict.fromkeys(found))[:n]


def argument_error_message(message: str, valid: list[str]) -> str:
    """Lightning's parse error as one line; each unrecognized ``--key`` gets its closest valid keys."""
    line = " ".join(part.strip() for part in message.splitlines() if part.strip())
    unknown = re.findall(r"(--[\w.\-]+)", line.partition("nrecognized arguments:")[2])
    # a key in a YAML file: "Group 'model' does not accept option 'learning_rat'"
    unknown += [f"--{group}.{key}" for group, key in re.findall(r"Group '([\w.]+)' does not accept option '(\w+)'", line)]
    hints = []
    for option in unknown:
        if option not in valid:
            near = closest_keys(option, valid)
            hints.append(f"{option}: did you mean {' or '.join(near)}?" if near else f"{option}: no similar key")
    return "; ".join([line, *hints]) + " (all keys: --help)"


def translate_arguments(rest: list[str]) -> tuple[list[str], bool]:
    """Our conveniences on top of LightningCLI's arguments: ``--config NAME`` for a shipped
    config, ``--data DIR`` for ``--data.root DIR``, ``--resume`` for the run's last checkpoint."""
    out, resume, i = [], False, 0
    while i < len(rest):
        arg = rest[i]
        if arg == "--resume":
            resume = True
        elif arg == "--config" and i + 1 < len(rest) and not Path(rest[i + 1]).exists() and not rest[i + 1].endswith((".yaml", ".yml")):
            out += ["--config", str(shipped_config(rest[i + 1]))]
            i += 1
        elif arg == "--data" and i + 1 < len(rest) and (Path(rest[i + 1]).is_dir() or rest[i + 1].startswith("builtin:")):
            out += ["--data.root", rest[i + 1]]
            i += 1
        else:
            out.append(arg)
        i += 1
    return out, resume


def logs_under_root_dir(trainer_config) -> None:  # noqa: ANN001
    """Give every configured logger without a ``save_dir`` the run's ``default_root_dir`` (in place).

    So logs go where the checkpoints go, also when ``--trainer.default_root_dir`` is changed on
    the command line; a ``save_dir`` the user sets is kept.
    """
    root = trainer_config.get("default_root_dir") or "."
    loggers = trainer_config.get("logger")
    for logger in loggers if isinstance(loggers, list) else [loggers]:
        init_args = getattr(logger, "init_args", None)
        if init_args is not None and "save_dir" in init_args and init_args.save_dir is None:
            init_args.save_dir = str(root)


def lightning_cli(model_class, data_class, argv: list[str], prog: str, description: str,
                  links: tuple[tuple[str, str], ...] = ()):
    """LightningCLI with tokbench's conventions (atomic checkpoints, logs under the run's root,
    no model summary), parsed from ``argv`` and built without running; ``links`` are
    ``(source, target)`` argument links (a model that sizes itself from the data)."""
    from lightning.pytorch.cli import LightningCLI

    from tokbench.training.lightning_warnings import silence_expected_lightning_warnings

    from jsonargparse import ArgumentError

    class TokbenchCLI(LightningCLI):
        def parse_arguments(self, parser, args) -> None:
            # One line naming the closest valid keys instead of the whole usage (exit_on_error=False below).
            try:
                super().parse_arguments(parser, args)
            except ArgumentError as err:
                valid = [o for action in parser._actions for o in action.option_strings if o.startswith("--")]
                raise ValueError(argument_error_message(str(err), valid)) from None

        def add_arguments_to_parser(self, parser) -> None:
            for source, target in links:
                parser.link_arguments(source, target)

        def before_instantiate_classes(self) -> None:
            logs_under_root_dir(self.config.trainer)

    silence_expected_lightning_warnings()
    with warnings.catch_warnings():
        # the command hands its own arguments over as `args`, which is what that warning is about.
        warnings.filterwarnings("ignore", message="LightningCLI's args parameter is intended")
        return TokbenchCLI(
            model_class, data_class, args=argv, run=False, seed_everything_default=0,
            save_config_kwargs={"overwrite": True},
            trainer_defaults={"plugins": [{"class_path": "tokbench.training.checkpointing.AtomicCheckpointIO"}],
                              "enable_model_summary": False},
            parser_kwargs={"prog": prog, "description": description, "exit_on_error": False},
        )


def build_cli(argv: list[str]):
    """Parse ``argv`` as LightningCLI does and build the model, data and trainer (no run)."""
    from tokbench.training.data import ImageDataModule
    from tokbench.training.module import AutoencoderModule

    return lightning_cli(AutoencoderModule, ImageDataModule, argv, "tokbench train",
                         "Train a tokenizer (Lightning CLI conventions). Shipped configs (--config NAME): "
                         + ", ".join(shipped_config_names()) + ".")


def fit_cli(cli, resume: bool) -> None:
    """Run a built CLI's ``trainer.fit``: a learning-rate schedule that does not span the run is
    refused before anything runs; ``resume`` continues from the run's ``last.ckpt``."""
    from tokbench.training.checkpointing import resume_checkpoint
    from tokbench.training.schedule import schedule_length

    if cli.trainer.max_steps >= 0:
        schedule_length(cli.model.hparams.max_steps, cli.trainer.max_steps)
    ckpt_path = str(resume_checkpoint(cli.trainer.default_root_dir)) if resume else None
    cli.trainer.fit(cli.model, cli.datamodule, ckpt_path=ckpt_path)


def run_train(args: argparse.Namespace) -> int:
    argv, resume = translate_arguments(args.rest)
    cli = build_cli(argv)
    fit_cli(cli, resume)
    if cli.trainer.is_global_zero:
        skipped = cli.datamodule.num_skipped
        if skipped:
            print(f"skipped {skipped} unreadable training images")
        print(f"checkpoints in {Path(cli.trainer.default_root_dir) / 'checkpoints'}")
    return 0


def run_export(args: argparse.Namespace) -> int:
    from tokbench.checkpoint import load_lightning_checkpoint, save_pretrained

    tokenizer = load_lightning_checkpoint(args.checkpoint, ema=not args.no_ema)
    save_pretrained(tokenizer, args.out_dir, extra_config={"exported_from": str(args.checkpoint),
                                                          "weights": "raw" if args.no_ema else "ema"})
    print(f"wrote {args.out_dir} ({'raw' if args.no_ema else 'EMA'} weights of {tokenizer.family})")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``train`` and ``export``."""
    p = subparsers.add_parser(
        "train", add_help=False,
        help="train a tokenizer: --config NAME|FILE.yaml [--data DIR] [--resume] [--section.key value ...]",
        description="All arguments go to Lightning's CLI: --config, --print_config, --trainer.*, --model.*, --data.* "
                    "(shipped configs: " + ", ".join(shipped_config_names()) + ")")
    p.set_defaults(func=run_train, passthrough=True)
    p = subparsers.add_parser("export", help="write a training checkpoint as a tokbench checkpoint directory")
    p.add_argument("checkpoint", help="a .ckpt written by tokbench train")
    p.add_argument("out_dir")
    p.add_argument("--no-ema", action="store_true", help="export the raw weights instead of the EMA weights")
    p.set_defaults(func=run_export)
