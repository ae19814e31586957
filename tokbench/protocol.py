"""`Protocol`: a preset that fixes everything deciding one published column.

A published number (LlamaGen's rFID, VAR's, TokBench's T-ACC) depends on the data split, the
preprocessing, the resolution, the metric variants, the recognizer and the pooling. A preset
declares all of them in one object (one module each under ``tasks/protocols/``, found through
the entry-point group ``tokbench.protocols``: `tokbench.protocol_registry`);
``tokbench eval --protocol NAME`` applies it (`Protocol.fill` for the command line, `Protocol.check`
for any `EvalConfig`) -- or ``tokbench gen score --protocol NAME`` for a preset of sample
scores (``command="gen score"``: gFID with ADM's Inception Score splits) -- and the run
records it as the results' top-level ``protocol`` block (`Protocol.record`), which the
leaderboard groups rankings by.

A preset refuses what would make its numbers incomparable: a setting that contradicts it, a
metric it reports being skipped, or the weights of such a metric (or of its recognizer)
missing. What it cannot refuse without making small test runs impossible -- a dataset of
another size than the published split, ``--limit`` -- is listed in the record's
``deviations``; a result with deviations does not reproduce the column.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

PREPROCESSINGS = ("default", "adm", "var", "vtbench")  # see tokbench.reference_preprocessing
COMMANDS = ("eval", "gen score")


@dataclass(frozen=True)
class Protocol:
    """One published column's evaluation settings (see the module docstring).

    ``resolutions``: the allowed ``--resolution`` values, the first the default.
    ``metrics``: task -> the metrics that make up the published column (their weights must be present).
    ``task_options``: task -> options the preset pins (``{"text": {"ocr": "parseq"}}``).
    ``weights``: extra weight files it needs beyond its metrics' (a recognizer's: ``"parseq"``).
    ``num_images``: the published split's size (None: any).
    ``command``: the command that applies it (``eval``, or ``gen score`` for sample scores);
    ``is_split_size``: images per Inception Score split (ADM's 5,000) where it scores IS.
    """

    name: str
    title: str
    reproduces: str
    data: str
    tasks: tuple[str, ...]
    resolutions: tuple[str, ...]
    metrics: dict[str, tuple[str, ...]]
    preprocessing: str = "default"
    task_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    weights: tuple[str, ...] = ()
    num_images: int | None = None
    command: str = "eval"
    is_split_size: int | None = None

    def __post_init__(self) -> None:
        if not self.name or not self.name.replace("-", "").replace("_", "").isalnum():
            raise ValueError(f"protocol name must be letters, digits, '-' or '_', got {self.name!r}")
        if self.preprocessing not in PREPROCESSINGS:
            raise ValueError(f"protocol {self.name}: preprocessing must be one of {PREPROCESSINGS}, "
                             f"got {self.preprocessing!r}")
        if self.command not in COMMANDS:
            raise ValueError(f"protocol {self.name}: command must be one of {COMMANDS}, got {self.command!r}")
        if not self.tasks or not self.resolutions:
            raise ValueError(f"protocol {self.name}: needs at least one task and one resolution")
        if set(self.metrics) - set(self.tasks) or set(self.task_options) - set(self.tasks):
            raise ValueError(f"protocol {self.name}: metrics and task options may only name its tasks {self.tasks}")

    # -- applying it ----------------------------------------------------------------------
    def fill(self, tasks: list[str] | None, resolution: str | None, task_options: dict[str, dict],
             skip_metrics: list[str]) -> tuple[list[str], str, dict[str, dict], list[str]]:
        """The run's tasks, resolution, task options and skipped metrics under this preset, from
        what the user gave (None: not given). Anything given that contradicts the preset is a
        ``ValueError``. Metrics with weights that its tasks could report but the preset does not
        are skipped (their weights are not needed for the published column)."""
        self.require_command("eval")
        if tasks and list(tasks) != list(self.tasks):
            raise ValueError(f"--protocol {self.name} runs the tasks {','.join(self.tasks)}; drop --tasks "
                             f"(got {','.join(tasks)})")
        resolution = resolution or self.resolutions[0]
        self._check_resolution(resolution)
        merged = {task: dict(options) for task, options in task_options.items()}
        for task, pinned in self.task_options.items():
            for key, value in pinned.items():
                given = merged.get(task, {}).get(key)
                if given is not None and given != value:
                    raise ValueError(f"--protocol {self.name} pins {task} option {key}={value!r}; got {given!r}")
                merged.setdefault(task, {})[key] = value
        return list(self.tasks), resolution, merged, sorted(set(skip_metrics) | set(self.unreported_weighted()))

    def unreported_weighted(self) -> list[str]:
        """Metrics that need weights, listed by its tasks but not part of the published column."""
        from tokbench.metrics.registry import get_metric
        from tokbench.task_registry import get_task

        reported = {m for ms in self.metrics.values() for m in ms}
        return [m for t in self.tasks for m in get_task(t).metric_names()
                if m not in reported and get_metric(m).weights is not None]

    def require_command(self, command: str) -> None:
        """``ValueError`` unless this preset is applied by ``command`` (``eval`` or ``gen score``)."""
        if self.command != command:
            raise ValueError(f"--protocol {self.name} is a preset of 'tokbench {self.command}', "
                             f"not of 'tokbench {command}'")

    def _check_resolution(self, resolution: str) -> None:
        if resolution not in self.resolutions:
            raise ValueError(f"--protocol {self.name} is defined at --resolution {' or '.join(self.resolutions)}, "
                             f"got {resolution!r}")

    def required_weights(self) -> list[str]:
        """Weight files (keys of `tokbench.weights.WEIGHT_FILES`) of its metrics and recognizer."""
        from tokbench.metrics.registry import get_metric

        names = [get_metric(m).weights for ms in self.metrics.values() for m in ms]
        return sorted({n for n in names if n} | set(self.weights))

    def check(self, cfg) -> None:
        """``ValueError`` unless the `EvalConfig` ``cfg`` runs exactly this preset; a missing
        weights file of one of its metrics is `tokbench.weights.MissingWeightsError`."""
        from tokbench import weights

        self.require_command("eval")
        if list(cfg.tasks) != list(self.tasks):
            raise ValueError(f"--protocol {self.name} runs the tasks {','.join(self.tasks)}, "
                             f"not {','.join(cfg.tasks)}")
        self._check_resolution(cfg.resolution)
        if cfg.preprocessing != self.preprocessing:
            raise ValueError(f"--protocol {self.name} prepares images with {self.preprocessing!r}, "
                             f"not {cfg.preprocessing!r}")
        for task, pinned in self.task_options.items():
            given = cfg.task_options.get(task, {})
            wrong = {k: given.get(k) for k, v in pinned.items() if given.get(k) != v}
            if wrong:
                raise ValueError(f"--protocol {self.name} pins {task} options {pinned}, got {wrong}")
        reported = {m for ms in self.metrics.values() for m in ms}
        skipped = sorted(reported & set(cfg.skip_metrics))
        if skipped:
            raise ValueError(f"--protocol {self.name} reports {', '.join(skipped)}: it cannot be skipped "
                             "(--skip-metric); run without --protocol to leave it out")
        weights.require(self.required_weights(), cfg.weights_dir, skippable=False)

    def record(self, resolution: str, num_images: dict[str, int], deviations: list[str] = ()) -> dict:
        """The results' ``protocol`` block: the preset's settings as applied, and its deviations
        (those given, e.g. ``--limit``, and a data size other than the published split's).

        ``num_images``: task -> images scored (or sampled) in this run.
        """
        deviations = list(deviations)
        if resolution not in self.resolutions:
            deviations.append(f"resolution {resolution}, the preset's is {' or '.join(self.resolutions)}")
        if self.num_images is not None:
            for task, n in num_images.items():
                if n != self.num_images:
                    deviations.append(f"{task}: {n} images, the published split has {self.num_images}")
        return {"name": self.name, "title": self.title, "reproduces": self.reproduces, "data": self.data,
                "command": self.command, "tasks": list(self.tasks), "resolution": resolution,
                "preprocessing": self.preprocessing, "is_split_size": self.is_split_size,
                "metrics": {t: list(ms) for t, ms in self.metrics.items()},
                "task_options": {t: dict(o) for t, o in self.task_options.items()},
                "deviations": deviations}
