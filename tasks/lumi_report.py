"""Luminosity report tasks: metrics JSON + CSVs for ``dvc plots``, distribution plots, penalty landscapes.

Outlier definition (``outliers`` in the metrics): an inversion whose estimate misses the truth by more than
``outlier_sigma`` standard deviations of its own covariance (``|est - truth| > k sigma``) in any component, or whose
sigma is not finite; k = 7 follows the reference's 7-sigma rejection. The fraction with any ``|relative error| >
outlier_rel_error`` (default 5 %) is reported next to it.

Pull width (``pull`` in the metrics): the std of (estimate - truth) / sigma, 1 when the covariance describes the
scatter. Its statistical uncertainty is about width / sqrt(2 (n - 1)) (``std_error``): 13 % for the default 32
inversions, whose pull widths 0.75-0.82 are therefore no evidence of a conservative covariance (the components are
also pairwise correlated: in the default plan the eps_x1 and eps_x2 pulls have correlation -1, so the four widths are
two independent numbers). 1000 inversions of the default plan give 0.96-1.01 per component (0.98 pooled; 0.99 without
the ~5 % of inversions on a bound, whose clipping narrows the distribution); ``width_interior`` leaves those out.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch
from prefect import task
from prefect.cache_policies import NO_CACHE

from config import LumiReportParams
from lumi_lib.design import NOMINAL_EPS
from lumi_lib.inversion import DEFAULT_REL_UNCERTAINTY_WARN, invert, mode_matrix, preset_design
from lumi_lib.landscape import penalty_landscape
from lumi_lib.model import luminosity
from lumi_lib.plotting import (
    plot_est_vs_truth,
    plot_penalty_landscape,
    plot_pull_hist,
    plot_rel_err_hist,
    plot_rel_lumi_error,
    sample_bins,
)
from lumi_lib.scan_metrics import finite_or_none, pulls, scan_metrics
from tomopt_lib.io import write_json
from tomopt_lib.runtime import resolve_device

from .common import derive_seed, task_logger
from .lumi import read_scan
from .outputs import save_csv, save_png

__all__ = [
    "LANDSCAPE_CASES",
    "LANDSCAPE_STAGE_KEY",
    "TIMING_KEYS",
    "write_rel_err_hist_csv",
    "write_est_vs_truth_csv",
    "lumi_metrics_markdown",
    "build_lumi_metrics",
    "render_scan_plots",
    "render_iteration_plot",
    "landscape_case",
]

LANDSCAPE_STAGE_KEY = 7002
TIMING_KEYS = ("landscape_s",)
"""Wall-clock entries of a :func:`landscape_case` result: logged and written to ``timings/``, never to the metrics."""
LANDSCAPE_CASES: dict[str, dict[str, Any]] = {
    "12": {
        "mode": "12",
        "preset": "12_equal",
        "noisy": False,
        "title": "12: 1 IP, equal optics, noise-free (eps_1 + eps_2 only)",
    },
    "xy": {"mode": "xy", "preset": "xy_1ip", "noisy": False, "title": "xy: 1 IP (crossing y) + sep_x shift, noise-free"},
    "xy_noise": {
        "mode": "xy",
        "preset": "xy_2ip",
        "noisy": True,
        "title": "xy: 2 IPs (crossing y, x) + sep_x shifts, with noise",
    },
}
"""The reference's three penalty scanners: case -> mode, preset plan (``lumi_lib.inversion.PRESETS``), noise, title."""


def write_rel_err_hist_csv(df: pd.DataFrame, names: Sequence[str], path: str, *, bins: int) -> None:
    """Histogram CSV: ``rel_err`` (bin centre), ``count_all`` (components pooled), ``count_<name>`` per component;
    at most ``bins`` bins, fewer for small samples (:func:`lumi_lib.plotting.sample_bins` of the pooled values)."""
    rel = {c: df[f"rel_err_{c}"].to_numpy(float) for c in names}
    finite = np.concatenate([v[np.isfinite(v)] for v in rel.values()]) if rel else np.zeros(0)
    lim = float(np.abs(finite).max()) if finite.size else 1.0
    edges = np.linspace(-(lim or 1.0), lim or 1.0, sample_bins(finite.size, bins) + 1)
    cols: dict[str, Any] = {"rel_err": (edges[:-1] + edges[1:]) / 2, "count_all": np.histogram(finite, bins=edges)[0]}
    for c, v in rel.items():
        cols[f"count_{c}"] = np.histogram(v[np.isfinite(v)], bins=edges)[0]
    save_csv(pd.DataFrame(cols), path, float_format="%.6g")


