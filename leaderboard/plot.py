"""The rate–distortion plot: one point per entry (bits per image vs a quality metric), Pareto front marked.

Drawn as inline SVG on the server (no JavaScript library, no network), so the static export
and a browser without JavaScript show it too. Every text that comes from a submission goes
through Jinja2's autoescaping in the template; this module only computes coordinates.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

WIDTH, HEIGHT = 640, 320
MARGIN = {"left": 64, "right": 16, "top": 16, "bottom": 44}


@dataclass
class Point:
    """One entry in the plot, in data units and in SVG pixels."""

    entry_id: int
    label: str
    family: str
    x: float
    y: float
    px: float = 0.0
    py: float = 0.0
    on_front: bool = False


@dataclass
class Plot:
    """Everything the template needs to draw the plot."""

    metric: str
    higher_is_better: bool
    points: list[Point]
    front: list[Point]
    x_ticks: list[tuple[float, str]] = field(default_factory=list)
    y_ticks: list[tuple[float, str]] = field(default_factory=list)
    log_x: bool = False
    width: int = WIDTH
    height: int = HEIGHT
    margin: dict[str, int] = field(default_factory=lambda: dict(MARGIN))

    @property
    def front_path(self) -> str:
        """SVG ``points`` of the front as a polyline, left to right."""
        return " ".join(f"{p.px:.1f},{p.py:.1f}" for p in self.front)


def pareto_front(points: list[Point], higher_is_better: bool) -> list[Point]:
    """Points no other point beats on both fewer-or-equal bits and better-or-equal quality; sorted by bits."""
    sign = 1.0 if higher_is_better else -1.0
    front, best = [], -math.inf
    for p in sorted(points, key=lambda p: (p.x, -sign * p.y)):
        if sign * p.y > best:
            front.append(p)
            best = sign * p.y
    return front


def _nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / count
    step = 10 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 2.5, 5, 10) if raw <= m * step)
    first = math.ceil(lo / step) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


def _fmt(value: float) -> str:
    if value != 0 and (abs(value) >= 1e6 or abs(value) < 1e-3):
        return f"{value:.0e}"
    return f"{value:g}"


def build_plot(points: list[Point], metric: str, higher_is_better: bool) -> Plot | None:
    """Lay out ``points`` (at least one) in SVG pixels; ``None`` when there is nothing to plot."""
    points = [p for p in points if p.x is not None and p.y is not None and p.x > 0]
    if not points:
        return None
    xs, ys = [p.x for p in points], [p.y for p in points]
    log_x = max(xs) / min(xs) > 20
    tx = (lambda v: math.log10(v)) if log_x else (lambda v: v)
    x_lo, x_hi = tx(min(xs)), tx(max(xs))
    y_lo, y_hi = min(ys), max(ys)
    pad_x = (x_hi - x_lo) * 0.08 or (abs(x_lo) * 0.1 or 1.0)
    pad_y = (y_hi - y_lo) * 0.1 or (abs(y_lo) * 0.1 or 1.0)
    x_lo, x_hi, y_lo, y_hi = x_lo - pad_x, x_hi + pad_x, y_lo - pad_y, y_hi + pad_y
    plot = Plot(metric=metric, higher_is_better=higher_is_better, points=points, front=[], log_x=log_x)
    inner_w = plot.width - plot.margin["left"] - plot.margin["right"]
    inner_h = plot.height - plot.margin["top"] - plot.margin["bottom"]

    def px(v: float) -> float:
        return plot.margin["left"] + (tx(v) - x_lo) / (x_hi - x_lo) * inner_w

    def py(v: float) -> float:
        return plot.margin["top"] + (1 - (v - y_lo) / (y_hi - y_lo)) * inner_h

    for p in points:
        p.px, p.py = px(p.x), py(p.y)
    plot.front = pareto_front(points, higher_is_better)
    for p in plot.front:
        p.on_front = True
    if log_x:
        plot.x_ticks = [(px(10.0 ** e), _fmt(10.0 ** e)) for e in range(math.ceil(x_lo), math.floor(x_hi) + 1)]
    else:
        plot.x_ticks = [(px(v), _fmt(v)) for v in _nice_ticks(x_lo, x_hi) if v > 0]
    plot.y_ticks = [(py(v), _fmt(v)) for v in _nice_ticks(y_lo, y_hi)]
    return plot
