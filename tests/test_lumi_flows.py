"""Luminosity scan/report tasks (``.fn`` on tiny scans) and flows (under the session's Prefect harness), task runners."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import PipelineRun, tiny_params

from config import parse_params
from flows.paths import PipelinePaths
from lumi_lib.scan_metrics import scan_metrics
from tasks.lumi import build_design, chunk_plan, merge_scan, read_scan, run_scan_chunk, scan_columns
from tasks.lumi_report import build_lumi_metrics, landscape_case, render_scan_plots

XY_2IP: dict[str, Any] = tiny_params()["lumi_scan"]["plan"]  # crossing planes y and x, one shift of sep_x: 4 configs


def _params(scan: dict[str, Any] | None = None, report: dict[str, Any] | None = None, runtime: dict[str, Any] | None = None):
    """``tiny_params`` (conftest): mode xy, 10 inversions in chunks of 4, the 2-IP plan; landscape grid 12, 8 bins."""
    return parse_params(tiny_params(lumi_scan=scan or {}, lumi_report=report or {}, runtime=runtime or {}))


def _scan_fn(tmp_path: Path, **scan: Any) -> Path:
    cfg = _params(scan).lumi_scan
    parts = [
        run_scan_chunk.fn(cfg, c, s, n, str(tmp_path / f"part{c}.parquet"))
        for c, s, n in chunk_plan(cfg.n_inversions, cfg.chunk_size)
    ]
    merge_scan.fn(parts, str(tmp_path / "scan.parquet"), cfg)
    return tmp_path / "scan.parquet"


def test_chunk_plan_covers_everything() -> None:
    assert chunk_plan(10, 4) == [(0, 0, 4), (1, 4, 4), (2, 8, 2)]
    assert chunk_plan(1600, 100)[-1] == (15, 1500, 100) and len(chunk_plan(1600, 100)) == 16


def test_plan_params_rebuild_the_reference_designs() -> None:
    from lumi_lib.inversion import preset_design

    for plan, preset in ((_params().lumi_scan.plan, "xy_2ip"), (parse_params({}).lumi_scan.plan, "xy12_last")):
        mine, ref = build_design(plan, eps_nominal=2.3e-6), preset_design(preset)
        assert mine.n_configs == ref.n_configs
        torch.testing.assert_close(mine.offsets, ref.offsets, rtol=1e-9, atol=0.0)
    assert parse_params({}).lumi_scan.plan.n_configs == 9604


def test_scan_chunks_and_merge(tmp_path: Path) -> None:
    path = _scan_fn(tmp_path)
    df, meta = read_scan(str(path))
    assert list(df.columns) == list(scan_columns(("eps_x", "eps_y")))
    assert df["inversion_id"].tolist() == list(range(10)) and df["chunk"].tolist() == [0] * 4 + [1] * 4 + [2] * 2
    assert meta["mode"] == "xy" and meta["names"] == ["eps_x", "eps_y"] and meta["n_configs"] == 4 and meta["n_chunks"] == 3
    assert not list(tmp_path.glob("part*.parquet")), "chunk parts are removed after the merge"
    t = df[["true_eps_x", "true_eps_y"]].to_numpy()
    assert ((t >= 2.3e-6 * 0.8) & (t <= 2.3e-6 * 1.2)).all()
    assert df["converged"].all() and (df["cond"] < 1e3).all() and (df["sigma_eps_x"] > 0).all()
    assert 1e-4 < df["rel_err_eps_x"].abs().mean() < 1e-2  # 2 IPs with 0.1 % noise: errors of order 1e-3
    est = df["est_eps_x"].to_numpy()
    np.testing.assert_allclose(df["rel_err_eps_x"], (est - df["true_eps_x"]) / df["true_eps_x"], rtol=1e-12)


def test_scan_is_seeded_and_noise_free_is_exact(tmp_path: Path) -> None:
    cfg = _params({"rel_noise": 0.0}).lumi_scan
    a = run_scan_chunk.fn(cfg, 1, 4, 4, str(tmp_path / "a.parquet"))
    b = run_scan_chunk.fn(cfg, 1, 4, 4, str(tmp_path / "b.parquet"))
    assert a["warning"] is None
    da, db = (pd.read_parquet(r["path"]) for r in (a, b))
    pd.testing.assert_frame_equal(da, db)  # no wall-clock columns: same seed, same table
    assert da["rel_err_eps_x"].abs().max() < 1e-9 and da["rel_err_eps_y"].abs().max() < 1e-9
    other = pd.read_parquet(run_scan_chunk.fn(cfg, 2, 8, 4, str(tmp_path / "c.parquet"))["path"])
    assert not np.allclose(other["true_eps_x"], da["true_eps_x"]), "each chunk draws its own truths"


def test_degenerate_plan_is_flagged(tmp_path: Path) -> None:
    cfg = _params({"mode": "12", "rel_noise": 0.0, "plan": {**XY_2IP, "bases": [{"crossing_plane": "y"}]}}).lumi_scan
    res = run_scan_chunk.fn(cfg, 0, 0, 3, str(tmp_path / "d.parquet"))
    assert res["warning"] and "cannot separate" in res["warning"] and "eps_1" in res["warning"]


def test_scan_metrics_outlier_definition() -> None:
    n = 10
    df = pd.DataFrame(
        {
            "inversion_id": range(n),
            "chunk": 0,
            "true_a": 1.0,
            "est_a": 1.0,
            "rel_err_a": 0.0,
            "sigma_a": 0.01,
            "residual_norm": 1.0,
            "iterations": 3,
            "converged": True,
            "cond": 10.0,
        }
    )
    df.loc[0, ["est_a", "rel_err_a"]] = [1.08, 0.08]  # 8 sigma and 8 %: outlier by both definitions
    df.loc[1, ["est_a", "rel_err_a"]] = [1.06, 0.06]  # 6 sigma: not an outlier at 7 sigma, but above 5 %
    df.loc[2, "sigma_a"] = np.nan  # no covariance: counted as an outlier
    m = scan_metrics(
        df,
        {"mode": "x", "names": ["a"], "n_configs": 3},
        outlier_sigma=7.0,
        outlier_rel_error=0.05,
    )
    assert m["outliers"]["count"] == 2 and m["outliers"]["fraction"] == pytest.approx(0.2)
    assert m["outliers"]["fraction_rel_error_above"] == pytest.approx(0.2)
    assert m["rel_error"]["a"]["max_abs"] == pytest.approx(0.08) and "timing_s" not in m


def test_report_tasks(tmp_path: Path) -> None:
    scan = _scan_fn(tmp_path)
    rep = _params().lumi_report
    land = {c: landscape_case.fn(c, str(tmp_path / f"pen_{c}.png"), rep) for c in ("12", "xy", "xy_noise")}
    assert land["12"]["warning"] and land["12"]["cond"] > 1e8  # eps_1 + eps_2 only
    assert abs(land["xy"]["rel_error"][0]) < 1e-9 and land["xy"]["warning"] is None  # noise-free 1 IP: exact
    assert land["xy_noise"]["n_residuals"] == 4 and land["xy_noise"]["n_path_points"] >= 2
    plots = render_scan_plots.fn(
        str(scan), {"rel_err_hist": str(tmp_path / "h.png"), "est_vs_truth": str(tmp_path / "e.png")}, rep
    )
    csvs = {"rel_err_hist": str(tmp_path / "h.csv"), "est_vs_truth": str(tmp_path / "e.csv")}
    m = build_lumi_metrics.fn(str(scan), str(tmp_path / "m.json"), csvs, rep, land)
    for f in [*plots.values(), *(tmp_path / f"pen_{c}.png" for c in land)]:
        assert Path(f).read_bytes()[:4] == b"\x89PNG"
    assert json.loads((tmp_path / "m.json").read_text())["convergence_rate"] == m["convergence_rate"] == 1.0
    hist = pd.read_csv(csvs["rel_err_hist"])
    assert (
        len(hist) == 8
        and hist["count_all"].sum() == 20
        and list(hist.columns) == ["rel_err", "count_all", "count_eps_x", "count_eps_y"]
    )
    assert len(pd.read_csv(csvs["est_vs_truth"])) == 20 and set(m["landscapes"]) == {"12", "xy", "xy_noise"}


def test_make_task_runner() -> None:
    from prefect.task_runners import ThreadPoolTaskRunner
    from prefect_dask import DaskTaskRunner

    from flows.pipeline import make_task_runner

    r = make_task_runner(_params(runtime={"task_workers": 3}).runtime)
    assert isinstance(r, ThreadPoolTaskRunner) and r._max_workers == 3
    r = make_task_runner(_params(runtime={"task_runner": "dask_local", "task_workers": 2, "threads": 1}).runtime)
    assert isinstance(r, DaskTaskRunner)
    kw = r.cluster_kwargs
    assert kw["n_workers"] == 2 and kw["threads_per_worker"] == 1 and kw["processes"] and kw["dashboard_address"] is None
    assert kw["env"]["OMP_NUM_THREADS"] == "1"
    r = make_task_runner(_params(runtime={"task_runner": "dask_address", "dask_address": "tcp://127.0.0.1:8786"}).runtime)
    assert isinstance(r, DaskTaskRunner) and r.address == "tcp://127.0.0.1:8786"


# ------------------------------------------------------------------------------------------------ flows


@pytest.mark.flow
def test_lumi_flows(tiny_pipeline: PipelineRun) -> None:
    """lumi_scan -> lumi_report of the shared pipeline (same lumi parameters as ``_params()``)."""
    summary, metrics = tiny_pipeline.out["lumi_scan"], tiny_pipeline.out["lumi_report"]
    paths = PipelinePaths.at(tiny_pipeline.workdir)
    assert summary["n_inversions"] == 10 and summary["n_chunks"] == 3 and paths.lumi_scan.is_file()
    assert not [f for f in paths.lumi_scan.parent.iterdir() if f.name.startswith(".lumi-scan-")], "work folder removed"
    df, meta = read_scan(str(paths.lumi_scan))
    assert df["inversion_id"].tolist() == list(range(10)) and meta["n_chunks"] == 3 and meta["n_configs"] == 4
    assert json.loads(paths.lumi_metrics.read_text()) == json.loads(json.dumps(metrics))
    assert metrics["convergence_rate"] == 1.0
    for f in [*paths.lumi_plots.values(), *paths.lumi_csvs.values()]:
        assert f.is_file() and f.stat().st_size > 0, f
    assert "Luminosity scan: mode xy" in tiny_pipeline.artifacts["lumi-scan-summary"]
    assert "| convergence rate | 1 |" in tiny_pipeline.artifacts["lumi-report"]
    progress = tiny_pipeline.artifacts["lumi-scan-progress"]
    assert progress is not None and float(progress) == 100.0
