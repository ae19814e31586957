"""Resuming `tokbench eval` after kills and cut-short cache lines; the rate at the evaluation
resolution; batch-size effects; word boxes under the resolution policies."""
from __future__ import annotations


import numpy as np
import pandas as pd
import pytest
from PIL import Image

from tokbench.tasks.base import Pair
from tokbench.tasks.data import Item, crop_content, prepare
from tokbench.tasks.runner import EvalConfig, Interrupted, run_eval
from tokbench.tasks.text import _scaled_boxes

SKIP = ["lpips", "rfid"]


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory):
    """Six real photo crops, 96 x 64 (non-square)."""
    from skimage import data

    folder = tmp_path_factory.mktemp("photos")
    for name in ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "retina"):
        Image.fromarray(getattr(data, name)()).convert("RGB").resize((96, 64), Image.BICUBIC).save(folder / f"{name}.png")
    return folder


def config(folder, out, **kw):
    base = dict(tokenizer="jpeg:q=30", tasks=["reconstruction", "detail"], data=folder, out=out, skip_metrics=SKIP,
                workers=2)
    return EvalConfig(**{**base, **kw})


def scores(out) -> pd.DataFrame:
    return pd.read_csv(out / "per_image.csv").drop(columns=["bits", "tokens"], errors="ignore")


def test_a_run_killed_in_its_last_task_and_a_finished_run_both_resume(photo_folder, tmp_path):
    reference = run_eval(config(photo_folder, tmp_path / "ref"))
    out = tmp_path / "killed"
    with pytest.raises(Interrupted):  # 6 reconstruction images, then killed 2 images into detail
        run_eval(config(photo_folder, out, stop_after=8, batch_size=2))
    resumed = run_eval(config(photo_folder, out))  # reconstruction has nothing left to do
    assert resumed["tasks"] == reference["tasks"]
    again = run_eval(config(photo_folder, out))  # a finished run: every task has nothing left
    assert again["tasks"] == reference["tasks"]
    pd.testing.assert_frame_equal(scores(out), scores(tmp_path / "ref"))


def test_a_cache_line_cut_short_by_a_crash_costs_one_image_not_two(photo_folder, tmp_path):
    out = tmp_path / "cut"
    first = run_eval(config(photo_folder, out, tasks=["reconstruction"]))
    cache = out / "cache" / "reconstruction.r0.jsonl"
    cache.write_bytes(cache.read_bytes()[:-40])  # the last row loses its end (and newline)
    again = run_eval(config(photo_folder, out, tasks=["reconstruction"]))  # one rerun completes
    assert again["tasks"] == first["tasks"]
    lines = cache.read_text().splitlines()
    # 5 intact rows, the cut one (ignored), and the re-scored one on a fresh line of its own
    assert len(lines) == 7 and sum(1 for line in lines if line.endswith("}")) == 6


def test_bits_and_tokens_are_measured_at_the_evaluation_resolution(photo_folder, tmp_path):
    runs = {(spec, res): run_eval(config(photo_folder, tmp_path / f"{spec}_{res}".replace(":", "_"), tokenizer=spec,
                                         tasks=["reconstruction"], resolution=res, limit=3))
            for spec in ("vq:size=tiny", "jpeg:q=50") for res in ("256", "native")}
    vq256, vq_native = runs["vq:size=tiny", "256"]["tokenizer"], runs["vq:size=tiny", "native"]["tokenizer"]
    assert (vq256["tokens_per_image"], vq256["bits_per_image"]) == (32 * 32, 32 * 32 * 8)  # f8, 256 codes
    assert (vq_native["tokens_per_image"], vq_native["bits_per_image"]) == (12 * 8, 12 * 8 * 8)  # 96 x 64 px
    assert vq256["rate_resolution"] == "256" and vq_native["rate_resolution"] == "native"
    for res in ("256", "native"):
        run = runs["jpeg:q=50", res]
        measured = pd.read_csv(tmp_path / f"jpeg_q=50_{res}" / "per_image.csv")["bits"].mean()
        assert run["tokenizer"]["bits_per_image"] == pytest.approx(measured) and run["tokenizer"]["tokens_per_image"] is None
    assert runs["jpeg:q=50", "256"]["tokenizer"]["bits_per_image"] > 2 * runs["jpeg:q=50", "native"]["tokenizer"]["bits_per_image"]


def test_batch_size_changes_learned_reconstructions_by_float_rounding_only(photo_folder, tmp_path):
    one, eight = (run_eval(config(photo_folder, tmp_path / f"b{b}", tokenizer="vq:size=tiny", tasks=["reconstruction"],
                                  batch_size=b)) for b in (1, 8))
    a, b = (pd.read_csv(tmp_path / f"b{n}" / "per_image.csv") for n in (1, 8))
    assert (a["psnr"] - b["psnr"]).abs().max() < 1e-3  # the bound stated in tokbench/tasks/pipeline.py
    for name in a["id"]:
        x, y = (np.asarray(Image.open(tmp_path / d / "reconstructions" / "reconstruction" / f"{name}.png"), dtype=int)
                for d in ("b1", "b8"))
        assert np.abs(x - y).max() <= 1  # at most one 8-bit level
    assert one["tokenizer"]["bits_per_image"] == eight["tokenizer"]["bits_per_image"]


@pytest.mark.parametrize("resolution", ["256", "letterbox:256", "native"])
def test_word_boxes_follow_the_resolution_policy_on_a_non_square_image(resolution):
    """A black word box on a white 600 x 300 page: mapped boxes must land on the black pixels."""
    page = np.full((300, 600, 3), 255, np.uint8)
    inside, cut = [250, 120, 350, 160], [10, 120, 90, 160]  # the second falls outside a centered 256 crop
    for x0, y0, x1, y1 in (inside, cut):
        page[y0:y1, x0:x1] = 0
    words = [{"text": "in", "box": inside, "size_px": 40}, {"text": "cut", "box": cut, "size_px": 40}]
    item = Item("page", page, {"words": words})
    p = prepare(page, resolution)
    content = crop_content(p.x_3HW, p)
    kept, boxes = _scaled_boxes(Pair(item, content, content, p.scale, p.content_origin))
    assert [w["text"] for w in kept] == (["in"] if resolution == "256" else ["in", "cut"])
    for x0, y0, x1, y1 in boxes:
        core = content[:, y0 + 2 : y1 - 2, x0 + 2 : x1 - 2]
        assert core.numel() > 0 and float(core.max()) < 0.1  # inside the box: black
        ring = content[:, max(0, y0 - 6) : y0 - 3, x0:x1]
        assert float(ring.min()) > 0.9  # just above it: white