def write_est_vs_truth_csv(df: pd.DataFrame, names: Sequence[str], path: str) -> None:
    """Long-format CSV: ``inversion_id``, ``component``, ``truth``, ``estimate``, ``sigma``, ``rel_err`` (1e-6 m rad)."""
    frames = [
        pd.DataFrame(
            {
                "inversion_id": df["inversion_id"],
                "component": c,
                "truth": df[f"true_{c}"] * 1e6,
                "estimate": df[f"est_{c}"] * 1e6,
                "sigma": df[f"sigma_{c}"] * 1e6,
                "rel_err": df[f"rel_err_{c}"],
            }
        )
        for c in names
    ]
    out = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    save_csv(out, path, float_format="%.10g")


def lumi_metrics_markdown(metrics: Mapping[str, Any], timings: Mapping[str, Any] | None = None) -> str:
    """Markdown tables of the luminosity metrics (for a Prefect artifact); ``timings``: the scan's untracked timings
    (``timings/lumi_scan.json``: ``time_per_inversion_s``), shown when given."""

    def fmt(v: Any) -> str:
        return "n/a" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))

    s = metrics["scan"]
    lines = [
        f"# Luminosity inversion report: mode {s['mode']}",
        "",
        f"{s['n_inversions']} inversions, {s['n_residuals']} residuals each, relative noise {fmt(s['rel_noise'])}",
        "",
        "| component | mean abs rel. error | max abs rel. error | bias | pull std |",
        "|---|---|---|---|---|",
    ]
    for c, r in metrics["rel_error"].items():
        lines.append(f"| {c} | {fmt(r['mean_abs'])} | {fmt(r['max_abs'])} | {fmt(r['mean'])} | {fmt(metrics['pull_std'][c])} |")
    o, cn = metrics["outliers"], metrics["condition_number"]
    pw = metrics.get("pull", {})
    lines += [
        "",
        "| metric | value |",
        "|---|---|",
        f"| convergence rate | {fmt(metrics['convergence_rate'])} |",
        f"| fraction on a bound | {fmt(metrics.get('at_bound_fraction'))} |",
        f"| pull width (std +- stat. error, robust, interior) | {fmt(pw.get('width'))} +- {fmt(pw.get('std_error'))}, "
        f"{fmt(pw.get('width_robust'))}, {fmt(pw.get('width_interior'))} |",
        f"| mean / max iterations | {fmt(metrics['iterations']['mean'])} / {fmt(metrics['iterations']['max'])} |",
        f"| outlier fraction ({o['definition']}) | {fmt(o['fraction'])} |",
        f"| fraction with abs rel. error > {o['rel_error_threshold']:g} | {fmt(o['fraction_rel_error_above'])} |",
        f"| condition number median / max | {fmt(cn['median'])} / {fmt(cn['max'])} |",
    ]
    if timings and timings.get("time_per_inversion_s") is not None:
        lines.append(f"| solve time per inversion [s] (timings/, not versioned) | {fmt(timings['time_per_inversion_s'])} |")
    if metrics.get("identifiability_warning"):
        lines += ["", "**Identifiability:** " + str(metrics["identifiability_warning"])]
    land = metrics.get("landscapes", {})
    if land:
        lines += [
            "",
            "| landscape | residuals | iterations | converged | condition number | rel. errors |",
            "|---|---|---|---|---|---|",
        ]
        for case, m in land.items():
            rel = ", ".join(f"{v:.2g}" for v in m["rel_error"])
            lines.append(f"| {case} | {m['n_residuals']} | {m['iterations']} | {m['converged']} | {fmt(m['cond'])} | {rel} |")
    return "\n".join(lines) + "\n"


