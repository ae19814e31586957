"""`--ocr parseq` (docTR's PARSeq, TokBench's recognizer) and TokBench's word sizes under the
`tokbench` preset: measured on the source image whatever the resolution policy, crop-cut words
counted as dropped.

No pretrained weights are downloaded: a random-init PARSeq is saved once under the published
file name, and the published SHA-256 prefix is swapped for the file's own (a random network
reads garbage, so these tests check which words are read and how, not what is read).
"""
from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("doctr", reason="docTR is the `parseq` extra (in `test`)")

from tokbench import weights  # noqa: E402
from tokbench.cli import main  # noqa: E402
from tokbench.metrics import parseq_reader  # noqa: E402
from tokbench.provenance import file_digest  # noqa: E402
from tokbench.tasks.cache import RowCache  # noqa: E402
from tokbench.tasks.runner import EvalConfig, run_eval  # noqa: E402
from tokbench.tasks.suites import load_suite  # noqa: E402

EDGES_256 = (0.02, 0.03, 0.04, 1.0)  # TokBench compute_all_metrics.py, ratio_ranges at 256
PUBLISHED = weights.WEIGHT_FILES["parseq"]  # before any test swaps in a random file's checksum


def tokbench_ratio(box, text, height, width):
    """TokBench's size measure, written out independently: box width / characters / longer side of the source."""
    return (box[2] - box[0]) / len(text) / max(height, width)


def tokbench_bucket_of_ratio(ratio, edges=EDGES_256):
    for name, low, high in zip(("small", "medium", "large"), edges[:-1], edges[1:]):
        if low <= ratio < high:
            return name
    return None


def tokbench_bucket(box, text, height, width):
    return tokbench_bucket_of_ratio(tokbench_ratio(box, text, height, width))


@pytest.fixture(scope="module")
def random_parseq(tmp_path_factory):
    """A weights folder holding a random-init PARSeq under the published name, accepted by checksum."""
    folder = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    model = parseq_reader.build_model(None)
    path = folder / weights.WEIGHT_FILES["parseq"].filename
    torch.save(model.state_dict(), path)
    mp = pytest.MonkeyPatch()
    mp.setitem(weights.WEIGHT_FILES, "parseq",
               dataclasses.replace(weights.WEIGHT_FILES["parseq"], sha256_prefix=file_digest(path)[:8]))
    mp.setenv("TOKBENCH_CACHE", str(tmp_path_factory.mktemp("ocr_cache")))
    yield folder, model
    mp.undo()


# -- the reader --------------------------------------------------------------------------
@pytest.mark.parametrize("hw", [(10, 200), (50, 20), (8, 32), (1, 3), (40, 160), (31, 90)])
def test_crop_resize_is_doctrs_aspect_preserving_resize(hw):
    from doctr.transforms import Resize
    from doctr.utils.common_types import Sample

    crop = torch.rand(3, *hw, generator=torch.Generator().manual_seed(hw[0] * 1000 + hw[1]))
    expected = Resize((32, 128), preserve_aspect_ratio=True)(Sample(image=crop)).image  # TokBench's img_transforms
    torch.testing.assert_close(parseq_reader.resize_crop(crop), expected)


def test_reader_reads_as_doctrs_own_pipeline(random_parseq):
    """Exact box crop, docTR's resize, the model's normalization, greedy decoding -- here via docTR's own parts."""
    from doctr.transforms import Resize
    from doctr.utils.common_types import Sample
    from doctr.utils.geometry import extract_crops

    _, model = random_parseq
    image = (np.random.default_rng(1).random((60, 200, 3)) * 255).astype(np.uint8)
    boxes = [[5, 3, 90, 30], [100, 10, 190, 58], [0, 0, 12, 40]]
    crops = extract_crops(image, np.array(boxes))  # TokBench: crop_bboxes_from_image on integer boxes
    x = torch.stack([Resize((32, 128), preserve_aspect_ratio=True)(
        Sample(image=torch.from_numpy(c).permute(2, 0, 1).float() / 255)).image for c in crops])
    x = (x - torch.tensor(model.cfg["mean"])[:, None, None]) / torch.tensor(model.cfg["std"])[:, None, None]
    with torch.inference_mode():
        expected = [w for w, _ in model(x, return_preds=True)["preds"]]
    assert parseq_reader.read_words_with(model, image, boxes) == expected


def test_missing_weights_name_the_file_and_the_folder(tmp_path, monkeypatch):
    monkeypatch.setitem(weights.WEIGHT_FILES, "parseq", PUBLISHED)
    with pytest.raises(weights.MissingWeightsError, match=rf"parseq: {tmp_path}/parseq-56125471.pt .*weights fetch"):
        parseq_reader.verified_weights(str(tmp_path))


def test_a_weights_file_with_another_checksum_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(weights.WEIGHT_FILES, "parseq", PUBLISHED)
    (tmp_path / "parseq-56125471.pt").write_bytes(b"not the published file")
    with pytest.raises(parseq_reader.ParseqUnavailableError, match="expected 56125471"):
        parseq_reader.verified_weights(str(tmp_path))
    assert main(["eval", "--tokenizer", "identity", "--protocol", "tokbench", "--suite", "text-sizes",
                 "--weights-dir", str(tmp_path), "--out", str(tmp_path / "run")]) == 1
    assert "expected 56125471" in capsys.readouterr().err and not (tmp_path / "run").exists()


