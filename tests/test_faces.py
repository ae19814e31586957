"""The faces task: identity similarity by face size (TokBench's F-Sim) with dlib's face descriptor."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

pytest.importorskip("dlib", reason="the faces task needs the tokbench[faces] extra (dlib-bin)")

import tokbench  # noqa: E402
from tokbench.imageio import quantize_8bit  # noqa: E402
from tokbench.metrics.faces import (FaceModelsMissingError, MODEL_SHA256, RATIO_EDGES, check_model_files,  # noqa: E402
                                    model_paths, setting_for, size_bucket)
from tokbench.metrics.registry import get_metric  # noqa: E402
from tokbench.tasks.base import MetricContext, Pair  # noqa: E402
from tokbench.tasks.data import Item, crop_content, load_folder, prepare  # noqa: E402
from tokbench.tasks.face_manifest import read_face_manifest  # noqa: E402
from tokbench.tasks.faces import FacesTask  # noqa: E402
from tokbench.tasks.runner import EvalConfig, run_eval  # noqa: E402
from tokbench.tasks.suites.faces import build_faces_suite  # noqa: E402

# The astronaut's face in the 512x512 original (dlib's box at 256 px, scaled back).
ASTRONAUT_FACE = [176, 82, 266, 170]


def pair_for(item: Item, spec: str) -> Pair:
    """An (original, reconstruction) pair at 256 px, as the runner builds it."""
    prepared = prepare(item.pixels(), "256")
    original = quantize_8bit(prepared.x_3HW)
    with torch.no_grad():
        rec = quantize_8bit(tokbench.load(spec).reconstruct(original[None]))[0]
    return Pair(item, crop_content(original, prepared), crop_content(rec, prepared), prepared.scale,
                prepared.content_origin)


def evaluate(tmp_path: Path, spec: str, **kw) -> dict:
    return run_eval(EvalConfig(tokenizer=spec, tasks=["faces"], out=tmp_path / spec.replace(":", "_"), workers=0, **kw))


def test_metrics_are_declared_with_unit_range_direction_and_dataset_aggregation():
    for name in ("face_sim_small", "face_sim_medium", "face_sim_large", "face_sim_mean"):
        m = get_metric(name)
        assert (m.low, m.high, m.higher_is_better, m.aggregation) == (-1.0, 1.0, True, "dataset")
        assert "cosine" in m.definition or "mean of the per-bucket" in m.definition


def test_buckets_follow_tokbench_edges_per_setting():
    assert RATIO_EDGES == {256: (0.1, 0.2), 512: (0.05, 0.2), 1024: (0.05, 0.1)}
    assert [setting_for(s) for s in (64, 256, 360, 400, 512, 800, 1024, 4000)] == [256, 256, 256, 512, 512, 1024, 1024, 1024]
    assert [size_bucket(r, 256) for r in (0.0, 0.099, 0.1, 0.199, 0.2, 1.0)] == ["small", "small", "medium", "medium",
                                                                                "large", "large"]
    assert [size_bucket(r, 1024) for r in (0.049, 0.05, 0.099, 0.1)] == ["small", "medium", "medium", "large"]


def test_identity_tokenizer_scores_one(tmp_path):
    results = evaluate(tmp_path, "identity", limit=1)  # the suite's first image: the astronaut
    block = results["tasks"]["faces"]
    assert block["dataset"] == "faces" and block["num_images"] == 1
    assert block["metrics"]["face_sim_medium"]["n"] == 1  # her face: ~45 px of 256, a medium face
    assert block["metrics"]["face_sim_medium"]["mean"] == pytest.approx(1.0, abs=1e-9)
    assert block["metrics"]["face_sim_mean"]["mean"] == pytest.approx(1.0, abs=1e-9)
    assert set(block["skipped_metrics"]) == {"face_sim_small", "face_sim_large"}  # no such faces: said, not faked
    assert block["extra"]["faces_not_scored"] == []


def test_similarity_falls_monotonically_with_the_resize_factor():
    astronaut = build_faces_suite().items[0]
    task, ctx = FacesTask(), MetricContext()
    sims = []
    for f in (2, 4, 8):
        row = task.score([pair_for(astronaut, f"resize:f={f}")], ctx)[0]
        assert row["faces_source"] == "detector" and row["faces_scored"] == 1
        sims.append(row["face_sim_image"])
    print("astronaut F-Sim at resize f=2,4,8:", [round(s, 4) for s in sims])
    assert 1.0 > sims[0] > sims[1] > sims[2] > 0.5, sims


def test_an_image_without_a_face_is_listed_not_scored(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    Image.fromarray(data.astronaut()).save(folder / "astronaut.png")
    Image.fromarray(data.brick()).convert("RGB").save(folder / "brick.png")  # a wall: no face
    block = evaluate(tmp_path, "identity", data=folder)["tasks"]["faces"]
    assert block["num_images"] == 2
    assert block["extra"]["faces_not_scored"] == [{"id": "brick.png", "reason": "no face found on the original by "
                                                                               "the detector"}]
    assert block["metrics"]["face_sim_medium"]["n"] == 1  # only the astronaut's face counts
    assert sum(block["extra"]["faces_per_bucket"].values()) == 1


def test_manifest_boxes_are_used_instead_of_detection(tmp_path):
    folder = tmp_path / "data"
    folder.mkdir()
    Image.fromarray(data.astronaut()).save(folder / "astronaut.png")
    # Her face, a patch of the flag with no face on it (the detector would not report it), and a
    # box beyond the image (cut by the evaluated crop): only the manifest can produce this row.
    boxes = [ASTRONAUT_FACE, [20, 20, 60, 60], [480, 480, 540, 540]]
    (folder / "faces.json").write_text(json.dumps({"astronaut.png": boxes}))
    item = load_folder(folder).items[0]
    assert item.meta["faces"] == [[float(v) for v in b] for b in boxes]
    row = FacesTask().score([pair_for(item, "identity")], MetricContext())[0]
    assert row["faces_source"] == "manifest" and row["faces_scored"] == 2 and row["faces_cropped_out"] == 1
    ratios = [float(r) for r in row["face_ratios"].split()]
    assert ratios == pytest.approx([90 / 512, 40 / 512], abs=1e-4)  # the manifest's boxes, scaled with the image
    assert [f["similarity"] for f in row["_faces"]] == pytest.approx([1.0, 1.0], abs=1e-9)
    rec_row = FacesTask().score([pair_for(item, "resize:f=4")], MetricContext())[0]
    assert rec_row["faces_scored"] == 2 and all(f["similarity"] < 1.0 for f in rec_row["_faces"])
    summary = FacesTask().aggregate([{**rec_row, "id": item.id}], MetricContext())
    assert summary.extra["faces_not_scored"] == [{"id": "astronaut.png", "reason": "1 face(s) given by the manifest "
                                                                                    "lie outside the evaluated crop"}]


def test_face_manifest_errors_name_the_problem(tmp_path):
    (tmp_path / "faces.csv").write_text("file,x0,y0,x1,y1\na.png,10,10,5,20\n")
    with pytest.raises(ValueError, match=r"faces.csv: line 2: face box .* must have 0 <= x0 < x1"):
        read_face_manifest(tmp_path)
    (tmp_path / "faces.csv").write_text("file,x0,y0\na.png,1,2\n")
    with pytest.raises(ValueError, match="needs columns file,x0,y0,x1,y1 \\(missing x1, y1\\)"):
        read_face_manifest(tmp_path)
    (tmp_path / "faces.json").write_text("{}")
    with pytest.raises(ValueError, match="not both"):
        read_face_manifest(tmp_path)
    (tmp_path / "faces.csv").unlink()
    (tmp_path / "faces.json").write_text(json.dumps({"a.png": [[1, 2, "x", 4]]}))
    with pytest.raises(ValueError, match="four numbers"):
        read_face_manifest(tmp_path)
    Image.new("RGB", (32, 32)).save(tmp_path / "b.png")
    (tmp_path / "faces.json").write_text(json.dumps({"a.png": [[1, 2, 3, 4]]}))
    with pytest.raises(ValueError, match="manifest names 1 file"):
        load_folder(tmp_path)


def test_model_files_are_checked_against_their_pinned_sha256(tmp_path):
    paths = model_paths()
    check_model_files(paths)  # the installed files are the pinned ones
    fake = tmp_path / "shape_predictor_5_face_landmarks.dat"
    fake.write_bytes(b"not a model")
    with pytest.raises(FaceModelsMissingError, match="SHA-256 .* expected " + MODEL_SHA256[fake.name]):
        check_model_files({fake.name: fake})
    with pytest.raises(FaceModelsMissingError, match=r"not found .*tokbench\[faces\]"):
        check_model_files({fake.name: tmp_path / "absent.dat"})


def test_builtin_suite_holds_the_astronaut_and_lfw_mosaics_of_three_sizes():
    items = build_faces_suite().items
    assert [it.id for it in items] == ["skimage/astronaut", "lfw/large_2x2", "lfw/medium_4x4", "lfw/small_8x8"]
    assert all(it.image.shape == (256, 256, 3) and it.image.dtype == np.uint8 for it in items[1:])
    assert [it.meta["face_px"] for it in items[1:]] == [96, 48, 25]


def test_missing_extra_stops_the_task_with_a_clear_message(monkeypatch):
    from tokbench.metrics.faces import load_face_models

    load_face_models.cache_clear()
    monkeypatch.setitem(sys.modules, "dlib", None)  # as if dlib-bin were not installed
    with pytest.raises(FaceModelsMissingError, match=r"pip install 'tokbench\[faces\]'"):
        FacesTask().check_applicable(None, None)
    load_face_models.cache_clear()  # a failed load is not cached; the next test loads dlib again
