"""`tokbench gen score`: gFID, Inception Score, precision/recall of samples against a reference.

Inception weights are never downloaded here: the scoring code takes its feature extractor as a
function, and these tests use `build_standin` (a fixed random projection of average-pooled
pixels), also through the CLI's ``--features test_gen_score:build_standin``.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from tokbench.cli import main
from tokbench.generation.reference import Reference, load_reference
from tokbench.generation.scoring import (feature_statistics, fid_from_statistics, fid_of_features, inception_score,
                                         precision_recall, score_samples)
from tokbench.metrics.registry import get_metric
from tokbench.results import validate_results

POOL_DIM, CLASSES = 12, 10


def build_standin(device: str = "cpu"):
    """A deterministic stand-in for the Inception: 4x4 average pooling, then fixed random projections."""
    gen = torch.Generator().manual_seed(1234)
    proj_pool = torch.randn(48, POOL_DIM, generator=gen, dtype=torch.float64)
    proj_logits = torch.randn(48, CLASSES, generator=gen, dtype=torch.float64)

    def features(images_B3HW_uint8: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        assert images_B3HW_uint8.dtype == torch.uint8 and images_B3HW_uint8.shape[1] == 3
        x = torch.nn.functional.adaptive_avg_pool2d(images_B3HW_uint8.double() / 255, 4).flatten(1)
        return x @ proj_pool, 3 * x @ proj_logits

    features.extractor_id = "standin-projection-v1"
    return features


def _images(n: int, seed: int, size: int = 16) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)


def _write_folder(folder, images: np.ndarray) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    names = []
    for i, img in enumerate(images):
        names.append(f"{i:05d}.png")
        Image.fromarray(img).save(folder / names[-1])
    return names


# --------------------------------------------------------------------------- pure functions

def test_identical_sets_give_zero_fid_and_full_precision_recall():
    x = np.random.default_rng(0).normal(size=(300, 16)) * 5 + 40
    mu, sigma = feature_statistics(x)
    assert abs(fid_from_statistics(mu, sigma, mu, sigma)) <= 1e-6 * np.trace(sigma)
    assert precision_recall(x, x) == (1.0, 1.0)
    # the same through images: a folder-free reference of the features of identical images
    images = _images(40, seed=1)
    feature_fn = build_standin()
    pool = feature_fn(torch.from_numpy(images).permute(0, 3, 1, 2))[0].numpy()
    scores = score_samples([images[:25], images[25:]], Reference.from_features(pool), feature_fn, batch_size=7)
    assert abs(scores.gfid) <= 1e-6 * np.trace(feature_statistics(pool)[1])
    assert (scores.precision, scores.recall, scores.num_samples) == (1.0, 1.0, 40)


def test_fid_of_two_gaussians_matches_the_closed_form():
    rng = np.random.default_rng(3)
    mu1, mu2 = rng.normal(size=6), rng.normal(size=6)
    s1, s2 = rng.uniform(0.1, 4, size=6), rng.uniform(0.1, 4, size=6)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    assert fid_from_statistics(mu1, np.diag(s1), mu2, np.diag(s2)) == pytest.approx(expected, rel=1e-9)
    # FID is invariant under a rotation of the feature space: full covariances give the same value
    q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    rotated = fid_from_statistics(q @ mu1, q @ np.diag(s1) @ q.T, q @ mu2, q @ np.diag(s2) @ q.T)
    assert rotated == pytest.approx(expected, rel=1e-7)
    with pytest.raises(ValueError, match="do not match"):
        fid_from_statistics(mu1, np.diag(s1), mu2[:5], np.diag(s2[:5]))


def test_fid_of_fewer_points_than_dimensions_equals_the_full_computation():
    rng = np.random.default_rng(5)
    ref = rng.normal(size=(80, 40)) @ rng.normal(size=(40, 40)) + 1.0
    mu, sigma = feature_statistics(ref)
    for n in (3, 20, 39):  # the N x N Gram form
        x = rng.normal(size=(n, 40)) * 2 + 0.5
        # (the F x F form takes square roots of the round-off-sized eigenvalues of the samples'
        # null space: about 1e-8 of the value here)
        assert fid_of_features(x, mu, sigma) == pytest.approx(fid_from_statistics(*feature_statistics(x), mu, sigma),
                                                              rel=1e-7)
    x = rng.normal(size=(60, 40))  # enough points: the F x F form itself
    assert fid_of_features(x, mu, sigma) == fid_from_statistics(*feature_statistics(x), mu, sigma)
    assert fid_of_features(ref[:30], *feature_statistics(ref[:30])) == pytest.approx(0, abs=1e-7)
    with pytest.raises(ValueError, match="do not match"):
        fid_of_features(x[:5], mu[:39], sigma[:39, :39])


SQUARE = np.array([[0, 0], [1, 0], [0, 1], [1, 1]], dtype=float)  # k=3 radius of each corner: sqrt(2)


@pytest.mark.parametrize("fake, expected", [
    # a tight cluster at the origin: every sample is realistic (precision 1), but its balls
    # (radius sqrt(0.02)) cover only the real corner (0, 0): recall 1/4
    ([[0, 0], [0.1, 0], [0, 0.1], [0.1, 0.1]], (1.0, 0.25)),
    # (0.5,0.5) and (0,-1.2) lie in corners' balls (squared distance 0.5 and 1.44 <= 2), (2.2,2.2)
    # (2.88 from (1,1)) and (10,10) do not: precision 1/2; the spread-out samples' balls are
    # huge (radius = distance to the farthest other sample), covering every corner: recall 1
    ([[0.5, 0.5], [0, -1.2], [2.2, 2.2], [10, 10]], (0.5, 1.0)),
    # disjoint, far apart
    (SQUARE + 100, (0.0, 0.0)),
])
def test_precision_recall_on_hand_made_point_sets(fake, expected):
    assert precision_recall(SQUARE, np.asarray(fake, dtype=float), k=3) == expected
    # blocked distance computation gives the same answer as one block
    assert precision_recall(SQUARE, np.asarray(fake, dtype=float), k=3, block=3) == expected


def test_precision_recall_refuses_too_few_points_and_mismatched_dims():
    with pytest.raises(ValueError, match="at least 4 reference images"):
        precision_recall(SQUARE[:3], SQUARE)
    with pytest.raises(ValueError, match="2-d but fake features are 3-d"):
        precision_recall(SQUARE, np.zeros((4, 3)))


def test_inception_score_bounds():
    assert inception_score(np.zeros((100, 7))) == pytest.approx((1.0, 0.0), abs=1e-12)
    classes = 8
    labels = np.arange(10 * classes * 3) % classes  # every split holds each class 3 times
    logits = 100.0 * np.eye(classes)[labels]
    mean, std = inception_score(logits, splits=10)
    assert mean == pytest.approx(classes, rel=1e-9) and std == pytest.approx(0, abs=1e-9)
    # all samples confidently the same class: IS 1
    assert inception_score(100.0 * np.eye(classes)[np.zeros(50, int)])[0] == pytest.approx(1.0, abs=1e-9)
    with pytest.raises(ValueError, match="at least 10 samples"):
        inception_score(np.zeros((9, 3)))


def test_samples_are_streamed_in_bounded_batches(tmp_path):
    images = _images(23, seed=2)
    np.savez(tmp_path / "samples.npz", arr_0=images)
    inner, seen = build_standin(), []

    def recording(x):
        seen.append(x.shape[0])
        return inner(x)

    reference = Reference.from_features(inner(torch.from_numpy(images).permute(0, 3, 1, 2))[0].numpy())
    scores = score_samples(tmp_path / "samples.npz", reference, recording, batch_size=5)
    assert seen == [5, 5, 5, 5, 3] and scores.num_samples == 23
    assert (scores.precision, scores.recall) == (1.0, 1.0)  # the npz rows were read in order, unchanged
    # single images of two sizes: batches never mix sizes and never exceed batch_size
    seen.clear()
    mixed = [*_images(4, seed=3), *_images(3, seed=4, size=24), *_images(2, seed=5)]
    assert score_samples(mixed, reference, recording, batch_size=3, is_splits=3).num_samples == 9
    assert seen == [3, 1, 3, 2]


# --------------------------------------------------------------------------- references

def test_adm_reference_batch_uses_its_own_mu_and_sigma(tmp_path):
    ref_images = _images(30, seed=4)
    feature_fn = build_standin()
    mu = np.full(POOL_DIM, 0.5)
    sigma = np.diag(np.linspace(0.5, 2.0, POOL_DIM))
    np.savez(tmp_path / "VIRTUAL_ref.npz", arr_0=ref_images, mu=mu, sigma=sigma,
             mu_s=np.zeros(3), sigma_s=np.eye(3))
    ref = load_reference(tmp_path / "VIRTUAL_ref.npz", feature_fn, batch_size=8, cache_dir=tmp_path / "cache")
    assert ref.kind == "adm_npz" and ref.stats_source == "npz mu/sigma" and ref.num_images == 30
    np.testing.assert_array_equal(ref.mu, mu)
    np.testing.assert_array_equal(ref.sigma, sigma)
    scores = score_samples(ref_images, ref, feature_fn)
    # gFID against the file's statistics, not the images' own (which would give 0) ...
    sample_mu, sample_sigma = feature_statistics(ref.features)
    assert scores.gfid == pytest.approx(fid_from_statistics(sample_mu, sample_sigma, mu, sigma), rel=1e-9)
    assert scores.gfid > 1.0
    # ... while precision/recall use the features of arr_0: the same images are fully covered
    assert (scores.precision, scores.recall) == (1.0, 1.0)


def test_adm_reference_batch_mismatches_are_refused(tmp_path):
    feature_fn = build_standin()
    np.savez(tmp_path / "wrong_dim.npz", arr_0=_images(6, seed=5), mu=np.zeros(2048), sigma=np.eye(2048))
    with pytest.raises(ValueError, match="do not match the 12-d features"):
        load_reference(tmp_path / "wrong_dim.npz", feature_fn, cache_dir=tmp_path / "cache")
    np.savez(tmp_path / "float.npz", arr_0=_images(6, seed=5).astype(np.float32))
    with pytest.raises(ValueError, match=r"expected uint8 RGB images \(N, H, W, 3\), got dtype float32"):
        load_reference(tmp_path / "float.npz", feature_fn, cache_dir=tmp_path / "cache")
    np.savez(tmp_path / "empty.npz", arr_0=np.zeros((0, 8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match="holds no images"):
        load_reference(tmp_path / "empty.npz", feature_fn, cache_dir=tmp_path / "cache")
    np.savez(tmp_path / "objects.npz", arr_0=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="nothing is unpickled"):
        load_reference(tmp_path / "objects.npz", feature_fn, cache_dir=tmp_path / "cache")
    (tmp_path / "empty_folder").mkdir()
    with pytest.raises(ValueError, match="no images found"):
        load_reference(tmp_path / "empty_folder", feature_fn, cache_dir=tmp_path / "cache")


def test_folder_reference_is_cached_and_recomputed_when_a_file_changes(tmp_path):
    folder = tmp_path / "ref"
    _write_folder(folder, _images(12, seed=6))
    inner, calls = build_standin(), []

    def counting(x):
        calls.append(x.shape[0])
        return inner(x)
    counting.extractor_id = inner.extractor_id

    first = load_reference(folder, counting, batch_size=5, cache_dir=tmp_path / "cache")
    assert not first.from_cache and sum(calls) == 12 and first.kind == "folder"
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1
    calls.clear()
    second = load_reference(folder, counting, batch_size=5, cache_dir=tmp_path / "cache")
    assert second.from_cache and calls == []
    np.testing.assert_array_equal(second.features, first.features)
    assert (second.fingerprint, second.content_sha256) == (first.fingerprint, first.content_sha256)

    Image.fromarray(_images(1, seed=99)[0]).save(folder / "00003.png")  # one file changes
    stat = os.stat(folder / "00003.png")
    os.utime(folder / "00003.png", ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    third = load_reference(folder, counting, batch_size=5, cache_dir=tmp_path / "cache")
    assert not third.from_cache and sum(calls) == 12
    assert third.fingerprint != first.fingerprint and third.content_sha256 != first.content_sha256
    assert not np.allclose(third.features[3], first.features[3])
    np.testing.assert_allclose(third.features[4:], first.features[4:])

    # a torn cache file is recomputed, not trusted
    cached = next((tmp_path / "cache").glob("*.npz"))
    cached.write_bytes(cached.read_bytes()[:100])
    calls.clear()
    assert not load_reference(folder, counting, cache_dir=tmp_path / "cache").from_cache and sum(calls) == 12

    # another feature extractor never reuses these features
    other = build_standin()
    other.extractor_id = "another-extractor"
    calls.clear()
    assert not load_reference(folder, other, cache_dir=tmp_path / "cache").from_cache


# --------------------------------------------------------------------------- command line

MANIFEST = {
    "format": "tokbench-samples", "version": 1,
    "generator": {"preset": "gpt-tiny", "arch": "gpt", "parameters": 1234, "checkpoint_sha256": "ab" * 32,
                  "train_steps": 500},
    "tokenizer": {"spec": "vq-tiny", "sha256": "cd" * 32, "family": "vq", "kind": "discrete",
                  "config": {"codebook_size": 64}},
    "sampling": {"cfg": 1.5, "cfg_interval": None, "temperature": 1.0, "top_k": 0, "top_p": 1.0, "seed": 0,
                 "classes": None},
}


def test_gen_score_end_to_end_writes_valid_results(tmp_path, capsys):
    samples, ref = tmp_path / "samples", tmp_path / "ref"
    names = _write_folder(samples / "images", _images(20, seed=7))
    manifest = {**MANIFEST, "num_samples": 20, "resolution": 16, "files": [f"images/{n}" for n in names]}
    (samples / "manifest.json").write_text(json.dumps(manifest))
    _write_folder(ref, _images(24, seed=8))
    argv = ["gen", "score", str(samples), "--ref", str(ref), "--out", str(tmp_path / "out"),
            "--features", "test_gen_score:build_standin", "--ref-cache", str(tmp_path / "cache"), "--batch-size", "6"]
    assert main(argv) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert validate_results(results) == []
    block = results["tasks"]["generation"]
    assert set(block["metrics"]) == {"gfid", "inception_score", "precision", "recall"}
    assert block["num_images"] == 20 and block["dataset"] == "ref"
    assert block["metrics"]["gfid"]["mean"] > 0 and 1 <= block["metrics"]["inception_score"]["mean"] <= CLASSES
    assert block["metrics"]["recall"]["n"] == 24
    extra = block["extra"]
    assert (extra["generator_preset"], extra["train_steps"], extra["cfg"]) == ("gpt-tiny", 500, 1.5)
    assert extra["sampling"]["temperature"] == 1.0 and extra["num_samples"] == 20
    assert extra["reference"]["kind"] == "folder" and extra["reference"]["num_images"] == 24
    assert extra["reference"]["feature_extractor"] == "standin-projection-v1"
    assert results["tokenizer"]["name"] == "vq-tiny" and results["tokenizer"]["checkpoint_sha256"] == "cd" * 32
    assert results["datasets"][0]["fingerprint"] == extra["reference"]["content_sha256"]
    assert results["datasets"][0]["resolution"] == "16"
    assert "gFID" in capsys.readouterr().out
    # a second run reuses the cached reference features and gives the same numbers
    assert main(argv) == 0
    again = json.loads((tmp_path / "out" / "results.json").read_text())["tasks"]["generation"]["metrics"]
    assert again == block["metrics"]
    assert "cached features" in capsys.readouterr().out
    # ADM's IS splits: consecutive splits of 8 over 20 samples -> 8, 8 and 4
    assert main(argv + ["--is-split-size", "8"]) == 0
    adm = json.loads((tmp_path / "out" / "results.json").read_text())["tasks"]["generation"]
    assert adm["extra"]["is_splits"] == 3 and block["extra"]["is_splits"] == 10
    assert adm["metrics"]["inception_score"]["mean"] != block["metrics"]["inception_score"]["mean"]
    assert adm["metrics"]["gfid"] == block["metrics"]["gfid"]
    assert results["protocol"] is None
    # the adm-gfid preset: ADM's 5,000-sample IS splits (one split here), recorded with what differs from it
    assert main(argv + ["--protocol", "adm-gfid"]) == 0
    preset = json.loads((tmp_path / "out" / "results.json").read_text())
    assert validate_results(preset) == [] and preset["tasks"]["generation"]["extra"]["is_splits"] == 1
    assert preset["protocol"]["name"] == "adm-gfid" and preset["protocol"]["is_split_size"] == 5000
    assert preset["protocol"]["deviations"] == [
        "reference is a folder, not ADM's reference batch (its mu/sigma)",
        "features from test_gen_score:build_standin, not the FID Inception",
        "resolution 16, the preset's is 256", "generation: 20 images, the published split has 50000"]
    assert main(argv + ["--protocol", "adm-gfid", "--is-split-size", "8"]) == 1
    assert "scores IS over splits of 5000; drop --is-split-size 8" in capsys.readouterr().err
    assert main(argv + ["--protocol", "llamagen-rfid"]) == 1
    assert "llamagen-rfid is a preset of 'tokbench eval', not of 'tokbench gen score'" in capsys.readouterr().err


def test_gen_score_errors_are_clear(tmp_path, capsys):
    samples, ref = tmp_path / "samples", tmp_path / "ref"
    _write_folder(samples, _images(5, seed=9))
    _write_folder(ref, _images(5, seed=10))
    # no manifest: writing results needs the tokenizer's kind
    assert main(["gen", "score", str(samples), "--ref", str(ref), "--out", str(tmp_path / "out"),
                 "--features", "test_gen_score:build_standin"]) == 1
    assert "--tokenizer-kind" in capsys.readouterr().err
    # no Inception weights: the rFID path's message, without a --skip-metric hint
    assert main(["gen", "score", str(samples), "--ref", str(ref), "--weights-dir", str(tmp_path / "none")]) == 1
    err = capsys.readouterr().err
    assert "weights-inception-2015-12-05-6726825d.pth" in err and "tokbench weights fetch" in err
    assert "--weights-dir" in err and "--skip-metric" not in err
    # too few samples for the k = 3 balls (and the 10 IS splits)
    _write_folder(tmp_path / "three", _images(3, seed=11))
    assert main(["gen", "score", str(tmp_path / "three"), "--ref", str(ref), "--ref-cache", str(tmp_path / "c"),
                 "--features", "test_gen_score:build_standin"]) == 1
    assert "at least 10 samples" in capsys.readouterr().err
    # a manifest that lists files that are not there
    (samples / "manifest.json").write_text(json.dumps({**MANIFEST, "num_samples": 1, "resolution": 16,
                                                       "files": ["missing.png"]}))
    assert main(["gen", "score", str(samples), "--ref", str(ref), "--features", "test_gen_score:build_standin"]) == 1
    assert "lists 1 files that are not there" in capsys.readouterr().err


def test_sample_quality_metrics_are_declared_once_in_the_registry():
    for name, higher in (("inception_score", True), ("precision", True), ("recall", True), ("gfid", False)):
        metric = get_metric(name)
        assert metric.aggregation == "dataset" and metric.higher_is_better is higher
    for name in ("inception_score", "precision", "recall"):
        assert get_metric(name).weights == "rfid"
        assert get_metric(name).network == "tokbench.metrics.fid:load_inception_generation_features"
    assert get_metric("precision").bounds == (0.0, 1.0) and get_metric("inception_score").low == 1.0


def test_gen_score_with_the_real_inception_loading_code(tmp_path):
    """The rFID Inception (random-init weights under the real file name): 2048-d pool features
    and 1008 bias-free logits reach the scores and the results."""
    from torch_fidelity import feature_extractor_inceptionv3 as fe

    from tokbench import weights

    with pytest.MonkeyPatch.context() as mp:  # torch-fidelity loads weights in its constructor: turn that off once
        mp.setattr(fe, "load_state_dict_from_url", lambda *a, **k: {})
        mp.setattr(fe.FeatureExtractorInceptionV3, "load_state_dict", lambda self, *a, **k: None)
        torch.manual_seed(0)
        model = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    (tmp_path / "w").mkdir()
    torch.save(model.state_dict(), tmp_path / "w" / weights.WEIGHT_FILES["rfid"].filename)
    del model
    _write_folder(tmp_path / "samples", _images(10, seed=12, size=32))
    _write_folder(tmp_path / "ref", _images(5, seed=13, size=32))
    assert main(["gen", "score", str(tmp_path / "samples"), "--ref", str(tmp_path / "ref"), "--out",
                 str(tmp_path / "out"), "--weights-dir", str(tmp_path / "w"), "--ref-cache", str(tmp_path / "cache"),
                 "--tokenizer-kind", "continuous", "--batch-size", "10"]) == 0
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert validate_results(results) == []
    extra = results["tasks"]["generation"]["extra"]
    assert extra["feature_dim"] == 2048
    assert "inception-v3-compat 2048+logits_unbiased" in extra["reference"]["feature_extractor"]
    assert results["tokenizer"]["name"] == "unknown" and results["tokenizer"]["kind"] == "continuous"
    assert extra["generator_preset"] == "unknown" and extra["samples"]["manifest"] is False
    assert 1.0 <= results["tasks"]["generation"]["metrics"]["inception_score"]["mean"] <= 1008
