"""Built-in suites (deterministic, correct content), folder data and the resolution policy."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from tokbench.imageio import read_image
from tokbench.tasks.data import BadImageError, Item, crop_content, load_folder, parse_resolution, prepare, subset
from tokbench.tasks.suites import BUILDERS, builtin_fingerprints, load_suite
from tokbench.tasks.suites.detail import GRATING_FREQUENCIES, GRATING_ORIENTATIONS, SIZE


def test_builtin_suites_are_deterministic_and_fingerprinted():
    fingerprints = builtin_fingerprints()
    assert set(fingerprints) == {"photos", "detail", "text", "text-sizes", "faces"}
    assert all(len(fp) == 64 and int(fp, 16) >= 0 for fp in fingerprints.values())
    assert len(set(fingerprints.values())) == 5
    for name, build in BUILDERS.items():  # a fresh build (not the cached one) gives the same data
        assert build().fingerprint() == fingerprints[name], name


def test_fingerprint_sees_a_single_changed_pixel():
    suite = load_suite("detail")
    items = [Item(it.id, it.image.copy(), dict(it.meta)) for it in suite.items]
    items[5].image[10, 10, 0] ^= 1
    changed = type(suite)(suite.name, suite.source, suite.version, items)
    assert changed.fingerprint() != suite.fingerprint()


def test_photos_suite_holds_real_photos_from_both_packages():
    items = load_suite("photos").items
    assert len(items) >= 14
    assert {it.meta["source"] for it in items} == {"scikit-image", "scikit-learn"}
    for it in items:
        assert it.image.dtype == np.uint8 and it.image.ndim == 3 and it.image.shape[2] == 3
        assert it.image.std() > 10, it.id  # a photo, not a flat placeholder


def test_detail_gratings_have_their_stated_frequency():
    gratings = [it for it in load_suite("detail").items if it.meta.get("pattern") == "grating"]
    assert len(gratings) == len(GRATING_FREQUENCIES) * len(GRATING_ORIENTATIONS)
    for it in gratings:
        if it.meta["orientation"] != 0:
            continue
        row = it.image[SIZE // 2, :, 0].astype(float)
        spectrum = np.abs(np.fft.rfft(row - row.mean()))
        peak = np.argmax(spectrum) / SIZE  # cycles per pixel
        assert abs(peak - it.meta["frequency"]) <= 1 / SIZE, (it.id, peak)
    kinds = {it.meta["pattern"] for it in load_suite("detail").items}
    assert {"zone_plate", "siemens_star", "line_pairs", "checkerboard", "band_noise", "texture"} <= kinds


def test_text_suite_word_boxes_hold_the_ink_of_their_words():
    items = load_suite("text").items
    rendered = [it for it in items if it.meta["layout"] != "photo"]
    assert {it.meta["layout"] for it in rendered} == {"paragraph", "sign", "receipt"}
    assert {it.meta["polarity"] for it in rendered} == {"dark_on_light", "light_on_dark"}
    sizes = [it.meta["size_px"] / it.image.shape[0] for it in rendered]
    assert min(sizes) < 0.06 and max(sizes) >= 0.12  # small print and headlines
    for it in rendered:
        words = it.meta["words"]
        assert " ".join(w["text"] for w in words) == " ".join(it.meta["text"].split())
        ink_total = 0
        for w in words:
            x0, y0, x1, y1 = w["box"]
            assert 0 <= x0 < x1 <= it.image.shape[1] and 0 <= y0 < y1 <= it.image.shape[0], (it.id, w)
            crop = it.image[y0:y1, x0:x1].astype(float)
            ink_total += 1
            assert crop.std() > 20, (it.id, w["text"])  # glyphs inside, not background only
        assert ink_total == len(words)
    receipts = [it for it in rendered if it.meta["layout"] == "receipt"]
    assert all(any(ch.isdigit() for ch in it.meta["text"]) and "." in it.meta["text"] for it in receipts)
    photos = [it for it in items if it.meta["layout"] == "photo"]
    assert len(photos) == 2 and all("text" not in it.meta for it in photos)


def test_text_sizes_suite_fills_every_tokbench_bucket_at_256_and_512():
    from tokbench.metrics.tokbench_text import BUCKETS, bucket_of, word_ratio

    items = load_suite("text-sizes").items
    assert len({it.meta["font"] for it in items}) >= 6 and len({it.meta["polarity"] for it in items}) == 2
    assert any(it.meta["textured"] for it in items) and not all(it.meta["textured"] for it in items)
    for setting in (256, 512):
        counts = {b: 0 for b in (*BUCKETS, None)}
        for it in items:
            for w in it.meta["words"]:
                counts[bucket_of(word_ratio(w["box"], w["text"], it.image.shape[:2]), setting)] += 1
        assert min(counts[b] for b in BUCKETS) >= 40, (setting, counts)
    cases = {kind for it in items for w in it.meta["words"] for kind in
             [("upper" if w["text"].isupper() else "title" if w["text"].istitle() else "lower")]}
    assert cases == {"upper", "title", "lower"}  # TokBench's matching is case-sensitive: all three are tested
    for it in items:
        assert " ".join(w["text"] for w in it.meta["words"]) == " ".join(it.meta["text"].split())
        for w in it.meta["words"]:
            x0, y0, x1, y1 = w["box"]
            assert 0 <= x0 < x1 <= 512 and 0 <= y0 < y1 <= 512, (it.id, w)
            assert it.image[y0:y1, x0:x1].astype(float).std() > 15, (it.id, w["text"])  # ink inside the box


def test_subset_spreads_evenly_and_keeps_order():
    items = [Item(str(i), None) for i in range(17)]
    picked = [it.id for it in subset(items, 5)]
    assert picked == ["0", "4", "8", "12", "16"]
    assert [it.id for it in subset(items, None)] == [str(i) for i in range(17)]
    assert len(subset(items, 100)) == 17 and [it.id for it in subset(items, 1)] == ["0"]


def test_folder_lists_files_lazily_and_reads_manifests(tmp_path):
    rng = np.random.default_rng(0)
    (tmp_path / "sub").mkdir()
    Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    Image.fromarray(rng.integers(0, 255, (20, 30), dtype=np.uint8), mode="L").save(tmp_path / "sub" / "b.png")
    (tmp_path / "manifest.jsonl").write_text(json.dumps({"file": "sub/b.png", "text": "hello"}) + "\n")
    ds = load_folder(tmp_path)
    assert [it.id for it in ds.items] == ["a.png", "sub/b.png"]
    assert all(it.image is None for it in ds.items)  # nothing decoded yet
    assert ds.items[1].meta == {"text": "hello"} and ds.items[0].meta == {}
    assert ds.items[1].pixels().shape == (20, 30, 3)
    before = ds.fingerprint()
    (tmp_path / "a.png").write_bytes((tmp_path / "a.png").read_bytes() + b"\0")
    assert load_folder(tmp_path).fingerprint() != before
    (tmp_path / "manifest.jsonl").write_text(json.dumps({"file": "missing.png", "text": "x"}) + "\n")
    with pytest.raises(ValueError, match="not in the folder"):
        load_folder(tmp_path)
    (tmp_path / "manifest.jsonl").write_text("{not json\n")
    with pytest.raises(ValueError, match="line 1 is not JSON"):
        load_folder(tmp_path)


def test_unreadable_files_say_why(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "notes.png").write_text("not an image")
    Image.new("RGB", (1, 1)).save(tmp_path / "tiny.png")
    Image.new("RGB", (64, 64), (200, 10, 10)).save(tmp_path / "ok.jpg")
    (tmp_path / "cut.jpg").write_bytes((tmp_path / "ok.jpg").read_bytes()[:200])
    for name, reason in [("empty.png", "zero-byte"), ("notes.png", "not an image"), ("tiny.png", "too small"),
                         ("cut.jpg", "cannot decode")]:
        with pytest.raises(BadImageError, match=reason):
            read_image(tmp_path / name)
    assert read_image(tmp_path / "ok.jpg").shape == (64, 64, 3)


def test_images_over_the_pixel_limit_are_refused_from_the_header(tmp_path, monkeypatch):
    Image.new("RGB", (300, 200)).save(tmp_path / "big.png")
    monkeypatch.setenv("TOKBENCH_MAX_PIXELS", "50000")
    with pytest.raises(BadImageError, match=r"too large \(300x200 = 60,000 pixels; the limit is 50,000"):
        read_image(tmp_path / "big.png")
    opened = []
    real_load = Image.Image.load
    monkeypatch.setattr(Image.Image, "load", lambda self: opened.append(1) or real_load(self))
    with pytest.raises(BadImageError):
        read_image(tmp_path / "big.png")
    assert not opened  # refused before decoding any pixel
    monkeypatch.setenv("TOKBENCH_MAX_PIXELS", "60000")
    assert read_image(tmp_path / "big.png").shape == (200, 300, 3)


def test_resolution_policies():
    image = np.random.default_rng(0).integers(0, 255, (300, 500, 3), dtype=np.uint8)
    p = prepare(image, "256")
    assert p.x_3HW.shape == (3, 256, 256) and abs(p.scale - 256 / 300) < 1e-9
    p = prepare(image, "letterbox:256")
    assert p.x_3HW.shape == (3, 256, 256)
    top, left, h, w = p.content_box
    assert (h, w) == (154, 256) and top == (256 - 154) // 2 and left == 0
    assert torch.all(p.x_3HW[:, :top] == 1.0)  # white padding, cut off again before scoring
    assert crop_content(p.x_3HW, p).shape == (3, 154, 256)
    p = prepare(image, "native")
    assert p.x_3HW.shape == (3, 300, 500) and p.scale == 1.0
    assert np.array_equal((p.x_3HW * 255).round().byte().permute(1, 2, 0).numpy(), image)
    for bad in ("0", "letterbox:", "big", "-5"):
        with pytest.raises(ValueError, match="resolution must be"):
            parse_resolution(bad)
