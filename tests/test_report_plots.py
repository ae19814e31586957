"""Readable grid captions, n and intervals on the CER curve, an uncluttered rate-distortion plot (issue #22 item 7)."""
import matplotlib
import numpy as np
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from tokbench.imageio import tensor_to_uint8  # noqa: E402
from tokbench.tasks.grids import _label  # noqa: E402


def ink_rows(strip) -> int:
    """Rows of the caption strip that hold dark pixels (the text's height)."""
    gray = tensor_to_uint8(strip).mean(axis=2)
    return int((gray < 128).any(axis=1).sum())


def test_grid_captions_are_large_enough_to_read():
    assert ink_rows(_label("HIH", 300)) >= 11  # a capital letter at least 11 px tall (the old bitmap font: 8)


def test_long_captions_wrap_instead_of_being_cut():
    text = "worst: photos/astronaut.png (energy kept 0.412) " * 3
    one_line = _label("worst", 300)
    wrapped = _label(text, 300)
    assert wrapped.shape[-2] >= 2 * one_line.shape[-2] - 8
    gray = tensor_to_uint8(wrapped).mean(axis=2)
    assert (gray[:, -3:] > 250).all()  # nothing drawn up to the right edge: no line ran off the strip


@pytest.fixture
def capture():
    figures = []

    def new_figure(figsize=(6.4, 4.2)):
        figures.append(plt.subplots(figsize=figsize))
        return figures[-1]

    yield figures, new_figure
    plt.close("all")


def run(name, text_extra=None, bits=None, psnr=None):
    tasks = {}
    if text_extra is not None:
        tasks["text"] = {"extra": {"cer_gt_by_font_size": text_extra}, "metrics": {}}
    if bits is not None:
        tasks["reconstruction"] = {"metrics": {"psnr": {"mean": psnr, "ci95": [psnr - 1, psnr + 1], "n": 9}}}
    return {"tokenizer": {"name": name, "bits_per_image": bits}, "tasks": tasks}


def test_cer_curve_has_an_interval_and_n_at_every_point(tmp_path, capture):
    from tokbench.tasks.text import TextTask

    figures, new_figure = capture
    by_size = {"8": {"mean": 0.5, "ci95": [0.3, 0.7], "n": 3}, "12": {"mean": 0.2, "ci95": [0.1, 0.3], "n": 4},
               "20": {"mean": 0.05, "ci95": [0.0, 0.1], "n": 5}}
    assert TextTask.plots([run("jpeg:q=50", by_size)], tmp_path, new_figure)
    ax = figures[0][1]
    labels = sorted(t.get_text() for t in ax.texts)
    assert labels == ["n=3", "n=4", "n=5"]
    bars = [c for c in ax.containers if c.has_yerr]
    assert len(bars) == 1
    segments = bars[0].lines[2][0].get_segments()
    assert sorted(round(float(abs(s[1][1] - s[0][1])), 6) for s in segments) == [0.1, 0.2, 0.4]


def test_rate_distortion_plot_is_large_and_names_runs_without_collisions(tmp_path, capture):
    from tokbench.tasks.reconstruction import ReconstructionTask

    figures, new_figure = capture
    runs = [run(f"jpeg:q={q}", bits=1000.0 * q, psnr=25 + q / 10) for q in (10, 11, 12, 13, 50, 90)]
    assert ReconstructionTask.plots(runs, tmp_path, new_figure)
    fig, ax = figures[0]
    assert tuple(fig.get_size_inches()) >= (10, 6)
    assert len(ax.texts) == 0  # no names drawn over the points and error bars
    legend = ax.get_legend()
    assert [t.get_text() for t in legend.get_texts()] == [r["tokenizer"]["name"] for r in runs]
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    assert legend.get_window_extent(renderer).x0 >= ax.get_window_extent(renderer).x1  # beside the axes
