"""The generation measure of `tokbench eval`: sequence order per layout, fitting on sequences, the task."""
import math

import pytest
import torch

import tokbench
from tokbench.generation import from_sequence, generation_order, to_sequence
from tokbench.generation.evaluate import GenerationSettings, evaluate_generation, unigram_bits
from tokbench.generation.training import fit_in_memory
from tokbench.tokens import TokenLayout

from tokbench.tasks.suites import load_suite
from helpers import one_thread  # noqa: F401  (autouse fixture)


@pytest.mark.parametrize("spec", ["vq:size=tiny", "residual_scale:size=tiny", "holistic_1d:size=tiny"])
def test_sequences_round_trip_to_the_same_decoded_images(spec):
    tok = tokbench.create(spec).eval()
    x = torch.rand(2, 3, 64, 48)
    tokens = tok.encode(x)
    seq = to_sequence(tokens)
    assert seq.shape == (2, tokens.layout.num_tokens)
    back = from_sequence(seq, tokens.layout, tokens.image_size)
    assert torch.equal(back.ids, tokens.ids)
    assert torch.equal(tok.decode(back), tok.decode(tokens))


def test_orders_follow_the_layout_and_refuse_what_has_none():
    assert generation_order(tokbench.create("vq:size=tiny").layout_for(64, 64)) == "raster"
    assert generation_order(tokbench.create("residual_scale:size=tiny").layout_for(64, 64)).startswith("coarse-to-fine")
    with pytest.raises(ValueError, match="continuous latents"):
        generation_order(tokbench.create("vae:size=tiny").layout_for(64, 64))
    jpeg = tokbench.create("jpeg:q=50")
    with pytest.raises(ValueError, match="'bytes' layout"):
        to_sequence(jpeg.encode(torch.rand(1, 3, 32, 32)))
    with pytest.raises(ValueError, match=r"expected \(B, 64\) ids"):
        from_sequence(torch.zeros(1, 63, dtype=torch.long), tokbench.create("vq:size=tiny").layout_for(64, 64), (64, 64))


def _counting_sequences(n: int, length: int, vocab: int, seed: int) -> torch.Tensor:
    start = torch.randint(0, vocab, (n, 1), generator=torch.Generator().manual_seed(seed))
    return (start + torch.arange(length)) % vocab


