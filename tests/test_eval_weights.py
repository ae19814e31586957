"""LPIPS and rFID through the real loading code, with random-init weight files (no network)."""
import json

import pytest
import torch

from tokbench import weights
from tokbench.tasks.runner import EvalConfig, Interrupted, run_eval


@pytest.fixture(scope="module")
def weights_dir(tmp_path_factory):
    """A --weights-dir holding random-init AlexNet and FID-Inception files under their real names."""
    from torch_fidelity import feature_extractor_inceptionv3 as fe
    from torchvision.models import alexnet

    folder = tmp_path_factory.mktemp("weights")
    torch.manual_seed(0)
    torch.save(alexnet(weights=None).state_dict(), folder / weights.WEIGHT_FILES["lpips"].filename)
    # torch-fidelity loads weights in its constructor: build it once with loading turned off.
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(fe, "load_state_dict_from_url", lambda *a, **k: {})
        mp.setattr(fe.FeatureExtractorInceptionV3, "load_state_dict", lambda self, *a, **k: None)
        model = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    torch.save(model.state_dict(), folder / weights.WEIGHT_FILES["rfid"].filename)
    return folder


def test_weights_are_found_in_weights_dir_and_status_lists_them(weights_dir, capsys):
    found = weights.require(["lpips", "rfid"], weights_dir)
    assert {k: p.name for k, p in found.items()} == {m: weights.WEIGHT_FILES[m].filename for m in ("lpips", "rfid")}
    from tokbench.tasks.cli import run_weights

    class Args:
        action, metrics = "status", None

    Args.weights_dir = str(weights_dir)
    assert run_weights(Args) == 0
    out = capsys.readouterr().out
    assert out.count("True") == 2 and "alexnet-owt-7be5be79.pth" in out
    # not there: --ocr parseq's weights and the two DINOv2 teachers of semantic training
    assert "parseq-56125471.pt" in out and "dinov2_vitb14_pretrain.pth" in out and out.count("False") == 3


def test_lpips_and_rfid_are_reported_with_weights_and_rfid_needs_enough_images(weights_dir, tmp_path):
    common = dict(tokenizer="jpeg:q=20", tasks=["reconstruction"], limit=4, batch_size=2, weights_dir=str(weights_dir))
    results = run_eval(EvalConfig(out=tmp_path / "small", fid_min_images=4, **common))
    metrics = results["tasks"]["reconstruction"]["metrics"]
    assert 0 < metrics["lpips"]["mean"] < 2 and metrics["lpips"]["n"] == 4
    assert metrics["rfid"]["mean"] >= 0 and metrics["rfid"]["n"] == 4
    assert "rfid_note" in results["tasks"]["reconstruction"]["extra"]
    assert results["tasks"]["reconstruction"]["skipped_metrics"] == {}
    # interrupted after 2 images and resumed: the cached Inception features give the same rFID
    with pytest.raises(Interrupted):
        run_eval(EvalConfig(out=tmp_path / "resumed", fid_min_images=4, stop_after=2, **common))
    assert len(list((tmp_path / "resumed" / "cache" / "reconstruction.r0.arrays").glob("*.npz"))) == 1
    resumed = run_eval(EvalConfig(out=tmp_path / "resumed", fid_min_images=4, **common))
    assert resumed["tasks"]["reconstruction"]["metrics"] == metrics
    # default threshold (1000 images): rFID is not reported, and the file says why
    results = run_eval(EvalConfig(out=tmp_path / "default", **common))
    block = results["tasks"]["reconstruction"]
    assert "rfid" not in block["metrics"] and "at least 1000" in block["skipped_metrics"]["rfid"]
    on_disk = json.loads((tmp_path / "default" / "results.json").read_text())
    assert on_disk["tasks"]["reconstruction"]["skipped_metrics"]["rfid"] == block["skipped_metrics"]["rfid"]


def test_skipped_metrics_are_recorded_and_fid_is_an_alias(tmp_path):
    results = run_eval(EvalConfig(tokenizer="identity", tasks=["reconstruction"], limit=2,
                                  skip_metrics=["lpips", "fid"], out=tmp_path / "o"))
    skipped = results["tasks"]["reconstruction"]["skipped_metrics"]
    assert set(skipped) == {"lpips", "rfid"} and "--skip-metric" in skipped["lpips"]
    assert results["tasks"]["reconstruction"]["metrics"]["psnr"]["mean"] == 100.0


def test_missing_weights_skip_their_metrics_by_default_and_say_why(tmp_path, capsys):
    from tokbench.metrics.networks import computable_metrics

    empty = str(tmp_path / "no_weights")
    results = run_eval(EvalConfig(tokenizer="identity", tasks=["reconstruction"], limit=2, weights_dir=empty,
                                  out=tmp_path / "o"))
    block = results["tasks"]["reconstruction"]
    assert {"psnr", "ssim"} <= set(block["metrics"]) and "lpips" not in block["metrics"]
    lpips_reason = block["skipped_metrics"]["lpips"]
    assert "alexnet-owt-7be5be79.pth" in lpips_reason and "tokbench weights fetch --metrics lpips" in lpips_reason
    on_disk = json.loads((tmp_path / "o" / "results.json").read_text())
    assert on_disk["tasks"]["reconstruction"]["skipped_metrics"]["lpips"] == lpips_reason
    err = capsys.readouterr().err
    assert "skipping lpips:" in err and "skipping rfid:" in err  # named before any work
    assert "alexnet-owt-7be5be79.pth" in (tmp_path / "o" / "report.md").read_text()
    # The hook a protocol preset asks: which of its metrics can be computed here.
    assert computable_metrics(["psnr", "lpips", "rfid"], empty) == ["psnr"]


def test_strict_metrics_refuses_without_weights(tmp_path):
    with pytest.raises(weights.MissingWeightsError, match="alexnet-owt-7be5be79.pth"):
        run_eval(EvalConfig(tokenizer="identity", tasks=["reconstruction"], limit=2, strict_metrics=True,
                            weights_dir=str(tmp_path / "none"), out=tmp_path / "o"))
    assert not (tmp_path / "o").exists()


def test_computable_metrics_keeps_those_with_weights(weights_dir):
    from tokbench.metrics.networks import computable_metrics

    assert computable_metrics(["psnr", "lpips", "rfid"], str(weights_dir)) == ["psnr", "lpips", "rfid"]
