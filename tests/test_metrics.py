"""``tomopt_lib.metrics``: the statistics behind ``metrics/evaluate.json``, on synthetic data with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from tomopt_lib.core import X0
from tomopt_lib.metrics import bootstrap_mean, calibration, material_of, paired_bootstrap_ratio, volume_scores


def test_paired_bootstrap_ratio_covers_the_true_ratio() -> None:
    rng = np.random.default_rng(0)
    b = rng.gamma(4.0, 0.25, size=40)  # per-volume errors of a baseline
    a = 0.8 * b * rng.lognormal(0.0, 0.05, size=40)  # trained: 20 % lower, strongly paired
    ratio, (lo, hi) = paired_bootstrap_ratio(a, b, 2000, seed=1)
    assert ratio == pytest.approx(a.mean() / b.mean())
    assert lo < 0.8 < hi and hi < 1.0  # the interval excludes 1: the pairing removes the volume-to-volume spread
    r2, ci2 = paired_bootstrap_ratio(a, b, 2000, seed=1)
    assert (r2, ci2) == (ratio, [lo, hi])  # seeded
    nan_ratio, nan_ci = paired_bootstrap_ratio(a[:1], b[:1], 100, seed=1)
    assert np.isnan(nan_ratio) and all(np.isnan(nan_ci))


def test_bootstrap_mean_interval() -> None:
    a = np.random.default_rng(2).normal(3.0, 1.0, size=400)
    m, lo, hi = bootstrap_mean(np.append(a, np.nan), 2000, seed=0)
    assert m == pytest.approx(a.mean()) and lo < 3.0 < hi
    assert hi - lo == pytest.approx(2 * 1.96 / np.sqrt(400), rel=0.15)  # the standard error of a mean


def test_calibration_recovers_bias_and_unit_pull_width() -> None:
    rng = np.random.default_rng(3)
    truth = np.where(rng.random((50, 6, 10, 10)) < 0.3, X0["lead"], X0["beryllium"])
    rel = 0.2  # reported relative uncertainty, and the true spread of ln X0
    pred = truth * 1.1 * np.exp(rel * rng.standard_normal(truth.shape))  # 10 % biased high
    cal = calibration(list(pred), list(rel * pred), list(truth))
    for m in ("lead", "beryllium"):
        assert cal["materials"][m]["median_ratio"] == pytest.approx(1.1, rel=0.01)
    # pulls of ln X0 around the truth: width sqrt(1 + (ln 1.1 / 0.2)^2) ~ 1.0 from the spread plus the bias
    assert cal["pull_width"] == pytest.approx(1.0, abs=0.03)
    doubled = calibration(list(pred), list(2 * rel * pred), list(truth))  # uncertainties twice too large
    assert doubled["pull_width"] == pytest.approx(cal["pull_width"] / 2, rel=0.02)


def test_material_of_and_volume_scores() -> None:
    x0 = np.array([X0["iron"], X0["lead"] * 1.0005, X0["lead"] * 1.01])  # the last: 1 % off every table entry
    assert material_of(x0).tolist() == ["iron", "lead", "other"]
    true = np.full((2, 3, 3), X0["beryllium"])
    true[0, :2, :2] = X0["lead"]
    perfect = volume_scores(true.copy(), true)
    assert perfect["mse_x0"] == 0 and perfect["mse_log_x0"] == 0 and perfect["contrast"] == pytest.approx(1.0)
    flat = volume_scores(np.full_like(true, true.mean()), true)  # no image of the block: contrast 0
    assert flat["contrast"] == pytest.approx(0.0, abs=1e-12) and flat["mse_log_x0"] > 0
    assert np.isnan(volume_scores(np.full_like(true, np.nan), true)["mse_x0"])
