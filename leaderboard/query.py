"""Filters and sort order of a leaderboard listing, validated before anything reaches the database.

Every value ends up as a bound parameter or as a key looked up in a fixed table, so a
SQL-looking string can only ever match nothing (a filter) or be refused (a sort key).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from tokbench.leaderboard.validation import Problem, Refused
from tokbench.task_registry import get_task

# Sort keys that are entry columns (the rest must be metric names of the chosen task).
SORT_COLUMNS = ("id", "created", "tokenizer", "family", "kind", "tokens_per_image", "bits_per_image", "parameters")
STATUSES = ("verified", "unverified", "all")


def primary_metric(task: str) -> str | None:
    """The metric a task's table is ranked by unless asked otherwise, and shown in the plot:
    the task's own ``primary`` (`tokbench.task_registry`); None for a task not installed here."""
    try:
        return get_task(task).primary
    except ValueError:
        return None

NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,100}$")
MAX_LIMIT = 1000
# Entry ids are 32-bit integer columns on PostgreSQL (SQLite's hold 64 bits; the smaller bound
# holds for both), and no listing can page past the last id.
MAX_ENTRY_ID = 2**31 - 1
MAX_OFFSET = MAX_ENTRY_ID
# Text filters are bound parameters; PostgreSQL refuses NUL in them, and no stored text holds one.
UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


@dataclass
class EntryQuery:
    """What to list: filters, sort key and order, page. Build with :meth:`checked`."""

    task: str | None = None
    family: list[str] = field(default_factory=list)
    kind: str | None = None
    status: str = "verified"
    q: str | None = None
    min_tokens: float | None = None
    max_tokens: float | None = None
    min_bits: float | None = None
    max_bits: float | None = None
    sort: str | None = None
    order: str | None = None  # "asc" | "desc"; default: best first for metrics, ascending otherwise
    limit: int = 500
    offset: int = 0

    def checked(self) -> "EntryQuery":
        """Self, after checking every field; :class:`Refused` (422) naming each bad one."""
        problems = []
        if self.task is not None and not NAME.match(self.task):
            problems.append(Problem("task", "must be a task name (letters, digits, _ . : -)"))
        if self.kind not in (None, "discrete", "continuous"):
            problems.append(Problem("kind", "must be 'discrete' or 'continuous'"))
        if self.status not in STATUSES:
            problems.append(Problem("status", f"must be one of {', '.join(STATUSES)}"))
        if self.order not in (None, "asc", "desc"):
            problems.append(Problem("order", "must be 'asc' or 'desc'"))
        if self.sort is not None and self.sort not in SORT_COLUMNS:
            if not NAME.match(self.sort):
                problems.append(Problem("sort", f"must be one of {', '.join(SORT_COLUMNS)} or a metric name"))
            elif self.task is None:
                problems.append(Problem("sort", f"sorting by metric {self.sort!r} needs a task"))
        if not 1 <= self.limit <= MAX_LIMIT:
            problems.append(Problem("limit", f"must be between 1 and {MAX_LIMIT}"))
        if not 0 <= self.offset <= MAX_OFFSET:
            problems.append(Problem("offset", f"must be between 0 and {MAX_OFFSET}"))
        if self.q is not None and len(self.q) > 200:
            problems.append(Problem("q", "at most 200 characters"))
        for name, values in (("q", [self.q]), ("family", self.family)):
            if any(v is not None and UNSTORABLE.search(v) for v in values):
                problems.append(Problem(name, "must not contain NUL characters or unpaired surrogates"))
        if any(len(f) > 100 for f in self.family):
            problems.append(Problem("family", "a family name has at most 100 characters"))
        for name in ("min_tokens", "max_tokens", "min_bits", "max_bits"):
            value = getattr(self, name)
            if value is not None and not math.isfinite(value):
                problems.append(Problem(name, "must be a finite number"))
        if problems:
            raise Refused(422, problems)
        return self

    @property
    def sort_key(self) -> str:
        """The effective sort key: the given one, else the task's primary metric, else ``id``."""
        if self.sort:
            return self.sort
        return (primary_metric(self.task) or "id") if self.task else "id"
