"""The prefix task: quality against the number of tokens decoded, for ordered tokens."""
import json
import math

import numpy as np
import pytest
import torch
from helpers import photo
from PIL import Image

import tokbench
from tokbench import Tokenizer, TokenLayout, Tokens
from tokbench.imageio import tensor_to_uint8
from tokbench.leaderboard.render import render_entry
from tokbench.leaderboard.store import Store
from tokbench.leaderboard.validation import check_submission, default_accepted_versions
from tokbench.results import validate_results
from tokbench.tasks.prefix import log2_area
from tokbench.tasks.runner import EvalConfig, run_eval


def test_log2_area_is_the_trapezoid_mean_over_log2_tokens():
    # linear in log2 k: the mean over [0, 4] is the midpoint value, 3 + 2 * 2 = 7
    k = np.array([1, 2, 4, 8, 16])
    assert log2_area(k, 3 + 2 * np.log2(k)) == pytest.approx(7.0)
    # VAR-like cumulative counts, uneven spacing in log2 k, written out by hand
    k, y = np.array([1, 5, 21]), np.array([10.0, 20.0, 30.0])
    x1, x2 = math.log2(5), math.log2(21)
    by_hand = ((10 + 20) / 2 * x1 + (20 + 30) / 2 * (x2 - x1)) / x2
    assert log2_area(k, y) == pytest.approx(by_hand)
    assert log2_area(np.array([256]), np.array([31.5])) == 31.5


def test_prefix_lengths_of_the_ordered_families():
    holistic = tokbench.create("holistic_1d:size=tiny,num_tokens=12")
    assert holistic.prefix_lengths(holistic.layout_for(32, 32)) == (1, 2, 4, 8, 12)
    assert tokbench.create("vq:size=tiny").prefix_lengths(TokenLayout("grid", (4, 4), vocab_size=256)) is None


def test_residual_scale_prefix_ends_at_whole_scales():
    torch.manual_seed(0)
    model = tokbench.create("residual_scale:size=tiny,ch=16").eval()
    x = photo("astronaut", 64)
    tokens = model.encode(x)
    lengths = model.prefix_lengths(tokens.layout)
    assert lengths == (1, 1 + 4, 1 + 4 + 16, 1 + 4 + 16 + 64)  # the tiny schedule 1,2,4,8 at 64 px
    assert torch.equal(model.decode_prefix(tokens, 5), model.decode_scales(tokens, 2))
    assert torch.equal(model.decode_prefix(tokens, lengths[-1]), model.decode(tokens))
    with pytest.raises(ValueError, match="whole scale.*1, 5, 21, 85"):
        model.decode_prefix(tokens, 4)


class NoisyPrefix(Tokenizer):
    """A stand-in with a known curve: decoding k of 8 tokens adds a +-0.24/k checkerboard."""

    family, kind, stride = "noisy_prefix", "discrete", 1

    def layout_for(self, h, w):
        return TokenLayout("sequence", (8,), vocab_size=2)

    def encode_padded(self, x):
        return Tokens(self.layout_for(*x.shape[-2:]), ids=torch.zeros(x.shape[0], 8, dtype=torch.long),
                      extra={"images": x.clone()})

    def decode_padded(self, tokens):
        x = tokens.extra["images"]
        k = tokens.extra.get("num_tokens", 8)
        ii, jj = torch.meshgrid(torch.arange(x.shape[-2]), torch.arange(x.shape[-1]), indexing="ij")
        return x + 0.24 / k * (((ii + jj) % 2) * 2 - 1).float()

    def prefix_lengths(self, layout):
        return (1, 2, 4, 8)

    def decode_prefix(self, tokens, num_tokens):
        return self.decode(Tokens(tokens.layout, tokens.image_size, ids=tokens.ids,
                                  extra={**tokens.extra, "num_tokens": num_tokens}))


@pytest.fixture
def photo_folder(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    for name in ("astronaut", "chelsea", "coffee"):
        Image.fromarray(tensor_to_uint8(photo(name, 48)[0])).save(folder / f"{name}.png")
    return folder


def test_known_curve_rises_and_ends_at_the_reconstruction(tmp_path, photo_folder):
    tokbench.register("noisy_prefix", NoisyPrefix)
    results = run_eval(EvalConfig(tokenizer="noisy_prefix", tasks=["prefix"], data=photo_folder, resolution="48",
                                  out=tmp_path / "run", skip_metrics=["lpips"], workers=0))
    assert validate_results(results) == []
    block = results["tasks"]["prefix"]
    curve = block["extra"]["prefix_curve"]
    assert [p["tokens"] for p in curve] == [1, 2, 4, 8]
    psnr = [p["psnr"]["mean"] for p in curve]
    assert all(a < b for a, b in zip(psnr, psnr[1:])), psnr
    # halving the error amplitude gains ~6 dB (20 log10 2) while nothing clips much
    assert psnr[2] - psnr[1] == pytest.approx(20 * math.log10(2), abs=0.7)
    # the last point is the plain reconstruction the task also reports as PSNR
    assert psnr[-1] == pytest.approx(block["metrics"]["psnr"]["mean"], abs=1e-4)
    auc = block["metrics"]["prefix_auc_psnr"]["mean"]
    assert psnr[0] < auc < psnr[-1]
    assert auc == pytest.approx(log2_area(np.array([1, 2, 4, 8]), np.array(psnr)), abs=1e-3)  # linear: means commute
    assert "needs LPIPS" in block["skipped_metrics"]["prefix_auc_lpips"]
    assert (tmp_path / "run" / "plots" / "prefix_curve.png").is_file()
    # the leaderboard's entry page draws the same curve: one point per prefix, its interval as a band
    store = Store(f"sqlite:///{tmp_path / 'lb.db'}")
    store.create_token("alice")
    candidate = check_submission(json.dumps(results).encode(), default_accepted_versions(), {})
    entry_id = store.add(candidate, 1)
    page = render_entry(store.get(entry_id), json.loads(store.results(entry_id)))
    store.close()
    figure = page[page.index('<figure class="prefix-curve">'):]
    figure = figure[:figure.index("</figure>")]
    assert figure.count("<circle") == 4 and "<polygon" in figure
    for p in curve:
        assert f"{p['tokens']} token" in figure


def test_holistic_1d_tiny_end_to_end(tmp_path, photo_folder):
    results = run_eval(EvalConfig(tokenizer="holistic_1d:size=tiny", tasks=["prefix"], data=photo_folder,
                                  resolution="32", out=tmp_path / "run", skip_metrics=["lpips"], workers=0))
    curve = results["tasks"]["prefix"]["extra"]["prefix_curve"]
    assert [p["tokens"] for p in curve] == [1, 2, 4, 8, 16]
    assert all(p["psnr"]["n"] == 3 for p in curve)
    assert json.loads((tmp_path / "run" / "results.json").read_text())["tasks"]["prefix"]["metrics"]["prefix_auc_psnr"]


def test_tokenizers_without_ordered_tokens_are_refused_before_any_work(tmp_path, photo_folder):
    with pytest.raises(ValueError, match="vq tokenizers have no coarse-to-fine token order"):
        run_eval(EvalConfig(tokenizer="vq:size=tiny", tasks=["prefix"], data=photo_folder, out=tmp_path / "run",
                            skip_metrics=["lpips"], workers=0))
    assert not (tmp_path / "run").exists()