@task(name="lumi-build-metrics", task_run_name="lumi-build-metrics", cache_policy=NO_CACHE, persist_result=False)
def build_lumi_metrics(
    scan_path: str,
    metrics_path: str,
    csv_paths: Mapping[str, str],
    report: LumiReportParams,
    landscapes: Mapping[str, Any] | None = None,
    timings_path: str | None = None,
) -> dict[str, Any]:
    """Write ``metrics_path`` (JSON, with the landscape summaries) and the two CSVs; return the metrics. The metrics
    hold no wall-clock values (the landscapes' ``landscape_s`` go to ``timings_path``, an untracked JSON, if given)."""
    df, meta = read_scan(scan_path)
    metrics = scan_metrics(df, meta, outlier_sigma=report.outlier_sigma, outlier_rel_error=report.outlier_rel_error)
    land = {case: dict(m) for case, m in (landscapes or {}).items()}
    seconds = {case: m.pop(k) for case, m in land.items() for k in TIMING_KEYS if k in m}
    metrics["landscapes"] = land
    write_json(metrics, metrics_path)
    if timings_path is not None:
        write_json({"landscape_s": seconds}, timings_path)
    write_rel_err_hist_csv(df, meta["names"], csv_paths["rel_err_hist"], bins=report.hist_bins)
    write_est_vs_truth_csv(df, meta["names"], csv_paths["est_vs_truth"])
    task_logger().info(
        "lumi metrics: %d inversions, convergence %.3g, outliers %.3g",
        len(df),
        metrics["convergence_rate"] or 0.0,
        metrics["outliers"]["fraction"] or 0.0,
    )
    return metrics


@task(name="lumi-scan-plots", task_run_name="lumi-scan-plots", cache_policy=NO_CACHE, persist_result=False)
def render_scan_plots(scan_path: str, plot_paths: Mapping[str, str], report: LumiReportParams) -> dict[str, str]:
    """Relative-error histogram and estimate-vs-truth PNGs (keys ``rel_err_hist``, ``est_vs_truth``) and, if
    ``plot_paths`` has the key ``pull_hist``, the pull histogram."""
    df, meta = read_scan(scan_path)
    names = meta["names"]
    title = f"mode {meta['mode']}: {len(df)} inversions x {meta.get('n_configs')} residuals"
    save_png(
        plot_rel_err_hist({c: df[f"rel_err_{c}"].to_numpy() for c in names}, report.hist_bins, title),
        plot_paths["rel_err_hist"],
        dpi=90,
    )
    cols = {p: {c: df[f"{p}_{c}"].to_numpy() for c in names} for p in ("true", "est", "sigma")}
    save_png(
        plot_est_vs_truth(cols["true"], cols["est"], cols["sigma"], meta.get("params", {}).get("bounds")),
        plot_paths["est_vs_truth"],
        dpi=90,
    )
    keys = ["rel_err_hist", "est_vs_truth"]
    if "pull_hist" in plot_paths:
        pull = pulls(df, names)
        save_png(
            plot_pull_hist({c: pull[:, j] for j, c in enumerate(names)}, report.hist_bins, title), plot_paths["pull_hist"], dpi=90
        )
        keys.append("pull_hist")
    return {k: plot_paths[k] for k in keys}


@task(name="lumi-iteration-plot", task_run_name="lumi-iteration-plot", cache_policy=NO_CACHE, persist_result=False)
def render_iteration_plot(landscapes: Mapping[str, Mapping[str, Any]], out_png: str) -> str:
    """PNG of the relative luminosity error per iteration of the landscape inversions (``rel_lumi_error``)."""
    hist = {case: m["rel_lumi_error"] for case, m in landscapes.items() if m.get("rel_lumi_error")}
    save_png(plot_rel_lumi_error(hist, "Relative luminosity error per iteration (penalty-landscape inversions)"), out_png, dpi=90)
    return out_png


