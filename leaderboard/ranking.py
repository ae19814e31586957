"""Ranked tables of the leaderboard: one per task and setting, never across test sets.

A score is ranked only against scores of the same task under the same
`tokbench.comparability.Setting` (suite, protocol preset, resolution): two entries scored on
different suites never share a ranked column. Within a setting the entries are ranked by the
task's primary metric (or, where no entry of the setting reports it, the first of the task's
``headline`` metrics that some entry reports), best first by the metric registry's direction.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from tokbench.comparability import Setting
from tokbench.leaderboard.query import primary_metric
from tokbench.leaderboard.store import Entry
from tokbench.metrics.registry import get_metric, is_registered, registration_order
from tokbench.task_registry import get_task

HEADLINE_SIZE = 3


@dataclass
class Board:
    """One ranked table: ``task`` under ``setting``, its entries best first."""

    task: str
    setting: Setting
    entries: list[Entry]
    rank_metric: str | None
    headline: list[str]
    ranks: list[int | None] = field(default_factory=list)  # 1-based; None: no score in the rank metric

    @property
    def directions(self) -> dict[str, bool]:
        """Metric -> higher is better, from the registry (never from a submission)."""
        return {m: get_metric(m).higher_is_better for m in self.headline if is_registered(m)}


def settings_of(entries: list[Entry], task: str) -> dict[Setting, list[Entry]]:
    """The entries that ran ``task``, by the setting they ran it under (largest group first)."""
    groups: dict[Setting, list[Entry]] = {}
    for entry in entries:
        setting = entry.setting(task) if task in entry.metrics else None
        if setting is not None:
            groups.setdefault(setting, []).append(entry)
    return dict(sorted(groups.items(), key=lambda item: (-len(item[1]), item[0].suite, item[0].protocol or "",
                                                         item[0].resolution or "")))


def _declared_headline(task: str) -> tuple[str, ...]:
    try:
        return tuple(get_task(task).headline)
    except ValueError:  # a task whose plug-in is not installed here
        return ()


def headline_metrics(task: str, entries: list[Entry], size: int = HEADLINE_SIZE) -> list[str]:
    """The metrics a compact table shows: the task's ``headline`` ones that some entry reports,
    topped up in registration order; the ranking metric first."""
    reported = {m for e in entries for m in e.metrics.get(task, {}) if is_registered(m)}
    primary = primary_metric(task)
    preferred = [primary] if primary in reported else []
    preferred += [m for m in _declared_headline(task) if m in reported and m not in preferred]
    preferred += [m for m in registration_order(reported) if m not in preferred]
    return preferred[:size]


def rank(entries: list[Entry], task: str, metric: str | None) -> tuple[list[Entry], list[int | None]]:
    """``entries`` best first by ``metric`` (entries without it last, by id) and their ranks;
    equal scores share a rank (1, 2, 2, 4)."""
    if metric is None:
        return sorted(entries, key=lambda e: e.id), [None] * len(entries)
    sign = -1.0 if get_metric(metric).higher_is_better else 1.0
    scored = sorted((e for e in entries if metric in e.metrics[task]),
                    key=lambda e: (sign * e.metrics[task][metric]["mean"], e.id))
    unscored = sorted((e for e in entries if metric not in e.metrics[task]), key=lambda e: e.id)
    ranks: list[int | None] = []
    for i, entry in enumerate(scored):
        tied = i > 0 and entry.metrics[task][metric]["mean"] == scored[i - 1].metrics[task][metric]["mean"]
        ranks.append(ranks[-1] if tied else i + 1)
    return scored + unscored, ranks + [None] * len(unscored)


def boards(entries: list[Entry], task: str) -> list[Board]:
    """One ranked :class:`Board` per setting of ``task`` among ``entries``, largest first."""
    out = []
    for setting, members in settings_of(entries, task).items():
        headline = headline_metrics(task, members)
        ordered, ranks = rank(members, task, headline[0] if headline else None)
        out.append(Board(task, setting, ordered, headline[0] if headline else None, headline, ranks))
    return out
