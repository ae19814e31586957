"""Protocol presets: the registry, what `eval --protocol` pins and refuses, the results' ``protocol``
block; and the metric variants the presets use (``ssim_llamagen``, ADM's IS splits)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data
from skimage.metrics import structural_similarity

from tokbench.cli import main
from tokbench.metrics.image import ssim_8bit, ssim_llamagen_8bit
from tokbench.protocol import Protocol
from tokbench.protocol_registry import get_protocol, protocol_names, register_protocol
from tokbench.results import validate_results
from tokbench.tasks.runner import EvalConfig, run_eval
from tokbench.weights import MissingWeightsError

# A preset that needs no pretrained weights, so that a whole run fits in a test.
TEST_PRESET = register_protocol(Protocol(
    name="test-adm", title="test preset", reproduces="nothing (tests)", data="a few photos",
    tasks=("reconstruction",), resolutions=("64", "96"), preprocessing="adm",
    metrics={"reconstruction": ("psnr", "ssim_llamagen")}, task_options={"reconstruction": {"ssim_llamagen": True}},
    num_images=50))


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    for name, image in (("coffee.png", data.coffee()), ("chelsea.png", data.chelsea()), ("rocket.png", data.rocket())):
        Image.fromarray(image).resize((image.shape[1] // 4, image.shape[0] // 4)).save(folder / name)
    return folder


def test_the_builtin_presets_are_registered_with_what_they_reproduce():
    assert {"tokbench", "llamagen-rfid", "var-rfid", "vtbench", "adm-gfid"} <= set(protocol_names())
    assert get_protocol("adm-gfid").is_split_size == 5000
    llamagen = get_protocol("llamagen-rfid")
    assert (llamagen.preprocessing, llamagen.resolutions, llamagen.num_images) == ("adm", ("256",), 50_000)
    assert "ssim_llamagen" in llamagen.metrics["reconstruction"] and llamagen.required_weights() == ["rfid"]
    assert get_protocol("var-rfid").preprocessing == "var"
    tokbench = get_protocol("tokbench")
    assert tokbench.task_options["text"] == {"text_protocol": "tokbench", "ocr": "parseq"}
    assert all(r.startswith("letterbox:") for r in tokbench.resolutions)  # no crop: every word stays readable
    assert tokbench.required_weights() == ["parseq"]
    with pytest.raises(ValueError, match="unknown protocol 'llamagen'; choose from .*llamagen-rfid"):
        get_protocol("llamagen")


def test_fill_pins_the_settings_and_refuses_contradictions():
    preset = get_protocol("tokbench")
    tasks, resolution, options, skips = preset.fill(None, None, {}, [])
    assert (tasks, resolution) == (["text"], "letterbox:256")
    assert options == {"text": {"text_protocol": "tokbench", "ocr": "parseq"}}
    assert skips == ["lpips"]  # its task lists LPIPS, the published column does not: its weights are not needed
    assert preset.fill(["text"], "letterbox:1024", {"text": {"ocr": "parseq"}}, [])[1] == "letterbox:1024"
    with pytest.raises(ValueError, match="defined at --resolution letterbox:256 or letterbox:512 or letterbox:1024, got '256'"):
        preset.fill(None, "256", {}, [])  # a centre crop would cut words: refused
    with pytest.raises(ValueError, match="pins text option ocr='parseq'; got 'tesseract'"):
        preset.fill(None, None, {"text": {"ocr": "tesseract"}}, [])
    with pytest.raises(ValueError, match="runs the tasks text; drop --tasks"):
        preset.fill(["text", "faces"], None, {}, [])
    with pytest.raises(ValueError, match="adm-gfid is a preset of 'tokbench gen score', not of 'tokbench eval'"):
        get_protocol("adm-gfid").fill(None, None, {}, [])


def test_a_preset_refuses_to_skip_what_it_reports_or_to_run_without_its_weights(tmp_path, photos):
    base = dict(tokenizer="identity", tasks=["reconstruction"], out=tmp_path / "run", data=photos, resolution="256",
                protocol="llamagen-rfid", preprocessing="adm", task_options={"reconstruction": {"ssim_llamagen": True}},
                weights_dir=str(tmp_path / "no-weights"))
    with pytest.raises(ValueError, match="reports rfid: it cannot be skipped"):
        run_eval(EvalConfig(**base, skip_metrics=["fid"]))
    with pytest.raises(MissingWeightsError, match=r"rfid: .*no-weights/weights-inception"):
        run_eval(EvalConfig(**base, skip_metrics=["lpips"]))
    with pytest.raises(ValueError, match="prepares images with 'adm', not 'default'"):
        run_eval(EvalConfig(**{**base, "preprocessing": "default"}))
    assert not (tmp_path / "run").exists()  # refused before any work


def test_eval_protocol_records_the_preset_and_its_deviations(tmp_path, photos, capsys):
    out = tmp_path / "run"
    assert main(["eval", "--tokenizer", "jpeg:q=30", "--protocol", "test-adm", "--data", str(photos), "--out", str(out),
                 "--workers", "0", "--batch-size", "2"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert validate_results(results) == []
    block = results["protocol"]
    assert block["name"] == "test-adm" and block["resolution"] == "64" and block["preprocessing"] == "adm"
    assert block["metrics"] == {"reconstruction": ["psnr", "ssim_llamagen"]}
    assert block["deviations"] == ["reconstruction: 3 images, the published split has 50"]
    metrics = results["tasks"]["reconstruction"]["metrics"]
    assert metrics["ssim_llamagen"]["n"] == 3 and metrics["ssim_llamagen"]["mean"] > metrics["ssim"]["mean"]
    assert results["tasks"]["reconstruction"]["skipped_metrics"]["lpips"] == "not part of protocol test-adm"

    # the identity tokenizer's reconstructions are the originals as the preset prepared them: ADM's, not tokbench's
    from tokbench.reference_preprocessing import adm_center_crop
    from tokbench.tasks.data import prepare

    run_eval(EvalConfig(tokenizer="identity", tasks=["reconstruction"], out=tmp_path / "identity", data=photos,
                        resolution="64", protocol="test-adm", preprocessing="adm", skip_metrics=["lpips", "rfid"],
                        task_options={"reconstruction": {"ssim_llamagen": True}}, workers=0))
    first = sorted(photos.iterdir())[0]
    source = np.asarray(Image.open(first).convert("RGB"))
    recon = np.asarray(Image.open(tmp_path / "identity" / "reconstructions" / "reconstruction" / f"{first.name}.png"))
    np.testing.assert_array_equal(recon, adm_center_crop(source, 64)[0])
    default = (prepare(source, "64").x_3HW.permute(1, 2, 0) * 255).round().numpy().astype(np.uint8)
    assert (recon != default).any()

    assert main(["eval", "--tokenizer", "jpeg:q=30", "--protocol", "test-adm", "--resolution", "512",
                 "--data", str(photos), "--out", str(tmp_path / "other")]) == 1
    assert "test-adm is defined at --resolution 64 or 96, got '512'" in capsys.readouterr().err


def test_results_without_a_preset_say_so(tmp_path, photos):
    results = run_eval(EvalConfig(tokenizer="identity", tasks=["reconstruction"], out=tmp_path / "run", data=photos,
                                  resolution="64", skip_metrics=["lpips", "rfid"], workers=0))
    assert results["protocol"] is None and "ssim_llamagen" not in results["tasks"]["reconstruction"]["metrics"]
    bad = {**results, "protocol": {"name": "x", "resolution": "sixty-four", "preprocessing": "adm", "deviations": []}}
    assert any(e.startswith("$.protocol.resolution") for e in validate_results(bad))


# -- the metric variants the presets use ---------------------------------------------------
def test_ssim_llamagen_is_skimage_called_as_llamagen_calls_it():
    x = torch.from_numpy(data.astronaut()[::4, ::4]).permute(2, 0, 1).float() / 255
    noisy = (x + 0.08 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    y = (noisy * 255).round() / 255
    # LlamaGen reconstruction_vq_ddp.py: ssim_loss(rgb_restored, rgb_gt, multichannel=True, data_range=2.0,
    # channel_axis=-1) on float images in [0, 1] -- skimage's 7x7 uniform window and sample covariance
    expected = structural_similarity(y.permute(1, 2, 0).double().numpy(), x.permute(1, 2, 0).double().numpy(),
                                     data_range=2.0, channel_axis=-1)
    got = float(ssim_llamagen_8bit(x[None], y[None])[0])
    assert got == pytest.approx(expected, abs=1e-6)
    assert got - float(ssim_8bit(x[None], y[None])[0]) > 0.02  # why LlamaGen's SSIM column reads higher
    assert float(ssim_llamagen_8bit(x[None], x[None])[0]) == pytest.approx(1.0)


def test_inception_score_with_adm_split_size():
    from scipy.special import softmax

    from tokbench.generation.scoring import inception_score

    logits = np.random.default_rng(0).normal(size=(12, 7)) * 3

    def is_of(part):  # exp(E KL(p(y|x) || p(y))), ADM's evaluator per split
        p = softmax(part, axis=1)
        return np.exp(np.mean(np.sum(p * (np.log(p) - np.log(p.mean(0, keepdims=True))), axis=1)))

    adm = [is_of(logits[0:5]), is_of(logits[5:10]), is_of(logits[10:12])]  # splits of 5: 5, 5 and the remainder 2
    mean, std = inception_score(logits, split_size=5)
    assert mean == pytest.approx(np.mean(adm), rel=1e-9) and std == pytest.approx(np.std(adm), rel=1e-9)
    assert inception_score(logits, split_size=100)[0] == pytest.approx(is_of(logits), rel=1e-9)  # one split
    assert inception_score(logits, splits=6) == pytest.approx(inception_score(logits, split_size=2))  # equal when even
    with pytest.raises(ValueError, match="split_size must be >= 1"):
        inception_score(logits, split_size=0)


def test_gen_score_takes_adms_split_size(capsys):
    assert main(["gen", "score", "missing.npz", "--ref", "missing.npz", "--is-split-size", "0"]) == 1
    assert "--is-split-size must be >= 1, got 0" in capsys.readouterr().err