def test_importing_tokbench_and_its_help_load_no_doctr():
    code = ("import sys, contextlib, io\n"
            "import tokbench\n"
            "from tokbench.cli import main\n"
            "for argv in (['--help'], ['eval', '--help']):\n"
            "    with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
            "        main(argv)\n"
            "loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'doctr')\n"
            "assert not loaded, loaded\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_parseq_needs_tokbench_protocol(random_parseq):
    from types import SimpleNamespace

    from tokbench.tasks.text import TextTask

    with pytest.raises(ValueError, match="--ocr parseq reads word boxes only"):
        TextTask().check_applicable(None, SimpleNamespace(task_options={"text": {"ocr": "parseq"}}, resolution="256",
                                                          weights_dir=str(random_parseq[0])))


# -- TokBench's word sizes ---------------------------------------------------------------
@pytest.fixture(scope="module")
def wide_page(tmp_path_factory):
    """A 640 x 480 page whose words straddle TokBench's 256-px bucket edges: measured on the
    source's longer side (640) they fall in one bucket, on the crop's side (480) in the next."""
    folder = tmp_path_factory.mktemp("wide")
    image = np.full((480, 640, 3), 255, np.uint8)
    words = [{"text": "abcde", "box": [280, 100, 360, 130]},  # 80/5/640 = 0.025 small (0.033 over 480: medium)
             {"text": "fghij", "box": [250, 200, 360, 240]},  # 110/5/640 = 0.034 medium (0.046 over 480: large)
             {"text": "kl", "box": [10, 300, 60, 330]},  # 50/2/640 = 0.039 medium; a 256 centre crop cuts it
             {"text": "mnopqrs", "box": [300, 400, 310, 410]}]  # 10/7/640: under every bucket
    for w in words:
        x0, y0, x1, y1 = w["box"]
        image[y0:y1, x0:x1] = 0
    Image.fromarray(image).save(folder / "page.png")
    (folder / "manifest.jsonl").write_text(json.dumps({"file": "page.png", "words": words}) + "\n")
    return folder, words


@pytest.mark.parametrize("resolution,cut", [("256", 1), ("letterbox:256", 0)])
def test_word_sizes_come_from_the_source_image_and_crop_cut_words_are_dropped(random_parseq, wide_page, tmp_path,
                                                                             resolution, cut):
    folder, words = wide_page
    results = run_eval(EvalConfig(tokenizer="identity", tasks=["text"], out=tmp_path / "run", data=folder,
                                  resolution=resolution, skip_metrics=["lpips"], workers=0,
                                  weights_dir=str(random_parseq[0]),
                                  task_options={"text": {"text_protocol": "tokbench", "ocr": "parseq"}}))
    counts = results["tasks"]["text"]["extra"]["tokbench"]["word_counts"]
    expected = [tokbench_bucket(w["box"], w["text"], 480, 640) for w in words]
    assert expected == ["small", "medium", "medium", None]
    # over the crop's side the first two would land one bucket up: the edge is really straddled
    assert [tokbench_bucket(w["box"], w["text"], 480, 480) for w in words[:2]] == ["medium", "large"]
    assert {b: counts[f"sized_{b}"] for b in ("small", "medium", "large")} == {"small": 1, "medium": 2, "large": 0}
    assert counts["dropped_size"] == 1 and counts["dropped_crop"] == cut and counts["words"] == 4
    rows = RowCache(tmp_path / "run" / "cache", "text", 0).load_all()
    entries = rows["page.png"]["_tokbench_words"]
    assert [e[4] for e in entries] == [False, False, cut == 1, False]  # the cut word is marked, not lost
    assert entries[2][2] is None if cut else isinstance(entries[2][2], str)  # not read when cut, read otherwise


def test_tokbench_preset_on_text_sizes_buckets_every_word_by_tokbenchs_formula(random_parseq, tmp_path):
    out = tmp_path / "run"
    assert main(["eval", "--tokenizer", "identity", "--protocol", "tokbench", "--suite", "text-sizes",
                 "--weights-dir", str(random_parseq[0]), "--out", str(out), "--workers", "0"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["protocol"]["name"] == "tokbench" and results["protocol"]["resolution"] == "letterbox:256"
    suite = load_suite("text-sizes")
    rows = RowCache(out / "cache", "text", 0).load_all()
    got, expected = [], []
    for item in suite.items:
        h, w = item.image.shape[:2]
        expected += [(word["text"], tokbench_ratio(word["box"], word["text"], h, w)) for word in item.meta["words"]]
        got += [(text, ratio) for text, ratio, *_ in rows[item.id]["_tokbench_words"]]
    assert [t for t, _ in got] == [t for t, _ in expected] and len(got) == 208
    np.testing.assert_allclose([r for _, r in got], [r for _, r in expected], rtol=1e-12)
    expected = [(t, tokbench_bucket_of_ratio(r)) for t, r in expected]
    counts = results["tasks"]["text"]["extra"]["tokbench"]["word_counts"]
    for bucket in ("small", "medium", "large"):
        assert counts[f"sized_{bucket}"] == sum(b == bucket for _, b in expected) > 0
    assert counts["dropped_size"] == sum(b is None for _, b in expected) and counts["dropped_crop"] == 0

