"""The rate–distortion plot: one point per entry (bits per image vs a quality metric), Pareto front marked.

Bits per image run over decades (a 16-token 1D tokenizer to a 4,096-token VAE), so the x axis is
always logarithmic. Every point carries its tokenizer's name, placed beside it where it does not
cover another name (a greedy search over a few offsets; a name that fits nowhere free is
placed at the least crowded offset).

Drawn as inline SVG on the server (no JavaScript library, no network), so the static export
and a browser without JavaScript show it too. Every text that comes from a submission goes
through Jinja2's autoescaping in the template; this module only computes coordinates.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

WIDTH, HEIGHT = 720, 340
MARGIN = {"left": 64, "right": 16, "top": 16, "bottom": 44}
LABEL_FONT_PX = 11
CHAR_PX = 6.2  # average advance of an 11 px sans-serif character: label boxes for collision checks
LABEL_MAX = 28


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
    # the name drawn beside the point: anchor position and text-anchor ("start" | "end")
    label_x: float = 0.0
    label_y: float = 0.0
    label_anchor: str = "start"

    @property
    def short_label(self) -> str:
        """The label as drawn: at most :data:`LABEL_MAX` characters."""
        return self.label if len(self.label) <= LABEL_MAX else self.label[:LABEL_MAX - 1] + "…"


@dataclass
class Plot:
    """Everything the template needs to draw the plot."""

    metric: str
    higher_is_better: bool
    points: list[Point]
    front: list[Point]
    x_ticks: list[tuple[float, str]] = field(default_factory=list)
    y_ticks: list[tuple[float, str]] = field(default_factory=list)
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
    if value != 0 and (abs(value) >= 1e7 or abs(value) < 1e-3):
        return f"{value:.0e}"
    if abs(value) >= 1000 and float(value).is_integer():
        return f"{value:,.0f}"
    return f"{value:g}"


def build_plot(points: list[Point], metric: str, higher_is_better: bool) -> Plot | None:
    """Lay out ``points`` (at least one) in SVG pixels; ``None`` when there is nothing to plot."""
    points = [p for p in points if p.x is not None and p.y is not None and p.x > 0]
    if not points:
        return None
    xs, ys = [p.x for p in points], [p.y for p in points]
    tx = math.log10
    x_lo, x_hi = tx(min(xs)), tx(max(xs))
    y_lo, y_hi = min(ys), max(ys)
    pad_x = (x_hi - x_lo) * 0.08 or 0.5  # one point: half a decade either side
    pad_y = (y_hi - y_lo) * 0.1 or (abs(y_lo) * 0.1 or 1.0)
    x_lo, x_hi, y_lo, y_hi = x_lo - pad_x, x_hi + pad_x, y_lo - pad_y, y_hi + pad_y
    plot = Plot(metric=metric, higher_is_better=higher_is_better, points=points, front=[])
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
    decades = range(math.ceil(x_lo), math.floor(x_hi) + 1)
    if len(decades) >= 2:
        plot.x_ticks = [(px(10.0 ** e), _fmt(10.0 ** e)) for e in decades]
    else:  # less than a decade shown: 1-2-5 steps so that the axis has ticks at all
        steps = [m * 10.0 ** e for e in range(math.floor(x_lo), math.ceil(x_hi) + 1) for m in (1, 2, 5)]
        plot.x_ticks = [(px(v), _fmt(v)) for v in steps if x_lo <= math.log10(v) <= x_hi]
    plot.y_ticks = [(py(v), _fmt(v)) for v in _nice_ticks(y_lo, y_hi)]
    place_labels(plot)
    return plot


OFFSETS = [(dy, side) for dy in (0, -12, 12, -24, 24, -36, 36) for side in ("start", "end")]  # preferred first


def place_labels(plot: Plot) -> None:
    """Put each point's name beside it: right of the point, else left, at the first of a few
    vertical offsets where it covers no other name or point and stays inside the frame; where
    every place is covered, the least covered one. The area each candidate place covers is
    computed for all candidates and all boxes drawn so far in one array step per point."""
    left, right = plot.margin["left"], plot.width - plot.margin["right"]
    top, bottom = plot.margin["top"], plot.height - plot.margin["bottom"]
    taken = np.zeros((2 * len(plot.points), 4))  # boxes drawn: x0, y0, x1, y1
    taken[:len(plot.points)] = [(p.px - 5, p.py - 5, p.px + 5, p.py + 5) for p in plot.points]
    count = len(plot.points)
    half = LABEL_FONT_PX / 2 + 1
    for p in sorted(plot.points, key=lambda p: (p.px, p.py)):
        width = len(p.short_label) * CHAR_PX
        boxes = np.array([(p.px + 8 if side == "start" else p.px - 8 - width, p.py + dy - half,
                           p.px + 8 + width if side == "start" else p.px - 8, p.py + dy + half)
                          for dy, side in OFFSETS])
        inside = (boxes[:, 0] >= left) & (boxes[:, 2] <= right) & (boxes[:, 1] >= top) & (boxes[:, 3] <= bottom)
        drawn = taken[:count]
        w = np.minimum(boxes[:, None, 2], drawn[None, :, 2]) - np.maximum(boxes[:, None, 0], drawn[None, :, 0])
        h = np.minimum(boxes[:, None, 3], drawn[None, :, 3]) - np.maximum(boxes[:, None, 1], drawn[None, :, 1])
        covered = (np.maximum(w, 0.0) * np.maximum(h, 0.0)).sum(axis=1)
        if inside.any():
            # the first free place in order of preference, else the least covered one
            free = np.flatnonzero(inside & (covered == 0))
            choice = int(free[0]) if len(free) else int(np.flatnonzero(inside)[np.argmin(covered[inside])])
            box, side = tuple(boxes[choice]), OFFSETS[choice][1]
        else:  # wider than the frame on both sides: clip at the right edge
            x0 = min(p.px + 8, right - width)
            box, side = (x0, p.py - half, x0 + width, p.py + half), "start"
        p.label_anchor = side
        p.label_x = box[0] if side == "start" else box[2]
        p.label_y = (box[1] + box[3]) / 2 + LABEL_FONT_PX * 0.35  # baseline from the box's middle
        taken[count] = box
        count += 1


@dataclass
class CurvePlot:
    """A metric against the number of tokens decoded (log2 axis): the prefix task's curve."""

    metric: str
    points: list[tuple[float, float, int, float]]  # (px, py, tokens, value)
    band: str  # SVG polygon points of the 95% interval
    x_ticks: list[tuple[float, str]]
    y_ticks: list[tuple[float, str]]
    width: int = 560
    height: int = 260
    margin: dict = field(default_factory=lambda: dict(MARGIN))

    @property
    def path(self) -> str:
        return " ".join(f"{px:.1f},{py:.1f}" for px, py, _, _ in self.points)


