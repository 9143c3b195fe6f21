"""Evaluation tasks: held-out passives, per-detector X0 predictions, comparison metrics, CSV, images, markdown.

Every detector sees the same held-out volumes and the same muon random stream (common random numbers), so the
differences between detectors come from the layouts, not from sampling luck.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from config import EvaluateParams, OptimiseParams, PassiveParams, VolumeParams
from tomopt_lib.io import PassiveRecord, read_passives, write_json, write_passives
from tomopt_lib.metrics import bootstrap_mean, calibration, paired_bootstrap_ratio, volume_scores
from tomopt_lib.optimisation.callbacks import Callback
from tomopt_lib.plotting import plot_pred_true_x0
from tomopt_lib.plotting.study import plot_error_per_volume, plot_metric_intervals, plot_pred_vs_true_by_material
from tomopt_lib.runtime import resolve_device
from tomopt_lib.volume import Volume

from .common import derive_seed, task_logger
from .detector import (
    build_reference_volume,
    build_start_volume,
    describe_detector,
    load_detector,
    make_wrapper,
    passive_layouts,
    write_passive_set,
    yielder,
)
from .outputs import save_csv, save_png

__all__ = [
    "EVALUATE_STAGE_KEY",
    "eval_seed",
    "make_heldout",
    "detector_volume",
    "predict_detector",
    "compare_detectors",
    "evaluate_markdown",
    "unc_path",
]

EVALUATE_STAGE_KEY = 6
PRIMARY = "mean_mse_log_x0"
"""Headline comparison: mean over held-out volumes of the per-voxel MSE of log X0 (scale-free: the X0 MSE, i.e. the
training loss, is dominated by the low-density voxels and by single wild predictions; it is reported as well)."""


def eval_seed(seed: int, ev: EvaluateParams) -> int:
    """``evaluate.seed`` or a seed derived from the pipeline seed."""
    return ev.seed if ev.seed is not None else derive_seed(seed, EVALUATE_STAGE_KEY)


@task(name="evaluate-heldout", cache_policy=NO_CACHE, persist_result=False)
def make_heldout(out_path: str, seed: int, volume_cfg: VolumeParams, passives: PassiveParams, ev: EvaluateParams) -> int:
    """Generate the held-out passives (``evaluate.n_volumes``, evaluation seed) into ``out_path``."""
    return write_passive_set(out_path, volume_cfg, passives, ev.n_volumes, derive_seed(eval_seed(seed, ev), 1))


class _Preds(Callback):
    """Records ``volume_id -> X0 prediction`` and, in ``uncs``, its uncertainty (when the inferrer reports one)."""

    def __init__(self) -> None:
        super().__init__()
        self.preds: dict[int, np.ndarray] = {}
        self.uncs: dict[int, np.ndarray] = {}

    def on_x0_pred_end(self) -> None:
        fp = self.wrapper.fit_params
        pred = fp.pred[0] if isinstance(fp.pred, (tuple, list)) else fp.pred
        if pred is not None and fp.volume_id is not None:
            self.preds[int(fp.volume_id)] = pred.detach().cpu().numpy()
            unc = getattr(fp.volume_inferrer, "vox_zxy_x0_pred_uncs", None)
            if unc is not None:
                self.uncs[int(fp.volume_id)] = unc.detach().cpu().numpy()

    def get_preds(self) -> dict[int, np.ndarray]:
        return self.preds


def detector_volume(
    name: str, volume_cfg: VolumeParams, opt: OptimiseParams, detector_pt: str | None = None, device: str | None = "cpu"
) -> Volume:
    """The volume of detector ``name``: "reference" (hand design), "start" or "trained" (the start with the parameters
    of ``detector_pt``), at the fixed budget ``opt.budget``, on ``device``."""
    dev = resolve_device(device)
    if name == "reference":
        return build_reference_volume(volume_cfg, dev, budget=opt.budget)
    vol = build_start_volume(volume_cfg, opt.start, dev, budget=opt.budget)
    if name == "trained":
        load_detector(vol, str(detector_pt))
    return vol


@task(name="evaluate-predict", task_run_name="predict-{name}", cache_policy=NO_CACHE, persist_result=False)
def predict_detector(
    name: str,
    heldout_path: str,
    out_path: str,
    seed: int,
    volume_cfg: VolumeParams,
    opt: OptimiseParams,
    ev: EvaluateParams,
    detector_pt: str | None = None,
    device: str | None = "cpu",
) -> dict[str, Any]:
    """Predict X0 of every held-out volume with detector ``name`` ("trained" from ``detector_pt``, "start",
    "reference") on ``device``; writes the predictions (passives format, NaN where a volume got no muons) to
    ``out_path``."""
    vol = detector_volume(name, volume_cfg, opt, detector_pt, device)
    vw = make_wrapper(vol, opt, seed=derive_seed(eval_seed(seed, ev), 2), inferrer=ev.inferrer, momentum=ev.momentum)
    layouts, cubes = passive_layouts(heldout_path, vol)
    cb = _Preds()
    got = vw.predict(yielder(layouts, False), ev.n_mu_per_volume, ev.mu_bs, pred_cb=cb)
    recs = [
        PassiveRecord(x0=got[i].reshape(c.shape) if i in got else np.full(c.shape, np.nan), attrs={"index": i})
        for i, c in enumerate(cubes)
    ]
    write_passives(out_path, recs, attrs={"generator": "prediction", "detector": name})
    uncs = [
        PassiveRecord(x0=cb.uncs[i].reshape(c.shape) if i in cb.uncs else np.full(c.shape, np.nan), attrs={"index": i})
        for i, c in enumerate(cubes)
    ]
    write_passives(unc_path(out_path), uncs, attrs={"generator": "prediction uncertainty [m]", "detector": name})
    task_logger().info("detector %s: predicted %d/%d held-out volumes", name, len(got), len(cubes))
    return {"name": name, "n_predicted": len(got), "total_cost": describe_detector(vol)["total_cost"]}


def unc_path(pred_path: str) -> str:
    """Where the uncertainties of the predictions in ``pred_path`` are written (same layout, X0 uncertainty [m])."""
    p = Path(pred_path)
    return str(p.with_name(p.stem + "_unc" + p.suffix))


def _versus(df: pd.DataFrame, per: Mapping[str, Mapping[str, float]], name: str, n_boot: int, seed: int) -> dict[str, Any]:
    """Trained / baseline ratios of the mean and median errors (< 1: trained better), the primary ratio with its
    paired-bootstrap 95 % interval, the cost ratio, and per-volume win counts."""
    t, b = per["trained"], per[name]
    a = df[df.detector == "trained"][PRIMARY.removeprefix("mean_")].to_numpy()
    c = df[df.detector == name][PRIMARY.removeprefix("mean_")].to_numpy()
    ratio, ci = paired_bootstrap_ratio(a, c, n_boot, seed)
    out: dict[str, Any] = {
        "primary_ratio": ratio,
        "primary_ratio_ci95": ci,
        "cost_ratio": t["total_cost"] / b["total_cost"] if b["total_cost"] else None,
        "significant": bool(ci[1] < 1 or ci[0] > 1),
    }
    for key in ("mean_mse_x0", "median_mse_x0", "mean_mse_log_x0", "median_mse_log_x0"):
        out[f"{key}_ratio"] = t[key] / b[key] if b[key] else None
    for col in ("mse_x0", "mse_log_x0"):
        wins = df[df.detector == "trained"][col].to_numpy() < df[df.detector == name][col].to_numpy()
        out[f"volumes_better_{col}"] = int(wins.sum())
    out["trained_better"] = bool(t[PRIMARY] < b[PRIMARY])
    return out


@task(name="evaluate-compare", cache_policy=NO_CACHE, persist_result=False)
def compare_detectors(
    heldout_path: str,
    pred_paths: Mapping[str, str],
    costs: Mapping[str, float],
    out: Mapping[str, str],
    n_images: int,
    n_bootstrap: int = 2000,
    seed: int = 0,
    voxel_size: float | None = None,
) -> dict[str, Any]:
    """Scores per detector and volume -> ``out["curve_csv"]`` (one row per held-out volume), ``out["metrics"]``
    (means, medians, calibration, trained-vs-baseline ratios with paired-bootstrap intervals), ``n_images``
    truth-beside-prediction PNGs per detector, the predicted-vs-true-per-material and primary-metric PNGs."""
    truth = [r.x0.astype(float) for r in read_passives(heldout_path)]
    rows: list[dict[str, Any]] = []
    calib: dict[str, Any] = {}
    mat_rows: list[dict[str, Any]] = []
    for name, path in pred_paths.items():
        preds = [r.x0.astype(float) for r in read_passives(path, finite=False)]  # NaN: a volume without muons
        up = unc_path(path)
        uncs = (
            [r.x0.astype(float) for r in read_passives(up, finite=False)]
            if Path(up).is_file()
            else [np.full_like(p, np.nan) for p in preds]
        )
        calib[name] = calibration(preds, uncs, truth)
        for m, c in calib[name]["materials"].items():
            mat_rows.append(
                {
                    "detector": name,
                    "material": m,
                    "true": c["true_x0"],
                    "median": c["median_ratio"] * c["true_x0"],
                    "q16": c["q16_ratio"] * c["true_x0"],
                    "q84": c["q84_ratio"] * c["true_x0"],
                }
            )
        for i, (pr, tr) in enumerate(zip(preds, truth)):
            rows.append({"volume": i, "detector": name, **volume_scores(pr, tr)})
            if i < n_images and np.isfinite(pr).all():
                save_png(
                    plot_pred_true_x0(pr, tr, voxel_size=voxel_size), Path(out["plots_dir"]) / f"pred_vs_true_{name}_{i:02d}.png"
                )
    if mat_rows:
        save_png(plot_pred_vs_true_by_material(mat_rows), Path(out["plots_dir"]) / "x0_by_material.png")
    df = pd.DataFrame(rows)
    wide = pd.DataFrame({"volume": range(len(truth))})
    for col in ("mse_log_x0", "mse_x0"):
        for name in pred_paths:
            wide[f"{col}_{name}"] = df[df.detector == name][col].to_numpy()
    save_csv(wide, out["curve_csv"])
    save_png(plot_error_per_volume(wide, list(pred_paths)), Path(out["plots_dir"]) / "per_volume.png")
    per: dict[str, Any] = {}
    intervals: dict[str, tuple[float, float, float]] = {}
    for name, g in df.groupby("detector", sort=False):
        est, lo, hi = bootstrap_mean(g["mse_log_x0"].to_numpy(), n_bootstrap, seed)
        intervals[str(name)] = (est, lo, hi)
        per[name] = {
            "mean_mse_log_x0": float(g["mse_log_x0"].mean()),
            "mean_mse_log_x0_ci95": [lo, hi],
            "median_mse_log_x0": float(g["mse_log_x0"].median()),
            "mean_mse_x0": float(g["mse_x0"].mean()),
            "median_mse_x0": float(g["mse_x0"].median()),
            "mean_contrast": float(g["contrast"].mean()),
            "n_failed": int(g["mse_log_x0"].isna().sum()),
            "total_cost": float(costs.get(name, float("nan"))),
            "calibration": calib[str(name)],
        }
    save_png(
        plot_metric_intervals(
            intervals,
            label="mean over held-out volumes of MSE(ln X0), lower is better",
            title="Primary metric per detector, bootstrap 95 % interval",
        ),
        Path(out["plots_dir"]) / "primary_metric.png",
    )
    metrics: dict[str, Any] = {"n_volumes": len(truth), "primary_metric": PRIMARY, "n_bootstrap": n_bootstrap, "detectors": per}
    if "trained" in per:
        for name in per:
            if name != "trained":
                metrics[f"trained_vs_{name}"] = _versus(df, per, name, n_bootstrap, seed)
    write_json(metrics, out["metrics"])
    return metrics


def evaluate_markdown(m: Mapping[str, Any]) -> str:
    """Markdown table: one row per detector, then the trained-vs-baseline lines."""
    lines = [
        "# Held-out evaluation",
        "",
        f"{m['n_volumes']} held-out volumes",
        "",
        "| detector | mean MSE log X0 | median MSE log X0 | mean MSE X0 | contrast | cost |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, d in m["detectors"].items():
        lines.append(
            f"| {name} | {d['mean_mse_log_x0']:.4g} | {d['median_mse_log_x0']:.4g} | {d['mean_mse_x0']:.4g} | "
            f"{d['mean_contrast']:.3g} | {d['total_cost']:.3g} |"
        )
    for k, v in m.items():
        if k.startswith("trained_vs_"):
            lo, hi = v["primary_ratio_ci95"]
            lines.append(
                f"\n**{k}**: primary ratio {v['primary_ratio']:.3g}, 95 % interval [{lo:.3g}, {hi:.3g}], cost ratio "
                f"{v['cost_ratio'] if v['cost_ratio'] is None else round(v['cost_ratio'], 3)}"
            )
            lines.append(
                f"(ratios < 1: trained better): mean MSE log X0 {v['mean_mse_log_x0_ratio']:.3g} "
                f"(better on {v['volumes_better_mse_log_x0']}/{m['n_volumes']} volumes), mean MSE X0 "
                f"{v['mean_mse_x0_ratio']:.3g} (better on {v['volumes_better_mse_x0']}/{m['n_volumes']})"
            )
    return "\n".join(lines)