def test_fitting_learns_the_structure_and_sampling_follows_it():
    train, held_out = _counting_sequences(256, 16, 32, 0), _counting_sequences(64, 16, 32, 1)
    module = fit_in_memory(train, TokenLayout("sequence", (16,), vocab_size=32), steps=150, batch_size=32, lr=3e-3,
                           model_options=dict(width=64, depth=2, heads=2))
    bits = module.nll_bits(held_out).mean().item()
    # Only the first token is uncertain (5 bits); the rest follow from it.
    assert bits < 0.25 * 16 * math.log2(32), bits
    samples = module.ema.generate(num=16, temperature=0.5, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (16, 16) and samples.min() >= 0 and samples.max() < 32
    steps = (samples[:, 1:] - samples[:, :-1]) % 32
    assert (steps == 1).float().mean() > 0.9


def test_bad_training_sequences_are_clear_errors():
    layout = TokenLayout("sequence", (3,), vocab_size=8)
    with pytest.raises(ValueError, match=r"token ids must lie in \[0, 8\)"):
        fit_in_memory(torch.full((4, 3), 9, dtype=torch.long), layout, steps=1)
    with pytest.raises(ValueError, match="non-empty"):
        fit_in_memory(torch.zeros(4, 3), layout, steps=1)


def test_unigram_baseline_is_the_smoothed_frequency_cost():
    train = torch.tensor([[0, 0, 0, 1]])  # counts 3, 1, 0 (+1 each: 4, 2, 1 of 7)
    bits = unigram_bits(train, torch.tensor([[0, 2], [1, 1]]), vocab_size=3)
    expected = [-math.log2(4 / 7) - math.log2(1 / 7), -2 * math.log2(2 / 7)]
    assert bits.tolist() == pytest.approx(expected)


def test_generation_measure_on_photos_falls_with_more_training():
    tok = tokbench.create("vq:size=tiny").eval()
    images = [item.image for item in load_suite("photos").items]
    base = dict(image_size=32, crops_per_image=24, width=64, depth=2, heads=2, num_samples=3, lr=3e-3)
    short = evaluate_generation(tok, images, GenerationSettings(steps=5, **base))
    longer = evaluate_generation(tok, images, GenerationSettings(steps=60, **base))
    raw = 64 * 8  # 8x8 tokens of 8 bits at 32 px
    for result in (short, longer):
        per_image = result.metrics["nll_bits_per_image"]
        assert len(per_image) == 3 and all(b > 0 for b in per_image)  # 3 of 14 photos held out
        tokens = result.extra["tokens_per_image"]
        assert result.metrics["nll_bits_per_token"] == pytest.approx([b / tokens for b in per_image])
        assert result.samples_B3HW.shape == (3, 3, 32, 32)
        assert result.extra["train_sequences"] == 11 * 24
    mean = lambda r, name="nll_bits_per_image": sum(r.metrics[name]) / 3  # noqa: E731
    assert mean(longer) < mean(short) < 1.05 * raw
    # the unigram baseline is the same for both (same crops); 60 steps reach it (110 bits vs 120 after
    # 5 steps; a random-init tokenizer's tokens at 32 px hold little structure beyond their frequencies)
    assert mean(longer, "unigram_bits_per_image") == mean(short, "unigram_bits_per_image")
    assert mean(longer) < 1.02 * mean(longer, "unigram_bits_per_image") < mean(short)
    with pytest.raises(ValueError, match="at least 2 images"):
        evaluate_generation(tok, images[:1], GenerationSettings(steps=1, **base))


def test_eval_generation_task_results_report_and_resume(tmp_path, monkeypatch):
    from tokbench.results import validate_results
    from tokbench.tasks import generation as generation_task
    from tokbench.tasks.runner import EvalConfig, run_eval

    # No --skip-metric and no weights: LPIPS/rFID belong to the per-image tasks only.
    cfg = dict(tokenizer="vq:size=tiny", tasks=["generation"], resolution="32",
               task_options={"generation": {"steps": 20}},
               weights_dir=str(tmp_path / "no_weights"), out=tmp_path / "out")
    results = run_eval(EvalConfig(**cfg))
    assert validate_results(results) == []
    block = results["tasks"]["generation"]
    assert block["dataset"] == "photos" and block["num_images"] == 14
    assert set(block["metrics"]) == {"nll_bits_per_image", "nll_bits_per_token", "nll_fraction_of_raw",
                                     "unigram_bits_per_image"}
    assert block["extra"]["tokens_per_image"] == 16 and "gfid" in block["skipped_metrics"]
    assert [d["name"] for d in results["datasets"]] == ["photos"]
    assert (tmp_path / "out" / "grids" / "generation.png").is_file()
    assert "samples of the AR generator" in (tmp_path / "out" / "report.md").read_text()

    def must_not_refit(*args, **kwargs):
        raise AssertionError("a resumed run fitted the prior again")

    monkeypatch.setattr(generation_task, "evaluate_generation", must_not_refit)
    again = run_eval(EvalConfig(**cfg))
    assert again["tasks"]["generation"] == block


def test_eval_generation_computes_gfid_of_enough_samples_with_rfids_inception(tmp_path, monkeypatch):
    from tokbench.tasks import generation as generation_task
    from tokbench.tasks.runner import EvalConfig, run_eval

    seen = []

    def stand_in(images_B3HW_uint8):  # a fixed projection of the pixels in place of Inception
        assert images_B3HW_uint8.dtype == torch.uint8
        seen.append(images_B3HW_uint8.shape)
        x = images_B3HW_uint8.double().flatten(1) / 255
        return x @ torch.randn(x.shape[1], 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    monkeypatch.setattr(generation_task, "inception_features", lambda cfg, ctx: stand_in)
    monkeypatch.setattr(generation_task, "require_weights", lambda names, where: {})
    monkeypatch.setattr("tokbench.tasks.runner.missing_weights", lambda names, where: {})  # the weights "exist"
    cfg = EvalConfig(tokenizer="vq:size=tiny", tasks=["generation"], resolution="32", fid_min_images=10,
                     task_options={"generation": {"steps": 5, "crops": 4, "samples": 10}}, out=tmp_path / "out")
    block = run_eval(cfg)["tasks"]["generation"]
    assert seen == [(10, 3, 32, 32), (14, 3, 32, 32)]  # the samples, then the 14 photos' center crops
    assert block["metrics"]["gfid"]["n"] == 10 and block["metrics"]["gfid"]["mean"] > 0
    few = run_eval(EvalConfig(tokenizer="vq:size=tiny", tasks=["generation"], resolution="32", fid_min_images=11,
                              task_options={"generation": {"steps": 5, "crops": 4, "samples": 10}},
                              out=tmp_path / "few"))["tasks"]["generation"]
    assert "gfid" not in few["metrics"] and "needs at least 11" in few["skipped_metrics"]["gfid"]


@pytest.mark.parametrize("spec, arch, reason", [("jpeg:q=50", None, "'bytes' layout"),
                                                ("vae:size=tiny", "gpt", "continuous latents"),
                                                ("vq:size=tiny", "mar", "continuous latents on a grid or sequence"),
                                                ("vq:size=tiny", "next_scale", "needs a 'scales' layout")])
def test_eval_generation_refuses_tokens_its_generator_cannot_model_before_any_work(tmp_path, spec, arch, reason):
    from tokbench.tasks.runner import EvalConfig, run_eval

    options = {"generation": {"arch": arch}} if arch else {}
    with pytest.raises(ValueError, match=f"--tasks generation: .*{reason}"):
        run_eval(EvalConfig(tokenizer=spec, tasks=["reconstruction", "generation"], skip_metrics=["lpips", "rfid"],
                            task_options=options, out=tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_generation_under_two_gloo_ranks_runs_on_rank_zero(tmp_path):
    import json
    import subprocess
    import sys

    args = ["eval", "--tokenizer", "vq:size=tiny", "--tasks", "generation", "--resolution", "32", "--gen-steps", "10",
            "--skip-metric", "lpips,rfid"]
    one = subprocess.run([sys.executable, "-m", "tokbench", *args, "--out", str(tmp_path / "one")],
                         capture_output=True, text=True, timeout=600)
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29531",
                          "-m", "tokbench", *args, "--out", str(tmp_path / "two")], capture_output=True, text=True, timeout=600)
    assert one.returncode == 0 and two.returncode == 0, (one.stderr[-1500:], two.stderr[-1500:])
    m1, m2 = (json.loads((tmp_path / d / "results.json").read_text())["tasks"]["generation"]["metrics"]
              for d in ("one", "two"))
    # Same data, seed and steps; only the CPU thread count differs (torchrun sets 1 per rank).
    assert m2["nll_bits_per_image"]["mean"] == pytest.approx(m1["nll_bits_per_image"]["mean"], rel=0.01)


def test_eval_generation_without_inception_weights_skips_gfid_by_default_and_strict_refuses(tmp_path):
    from tokbench.tasks.runner import EvalConfig, run_eval
    from tokbench.weights import MissingWeightsError

    common = dict(tokenizer="vq:size=tiny", tasks=["generation"], resolution="32", fid_min_images=10,
                  weights_dir=str(tmp_path / "no_weights"),
                  task_options={"generation": {"steps": 5, "crops": 4, "samples": 10}})
    with pytest.raises(MissingWeightsError, match="weights-inception"):
        run_eval(EvalConfig(out=tmp_path / "strict", strict_metrics=True, **common))
    block = run_eval(EvalConfig(out=tmp_path / "out", **common))["tasks"]["generation"]
    assert "gfid" not in block["metrics"] and "tokbench weights fetch --metrics rfid" in block["skipped_metrics"]["gfid"]