def build_prefix_curve(curve: list[dict], metric: str = "psnr") -> CurvePlot | None:
    """Lay out ``extra["prefix_curve"]`` (points ``{"tokens": k, metric: {"mean", "ci95"}}``);
    ``None`` when fewer than two points carry the metric."""
    rows = [(int(p["tokens"]), p[metric]) for p in curve if isinstance(p, dict) and isinstance(p.get(metric), dict)
            and isinstance(p.get("tokens"), (int, float)) and p["tokens"] > 0]
    if len(rows) < 2:
        return None
    plot = CurvePlot(metric=metric, points=[], band="", x_ticks=[], y_ticks=[])
    x_lo, x_hi = math.log2(rows[0][0]), math.log2(rows[-1][0])
    lows = [m["ci95"][0] for _, m in rows]
    highs = [m["ci95"][1] for _, m in rows]
    y_lo, y_hi = min(lows), max(highs)
    pad = (y_hi - y_lo) * 0.1 or 1.0
    y_lo, y_hi = y_lo - pad, y_hi + pad
    inner_w = plot.width - plot.margin["left"] - plot.margin["right"]
    inner_h = plot.height - plot.margin["top"] - plot.margin["bottom"]
    px = lambda k: plot.margin["left"] + (math.log2(k) - x_lo) / ((x_hi - x_lo) or 1.0) * inner_w  # noqa: E731
    py = lambda v: plot.margin["top"] + (1 - (v - y_lo) / (y_hi - y_lo)) * inner_h  # noqa: E731
    plot.points = [(px(k), py(m["mean"]), k, m["mean"]) for k, m in rows]
    upper = [f"{px(k):.1f},{py(m['ci95'][1]):.1f}" for k, m in rows]
    lower = [f"{px(k):.1f},{py(m['ci95'][0]):.1f}" for k, m in reversed(rows)]
    plot.band = " ".join(upper + lower)
    plot.x_ticks = [(px(k), _fmt(k)) for k, _ in rows]
    plot.y_ticks = [(py(v), _fmt(v)) for v in _nice_ticks(y_lo, y_hi)]
    return plot
