"""EasyOCR's offline weights: found in their package, MD5-checked, loaded without unpickling code."""
from __future__ import annotations

import pickle
import sys

import pytest
import torch

from tokbench.metrics import easyocr_reader


@pytest.fixture(autouse=True)
def _fresh_check():
    easyocr_reader.verified_model_dir.cache_clear()
    yield
    easyocr_reader.verified_model_dir.cache_clear()


def test_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "easyocr_en_models", None)  # import fails as if not installed
    with pytest.raises(easyocr_reader.EasyOCRUnavailableError, match=r'tokbench\[ocr\]'):
        easyocr_reader.verified_model_dir()


def test_weights_are_checked_against_the_pinned_md5(tmp_path, monkeypatch):
    pytest.importorskip("easyocr_en_models", reason="EasyOCR's offline weights are a test extra")
    assert easyocr_reader.verified_model_dir().is_dir()  # the installed files are the pinned ones
    for name in easyocr_reader.WEIGHT_MD5:
        (tmp_path / name).write_bytes(b"not the weights")
    monkeypatch.setattr(easyocr_reader, "model_dir", lambda: tmp_path)
    easyocr_reader.verified_model_dir.cache_clear()
    with pytest.raises(easyocr_reader.EasyOCRUnavailableError, match="MD5 .* expected 5864788e1821be9e454ec108d61b887d"):
        easyocr_reader.verified_model_dir()
    (tmp_path / "english_g2.pth").unlink()
    easyocr_reader.verified_model_dir.cache_clear()
    with pytest.raises(easyocr_reader.EasyOCRUnavailableError, match="english_g2.pth is missing"):
        easyocr_reader.verified_model_dir()


class _Payload:
    """Not a tensor type: unpickling it in full would run arbitrary constructors."""


def test_reader_construction_loads_pickles_weights_only(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"x": _Payload()}, path)
    with easyocr_reader._weights_only_torch_load():
        with pytest.raises(pickle.UnpicklingError):
            torch.load(path, map_location="cpu", weights_only=False)  # what EasyOCR asks for
    assert isinstance(torch.load(path, weights_only=False)["x"], _Payload)  # restored afterwards


def test_easyocr_reads_a_rendered_sign_as_a_page_and_word_by_word():
    pytest.importorskip("easyocr_en_models", reason="EasyOCR's offline weights are a test extra")
    from tokbench.metrics.text import normalize_text
    from tokbench.tasks.suites import load_suite

    sign = next(it for it in load_suite("text").items if it.meta["layout"] == "sign")
    image, words = sign.image, sign.meta["words"]
    assert easyocr_reader.read_words(image, [w["box"] for w in words]) == [w["text"] for w in words]
    assert normalize_text(easyocr_reader.read_page(image)) == normalize_text(sign.meta["text"])
    assert easyocr_reader.read_words(image, [[5, 5, 5, 9]]) == [""]  # an empty box reads as nothing
