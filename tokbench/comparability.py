"""Which results can be ranked against each other: the setting a task was scored under.

Two numbers of one metric are comparable only when they come from the same test set scored
the same way: the same suite (dataset name), the same protocol preset (``tokbench eval
--protocol``, recorded as a top-level ``"protocol": {"name": ...}``; absent or null means
none) and the same resolution policy. The leaderboard ranks and draws Pareto fronts only
within one :class:`Setting`; ``tokbench compare`` warns when its runs differ in one.

Reading is tolerant: results written before protocols existed have no ``protocol`` field
and count as "no protocol".
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, order=True)
class Setting:
    """What decides whether two scores of a task can share a ranked column."""

    suite: str
    protocol: str | None
    resolution: str | None

    def label(self) -> str:
        """``text · no protocol · native`` for selectors and warnings."""
        protocol = f"protocol {self.protocol}" if self.protocol else "no protocol"
        resolution = "resolution unknown" if self.resolution is None else self._resolution_label()
        return f"{self.suite} · {protocol} · {resolution}"

    def _resolution_label(self) -> str:
        res = self.resolution or ""
        if res.isdigit():
            return f"{res} px"
        return res.replace("letterbox:", "letterbox ") + (" px" if res.startswith("letterbox:") else "")

    @property
    def key(self) -> str:
        """A stable string form, usable as an HTML attribute or a URL parameter."""
        return "|".join((self.suite, self.protocol or "", self.resolution or ""))


def protocol_name(results: dict[str, Any]) -> str | None:
    """The protocol preset a run used: ``results["protocol"]["name"]``; None when absent, null or malformed."""
    protocol = results.get("protocol")
    if isinstance(protocol, dict) and isinstance(protocol.get("name"), str) and protocol["name"]:
        return protocol["name"]
    return None


def task_settings(results: dict[str, Any]) -> dict[str, Setting]:
    """Each task of a (valid) results object with the setting it was scored under."""
    resolutions = {d["name"]: d.get("resolution") for d in results.get("datasets", [])}
    protocol = protocol_name(results)
    return {task: Setting(block["dataset"], protocol, resolutions.get(block["dataset"]))
            for task, block in results.get("tasks", {}).items()}


def recognizer(block: dict[str, Any]) -> str | None:
    """The OCR engine a task block records (``extra.protocol.ocr``, the text task's), else None."""
    extra = block.get("extra")
    recorded = extra.get("protocol") if isinstance(extra, dict) else None
    value = recorded.get("ocr") if isinstance(recorded, dict) else None
    return value if isinstance(value, str) else None


def comparability_warnings(runs: list[dict[str, Any]], names: list[str] | None = None) -> list[str]:
    """One line per task whose runs were scored under different settings (suite, protocol or
    resolution), naming each run's setting; empty when every task is comparable across runs."""
    names = names or [r["tokenizer"]["name"] for r in runs]
    per_task: dict[str, list[tuple[str, Setting]]] = {}
    for name, results in zip(names, runs):
        for task, setting in task_settings(results).items():
            per_task.setdefault(task, []).append((name, setting))
    warnings = []
    for task, rows in per_task.items():
        settings = {s for _, s in rows}
        if len(settings) < 2:
            continue
        differs = [what for what in ("suite", "protocol", "resolution") if len({getattr(s, what) for s in settings}) > 1]
        runs_text = "; ".join(f"{name}: {setting.label()}" for name, setting in rows)
        warnings.append(f"{task}: the runs differ in {' and '.join(differs)}, so their {task} scores are not "
                        f"comparable ({runs_text})")
    return warnings