@task(name="lumi-penalty-landscape", task_run_name="lumi-landscape-{case}", cache_policy=NO_CACHE, persist_result=False)
def landscape_case(
    case: str, out_png: str, report: LumiReportParams, device: str | None = "cpu", threads: int | None = None
) -> dict[str, Any]:
    """One reference penalty scanner: seeded truth, one inversion with its iterates, the penalty on a grid over
    ``eps_nominal (1 +- landscape_span)`` in both unknowns, and a PNG with the path overlaid. Returns a summary."""
    if threads and torch.get_num_threads() != int(threads):
        torch.set_num_threads(int(threads))
    spec = LANDSCAPE_CASES[case]
    dev = resolve_device(device)
    span, grid_n = report.landscape_span, report.landscape_grid
    gen = torch.Generator().manual_seed(
        derive_seed(report.landscape_seed, LANDSCAPE_STAGE_KEY, list(LANDSCAPE_CASES).index(case))
    )
    truth = NOMINAL_EPS * (1.0 + 0.75 * span * (2.0 * torch.rand(1, 2, generator=gen, dtype=torch.float64) - 1.0))
    noise = report.landscape_rel_noise if spec["noisy"] else 0.0
    design = preset_design(spec["preset"], target=report.landscape_target, device=dev)
    lo, hi = NOMINAL_EPS * (1.0 - span), NOMINAL_EPS * (1.0 + span)
    res = invert(
        spec["mode"],
        truth.to(dev),
        design=design,
        rel_noise=noise,
        generator=gen,
        device=dev,
        x0=NOMINAL_EPS,
        lower=lo,
        upper=hi,
        record_path=True,
        cond_warn=math.inf,
        rel_uncertainty_warn=math.inf,
    )
    warning = res.identifiability_warning(1e8, DEFAULT_REL_UNCERTAINTY_WARN if spec["noisy"] else None)
    if warning:
        task_logger().info("landscape %s (an illustration; the 12 case is degenerate on purpose): %s", case, warning)
    grid = torch.linspace(lo, hi, grid_n, dtype=torch.float64, device=dev)
    t0 = time.perf_counter()
    z = penalty_landscape(spec["mode"], res.measured[0], design=design, grid_a=grid, grid_b=grid, rel_noise=noise, device=dev)
    t_land = time.perf_counter() - t0
    g, zz = grid.cpu().numpy(), z.cpu().numpy()
    assert res.path is not None and res.rel_error is not None  # record_path=True with a truth
    path = res.path[:, 0, :].cpu().numpy()
    _, pmat = mode_matrix(spec["mode"], device=dev)
    with torch.no_grad():  # the reference's rel_err_L: max_m |L_m(x_k) / C_m - 1| along the iterates
        lum_k = luminosity(design.config.to(dev), res.path[:, 0, None, :] @ pmat)
    rel_lumi = (lum_k / res.measured[0] - 1.0).abs().amax(dim=-1).cpu().tolist()
    title = f"{spec['title']}\n{design.n_configs} residuals, {int(res.iterations[0])} iterations, grid {grid_n}^2"
    save_png(plot_penalty_landscape(g, g, zz, path, truth[0].numpy(), res.names, title), out_png, dpi=90)
    task_logger().info("landscape %s: %d x %d grid in %.2f s", case, grid_n, grid_n, t_land)
    return {
        "mode": spec["mode"],
        "plan": spec["preset"],
        "rel_noise": noise,
        "n_residuals": design.n_configs,
        "truth": truth[0].tolist(),
        "estimate": res.estimate[0].cpu().tolist(),
        "rel_error": res.rel_error[0].cpu().tolist(),
        "iterations": int(res.iterations[0]),
        "converged": bool(res.converged[0]),
        "cond": finite_or_none(res.cond[0]),
        "penalty_at_estimate": finite_or_none(res.residual_norm[0]),
        "grid_min_penalty": finite_or_none(np.nanmin(zz)),
        "grid": grid_n,
        "landscape_s": t_land,
        "n_path_points": int(len(path)),
        "rel_lumi_error": [float(v) for v in rel_lumi],
        "warning": warning,
        "png": out_png,
    }
