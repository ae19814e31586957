"""AR probing (GigaTok): the linear probe of the generation measure, on features and end to end."""
import numpy as np
import pytest
import torch
from PIL import Image

import tokbench
from tokbench.generation.evaluate import evaluate_generation
from tokbench.generation.probe import linear_probe, middle_block, token_features
from tokbench.generation.settings import GenerationSettings
from helpers import one_thread  # noqa: F401  (autouse fixture)

CLASS_COLOURS = np.array([[200, 40, 40], [40, 170, 60], [50, 60, 210]])


def _coloured_images(per_class: int, seed: int = 0) -> tuple[list[np.ndarray], list[int]]:
    """Faint noise textures tinted by class: the classes differ in colour only."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for k in range(per_class * len(CLASS_COLOURS)):
        label = k % len(CLASS_COLOURS)
        texture = rng.normal(0, 8, (40, 40, 1)) + rng.normal(0, 4, (40, 40, 3))
        images.append(np.clip(CLASS_COLOURS[label] + texture, 0, 255).astype(np.uint8))
        labels.append(label)
    return images, labels


def _features(n_images: int, crops: int, classes: int, separable: bool, seed: int = 0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 3, (classes, 8))
    labels = {i: i % classes for i in range(n_images)}
    features = {i: rng.normal(0, 1, (crops, 8)) + (centres[labels[i]] if separable else 0) for i in range(n_images)}
    return features, labels


def test_probe_separates_classes_that_differ_and_is_at_chance_on_shuffled_labels():
    features, labels = _features(240, 4, 3, separable=True)
    train, test = list(range(180)), list(range(180, 240))
    good = linear_probe(features, labels, train, test)
    assert np.mean(good.top1_per_image) > 0.95 and len(good.top1_per_image) == 60
    shuffled = dict(zip(labels, np.random.default_rng(1).permutation(list(labels.values())).tolist()))
    bad = linear_probe(features, shuffled, train, test)
    assert abs(np.mean(bad.top1_per_image) - 1 / 3) < 0.1, np.mean(bad.top1_per_image)
    # and on features that carry no class at all
    noise, noise_labels = _features(240, 4, 3, separable=False)
    assert abs(np.mean(linear_probe(noise, noise_labels, train, test).top1_per_image) - 1 / 3) < 0.1


def test_regularisation_is_chosen_on_every_fifth_training_image():
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(3)
    labels = {i: i % 2 for i in range(100)}
    # weakly separable: one informative direction among 20 noisy ones
    features = {i: rng.normal(0, 1, (4, 20)) + np.eye(20)[0] * 0.6 * (2 * labels[i] - 1) for i in range(100)}
    train, test = list(range(80)), list(range(80, 100))
    result = linear_probe(features, labels, train, test)
    val = [i for i in train if train.index(i) % 5 == 4]
    fit = [i for i in train if i not in val]
    x_fit, y_fit = np.concatenate([features[i] for i in fit]), np.repeat([labels[i] for i in fit], 4)
    x_val, y_val = np.concatenate([features[i] for i in val]), np.repeat([labels[i] for i in val], 4)
    scaler = StandardScaler().fit(x_fit)
    scores = [(LogisticRegression(C=C, max_iter=2000).fit(scaler.transform(x_fit), y_fit)
               .predict(scaler.transform(x_val)) == y_val).mean() for C in (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)]
    assert result.C == (1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)[int(np.argmax(scores))]
    assert result.val_top1 == pytest.approx(max(scores))


def test_probe_needs_two_classes():
    features, labels = _features(20, 2, 1, separable=True)
    with pytest.raises(ValueError, match="at least 2 classes"):
        linear_probe(features, labels, list(range(15)), list(range(15, 20)))


def test_middle_block_is_after_half_the_blocks():
    blocks = torch.nn.Module()
    for depth, expected in ((1, 0), (2, 0), (3, 1), (12, 5)):
        blocks.blocks = torch.nn.ModuleList(torch.nn.Identity() for _ in range(depth))
        assert middle_block(blocks) is blocks.blocks[expected]


def test_token_features_average_the_codewords_of_the_ids():
    tok = tokbench.create("vq:size=tiny").eval()
    ids = torch.tensor([[0, 1, 1, 3]])
    codebook = tok.quantize.codebooks()[0].codebook().detach()
    expected = codebook[[0, 1, 1, 3]].mean(0)
    np.testing.assert_allclose(token_features(tok, ids)[0], expected.numpy(), rtol=1e-6)
    latents = torch.randn(2, 5, 4)
    np.testing.assert_allclose(token_features(None, latents), latents.mean(1).numpy(), rtol=1e-6)


@pytest.fixture(scope="module")
def coloured():
    return _coloured_images(16)


SETTINGS = GenerationSettings(image_size=32, steps=10, crops_per_image=4, num_samples=1, width=64)


def test_ar_probe_on_colour_classes_is_near_one_and_near_chance_on_shuffled_labels(coloured):
    # A random-init KL-VAE keeps a tint in its latents (a random-init VQ encoder's group norms and
    # random codebook scatter it), so the generator fitted on them tells the colours apart.
    images, labels = coloured
    tok = tokbench.create("vae:size=tiny").eval()
    result = evaluate_generation(tok, images, SETTINGS, labels=labels)
    assert len(result.metrics["ar_probe_top1"]) == 12  # every 4th of 48 images is held out
    assert np.mean(result.metrics["ar_probe_top1"]) > 0.9
    # the mean of 4 random latent channels keeps less of the colour, still far above chance (1/3)
    assert np.mean(result.metrics["latent_probe_top1"]) > 0.6
    assert result.extra["probe"]["classes"] == 3 and result.skipped == {}
    shuffled = np.random.default_rng(0).permutation(labels).tolist()
    again = evaluate_generation(tok, images, SETTINGS, labels=shuffled)
    assert np.mean(again.metrics["ar_probe_top1"]) < 0.6  # chance: 1/3


def test_probes_are_skipped_with_the_reason_without_labels():
    from tokbench.generation.probe import run_probes

    seqs = {i: torch.randn(2, 4, 3) for i in range(6)}
    train, held = {i: seqs[i] for i in range(4)}, {i: seqs[i] for i in range(4, 6)}
    for labels in (None, [-1] * 6):
        metrics, extra, skipped = run_probes(None, None, train, held, labels)
        assert metrics == {} and set(skipped) == {"ar_probe_top1", "latent_probe_top1"}
        assert "no class labels" in skipped["ar_probe_top1"]


def test_eval_reports_the_probes_on_a_labelled_folder_and_says_why_not_without_labels(tmp_path, coloured):
    from tokbench.results import validate_results
    from tokbench.tasks.runner import EvalConfig, run_eval

    images, labels = coloured
    for k, (image, label) in enumerate(zip(images[:24], labels[:24])):
        (tmp_path / "data" / f"class{label}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(tmp_path / "data" / f"class{label}" / f"{k:02d}.png")
    options = {"generation": {"steps": 10, "crops": 4, "samples": 1}}
    results = run_eval(EvalConfig(tokenizer="vae:size=tiny", tasks=["generation"], resolution="32", data=tmp_path / "data",
                                  task_options=options, out=tmp_path / "out"))
    assert validate_results(results) == []
    probe = results["tasks"]["generation"]["metrics"]["ar_probe_top1"]
    assert probe["n"] == 6 and probe["mean"] > 0.7 and 0 <= probe["ci95"][0] <= probe["mean"] <= probe["ci95"][1] <= 1
    assert "latent_probe_top1" in results["tasks"]["generation"]["metrics"]
    flat = tmp_path / "flat"
    flat.mkdir()
    for k, image in enumerate(images[:8]):
        Image.fromarray(image).save(flat / f"{k}.png")
    block = run_eval(EvalConfig(tokenizer="vae:size=tiny", tasks=["generation"], resolution="32", data=flat,
                                task_options=options, out=tmp_path / "out_flat"))["tasks"]["generation"]
    assert "ar_probe_top1" not in block["metrics"]
    assert "folder is flat" in block["skipped_metrics"]["ar_probe_top1"]
