"""Issue 13, item 4: sinh accuracy, the design solved once per scan, units/ticks/bins of the report plots, the pull
histogram and its width in the metrics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from lumi_lib import IPConfig, luminosity
from lumi_lib.plotting import plot_est_vs_truth, plot_penalty_landscape, plot_pull_hist, plot_rel_err_hist, sample_bins
from lumi_lib.reference_quad import luminosity_quad

TIGHT = dict(epsabs=0.0, epsrel=2e-14, limit=1000)


@pytest.mark.parametrize("beta, sigma_z", [(1e5, 0.05), (3e3, 0.01), (1e4, 0.35)])
def test_extreme_beta_over_sigma_z_matches_tight_quad(beta, sigma_z):
    """beta* >> sigma_z puts every node at |t| << 1, where exp(t) - exp(-t) cancels (it lost up to 4e-11)."""
    cfg = IPConfig.lhc_default(
        "x", cross_x=0.0, beta_x1=beta, beta_y1=2 * beta, beta_x2=1.5 * beta, beta_y2=3 * beta, sigma_z1=sigma_z, sigma_z2=sigma_z
    )
    e = [2e-6, 3e-6, 2.5e-6, 1.5e-6]
    got = luminosity(cfg, torch.tensor(e, dtype=torch.float64)).item()
    assert abs(got / luminosity_quad(cfg, e, **TIGHT) - 1.0) < 1e-13


# ------------------------------------------------------------------------------------------------ design once per scan
def test_chunks_take_the_solved_design_as_plain_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from conftest import tiny_params

    import lumi_lib.design
    import tasks.lumi as tl
    from config import parse_params

    cfg = parse_params(tiny_params()).lumi_scan
    shifts = tl.scan_shifts(cfg.plan, eps_nominal=cfg.eps_nominal)
    assert isinstance(shifts, list) and all(isinstance(v, float) for row in shifts for v in row)
    json.dumps(shifts)  # plain data: travels to any task runner
    a = tl.run_scan_chunk.fn(cfg, 0, 0, 4, str(tmp_path / "a.parquet"))

    def no_solve(*args, **kwargs):
        raise AssertionError("a chunk solved the design again")

    monkeypatch.setattr(tl, "solve_shifts", no_solve)
    monkeypatch.setattr(lumi_lib.design, "solve_shifts", no_solve)
    b = tl.run_scan_chunk.fn(cfg, 0, 0, 4, str(tmp_path / "b.parquet"), shifts=shifts)
    pd.testing.assert_frame_equal(pd.read_parquet(a["path"]), pd.read_parquet(b["path"]))


# ------------------------------------------------------------------------------------------------ plots
def test_sample_bins_follow_the_sample():
    assert sample_bins(0, 40) == 5 and sample_bins(10, 40) == 7 and sample_bins(32, 40) == 12
    assert sample_bins(1600, 40) == 40 and sample_bins(20, 8) == 8


def test_plots_label_units_and_integer_iterations():
    rng = np.random.default_rng(0)
    names = ["eps_x", "eps_y"]
    t = {n: 2.3e-6 * (1 + 0.1 * rng.standard_normal(10)) for n in names}
    e = {n: v * (1 + 1e-3 * rng.standard_normal(10)) for n, v in t.items()}
    s = {n: 2.3e-9 * np.ones(10) for n in names}
    fig = plot_est_vs_truth(t, e, s, [1.84e-6, 2.76e-6])
    for ax in fig.axes:
        assert "[1e-6 m rad]" in ax.get_xlabel() and "[1e-6 m rad]" in ax.get_ylabel()
    hist = plot_rel_err_hist({n: rng.standard_normal(10) * 1e-3 for n in names}, 40)
    patches = hist.axes[0].patches
    assert patches and len(patches[0].get_path().vertices) < 2 * 40  # 10 values: 7 bins, not 40
    g = np.linspace(2e-6, 2.6e-6, 6)
    path = np.array([[2.3e-6, 2.3e-6], [2.2e-6, 2.4e-6], [2.15e-6, 2.45e-6], [2.1e-6, 2.5e-6]])
    fig = plot_penalty_landscape(g, g, np.ones((6, 6)), path, np.array([2.1e-6, 2.5e-6]), names, "t")
    fig.canvas.draw()
    iteration_bar = [ax for ax in fig.axes if ax.get_ylabel() == "iteration"][0]
    ticks = [v for v in iteration_bar.get_yticks() if iteration_bar.get_ylim()[0] <= v <= iteration_bar.get_ylim()[1]]
    assert ticks and all(float(v).is_integer() for v in ticks)


def test_pull_histogram_and_width_in_metrics(tmp_path: Path) -> None:
    from config import LumiReportParams
    from lumi_lib.scan_metrics import scan_metrics

    rng = np.random.default_rng(1)
    n = 400
    pull = rng.standard_normal(n)
    df = pd.DataFrame(
        {"inversion_id": range(n), "chunk": 0, "true_a": 1.0, "est_a": 1.0 + 0.01 * pull, "rel_err_a": 0.01 * pull,
         "sigma_a": 0.01, "residual_norm": 1.0, "iterations": 3, "converged": True, "at_bound": False, "status": 0,
         "cond": 10.0}
    )  # fmt: skip
    r = LumiReportParams()
    m = scan_metrics(
        df, {"mode": "x", "names": ["a"], "n_configs": 3}, outlier_sigma=r.outlier_sigma, outlier_rel_error=r.outlier_rel_error
    )
    assert m["pull"]["width"] == pytest.approx(np.std(pull)) and 0.9 < m["pull"]["width"] < 1.1
    assert m["pull"]["n"] == n and m["pull"]["width_robust"] == pytest.approx(1.0, abs=0.1)
    assert m["at_bound_fraction"] == 0.0 and m["status_counts"] == {"0": n}
    fig = plot_pull_hist({"a": pull}, 40)
    assert "[1]" in fig.axes[0].get_xlabel() and "unit normal" in [t.get_text() for t in fig.axes[0].get_legend().get_texts()]


def test_report_renders_the_pull_histogram(tmp_path: Path) -> None:
    from conftest import tiny_params

    from config import parse_params
    from tasks.lumi import chunk_plan, merge_scan, run_scan_chunk
    from tasks.lumi_report import render_scan_plots

    params = parse_params(tiny_params())
    cfg = params.lumi_scan
    parts = [
        run_scan_chunk.fn(cfg, c, s, k, str(tmp_path / f"p{c}.parquet"))
        for c, s, k in chunk_plan(cfg.n_inversions, cfg.chunk_size)
    ]
    merge_scan.fn(parts, str(tmp_path / "scan.parquet"), cfg)
    keys = ("rel_err_hist", "est_vs_truth", "pull_hist")
    out = render_scan_plots.fn(str(tmp_path / "scan.parquet"), {k: str(tmp_path / f"{k}.png") for k in keys}, params.lumi_report)
    assert set(out) == set(keys)
    for k in keys:
        assert Path(out[k]).read_bytes()[:4] == b"\x89PNG"
