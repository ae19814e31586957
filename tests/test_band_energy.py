"""Band energy: bounded pooled ratios that match a filter of known frequency response (issue #22 item 6)."""
import numpy as np
from scipy.ndimage import gaussian_filter

from tokbench.metrics.detail import (MIN_BAND_SHARE, NUM_BANDS, band_energies_per_pixel, band_energy_ratios,
                                     pooled_band_ratios)

SIGMA = 1.5


def to_uint8(gray_HW: np.ndarray) -> np.ndarray:
    return np.repeat(np.clip(np.round(gray_HW), 0, 255).astype(np.uint8)[..., None], 3, axis=2)


def expected_band_ratios(sigma: float) -> np.ndarray:
    """White noise through a Gaussian: |H(f)|^2 = exp(-4 pi^2 sigma^2 f^2), averaged over each
    annulus of the 2-D frequency plane (area weight f df), computed independently of tokbench."""
    edges = np.linspace(0, 0.5, NUM_BANDS + 1)
    out = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        f = np.linspace(lo, hi, 2001)
        out.append(np.trapezoid(np.exp(-4 * np.pi**2 * sigma**2 * f**2) * f, f) / np.trapezoid(f, f))
    return np.array(out)


def noise_pairs(n: int = 6, size: int = 96):
    rng = np.random.default_rng(0)
    for _ in range(n):
        noise = 128 + 40 * rng.standard_normal((size, size))
        yield to_uint8(noise), to_uint8(gaussian_filter(noise, SIGMA, mode="wrap"))


def test_pooled_ratios_follow_a_gaussian_filters_response():
    pairs = list(noise_pairs())
    pooled = pooled_band_ratios(np.stack([band_energies_per_pixel(a) for a, _ in pairs]),
                                np.stack([band_energies_per_pixel(b) for _, b in pairs]))
    expected = expected_band_ratios(SIGMA)
    for band, want in zip(pooled, expected):
        assert not band["excluded"]
        if want > 0.02:  # below that the 8-bit rounding noise is of the same order as the filtered energy
            assert abs(band["ratio"] / want - 1) < 0.15, (band, want)
            assert band["ci95"][0] <= band["ratio"] <= band["ci95"][1]
    ratios = [b["ratio"] for b in pooled]
    assert all(x >= y for x, y in zip(ratios[:4], ratios[1:5]))  # a low-pass falls monotonically


def test_an_identity_is_one_everywhere_and_nearly_empty_bands_are_excluded_not_divided():
    y, x = np.mgrid[0:64, 0:64]
    smooth = to_uint8(128 + 60 * np.cos(2 * np.pi * x / 64))  # all energy in the lowest band
    ringing = to_uint8(128 + 60 * np.cos(2 * np.pi * x / 64) + 20 * np.cos(2 * np.pi * 0.45 * x))
    e_orig, e_rec = band_energies_per_pixel(smooth)[None], band_energies_per_pixel(ringing)[None]
    same = pooled_band_ratios(e_orig, e_orig)
    assert [b["ratio"] for b in same if not b["excluded"]] == [1.0]
    pooled = pooled_band_ratios(e_orig, e_rec)
    assert sum(b["excluded"] for b in pooled) == NUM_BANDS - 1  # counted, not a ratio over ~0 energy
    bound = e_rec.sum() / (MIN_BAND_SHARE * e_orig.sum())
    assert all(b["ratio"] <= bound for b in pooled if not b["excluded"])
    assert np.isnan(band_energy_ratios(smooth, ringing)[-1])  # per image too: the empty band is not scored


def test_detail_task_reports_pooled_bands_and_a_log_axis_plot(tmp_path):
    from tokbench.tasks.runner import EvalConfig, run_eval

    results = run_eval(EvalConfig(tokenizer="resize:f=2", tasks=["detail"], limit=6, skip_metrics=["lpips", "rfid"],
                                  out=tmp_path / "o"))
    bands = results["tasks"]["detail"]["extra"]["band_energy_ratio"]
    scored = [b["mean"] for b in bands if not b["excluded"]]
    assert len(bands) == NUM_BANDS and scored and all(0 <= r < 10 for r in scored)
    assert scored[0] > scored[-1]  # down- and up-sampling loses high frequencies
    assert "excluded" in results["tasks"]["detail"]["extra"]["band_energy_definition"]
    assert (tmp_path / "o" / "plots" / "band_energy.png").is_file()
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tokbench.tasks.detail import DetailTask

    figures = []
    DetailTask.plots([results], tmp_path, lambda: figures.append(plt.subplots()) or figures[-1])
    assert figures[0][1].get_yscale() == "log"
