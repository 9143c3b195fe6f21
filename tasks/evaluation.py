"""Evaluation tasks: held-out passives, per-detector X0 predictions, comparison metrics, CSV, images, markdown.

Every detector sees the same held-out volumes and the same muon random stream (common random numbers), so the
differences between detectors come from the layouts, not from sampling luck.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional

import numpy as np
import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from tomopt_lib.io import PassiveRecord, atomic_path, read_passives, write_json, write_passives
from tomopt_lib.optimisation.callbacks import Callback
from tomopt_lib.plotting import plot_pred_true_x0

from .common import derive_seed, task_logger
from .detector import (
    build_reference_volume, build_start_volume, describe_detector, load_detector, make_wrapper, passive_layouts,
    write_passive_set, yielder,
)

__all__ = ["EVALUATE_STAGE_KEY", "X0_CLIP", "eval_seed", "make_heldout", "predict_detector", "volume_scores", "compare_detectors",
           "evaluate_markdown"]

EVALUATE_STAGE_KEY = 6
PRIMARY = "mean_mse_log_x0"
"""Headline comparison: mean over held-out volumes of the per-voxel MSE of log X0 (scale-free: the X0 MSE, i.e. the
training loss, is dominated by the low-density voxels and by single wild predictions; it is reported as well)."""
X0_CLIP = (1e-4, 1e3)
"""Predicted X0 [m] is clipped to this range for the log-space metrics (uncovered voxels can be predicted at ~1e6 m)."""


def eval_seed(seed: int, eval_cfg: Mapping[str, Any]) -> int:
    return int(eval_cfg["seed"]) if eval_cfg.get("seed") is not None else derive_seed(seed, EVALUATE_STAGE_KEY)


@task(name="evaluate-heldout", cache_policy=NO_CACHE, persist_result=False)
def make_heldout(out_path: str, seed: int, volume_cfg: Mapping[str, Any], passives_cfg: Mapping[str, Any], eval_cfg: Mapping[str, Any]) -> int:
    """Generate the held-out passives (``evaluate.n_volumes``, evaluation seed) into ``out_path``."""
    return write_passive_set(out_path, volume_cfg, passives_cfg, int(eval_cfg["n_volumes"]), derive_seed(eval_seed(seed, eval_cfg), 1))


class _Preds(Callback):
    """Records ``volume_id -> X0 prediction`` (predictions may be ``(x0, uncertainty)``)."""

    def __init__(self) -> None:
        super().__init__()
        self.preds: Dict[int, np.ndarray] = {}

    def on_x0_pred_end(self) -> None:
        fp = self.wrapper.fit_params
        pred = fp.pred[0] if isinstance(fp.pred, (tuple, list)) else fp.pred
        if pred is not None:
            self.preds[int(fp.volume_id)] = pred.detach().cpu().numpy()

    def get_preds(self) -> Dict[int, np.ndarray]:
        return self.preds


@task(name="evaluate-predict", task_run_name="predict-{name}", cache_policy=NO_CACHE, persist_result=False)
def predict_detector(name: str, heldout_path: str, out_path: str, seed: int, volume_cfg: Mapping[str, Any],
                     opt_cfg: Mapping[str, Any], eval_cfg: Mapping[str, Any], detector_pt: Optional[str] = None) -> Dict[str, Any]:
    """Predict X0 of every held-out volume with detector ``name`` ("trained" from ``detector_pt``, "start",
    "reference"); writes the predictions (passives format, NaN where a volume got no muons) to ``out_path``."""
    vol = build_reference_volume(volume_cfg) if name == "reference" else build_start_volume(volume_cfg, opt_cfg["start"])
    if name == "trained":
        load_detector(vol, str(detector_pt))
    vw = make_wrapper(vol, opt_cfg, seed=derive_seed(eval_seed(seed, eval_cfg), 2), inferrer=eval_cfg.get("inferrer"))
    layouts, cubes = passive_layouts(heldout_path, vol)
    got = vw.predict(yielder(layouts, False), int(eval_cfg["n_mu_per_volume"]), int(eval_cfg["mu_bs"]), pred_cb=_Preds())
    recs = [PassiveRecord(x0=got[i].reshape(c.shape) if i in got else np.full(c.shape, np.nan), attrs={"index": i})
            for i, c in enumerate(cubes)]
    write_passives(out_path, recs, attrs={"generator": "prediction", "detector": name})
    task_logger().info("detector %s: predicted %d/%d held-out volumes", name, len(got), len(cubes))
    return {"name": name, "n_predicted": len(got), "total_cost": describe_detector(vol)["total_cost"]}


def volume_scores(pred: np.ndarray, true: np.ndarray) -> Dict[str, float]:
    """Per-volume scores: MSE of X0 (the training loss), MSE of log X0 (clipped prediction), and the block contrast
    recovery (mean log pred of the minority material minus the majority's, over the same for the truth; 1 = ideal)."""
    if not np.isfinite(pred).all():
        return {"mse_x0": float("nan"), "mse_log_x0": float("nan"), "contrast": float("nan")}
    lp, lt = np.log(np.clip(pred, *X0_CLIP)), np.log(true)
    vals, counts = np.unique(true, return_counts=True)
    contrast = float("nan")
    if len(vals) >= 2:
        block, bkg = true == vals[np.argmin(counts)], true == vals[np.argmax(counts)]
        denom = lt[block].mean() - lt[bkg].mean()
        contrast = float((lp[block].mean() - lp[bkg].mean()) / denom) if denom != 0 else float("nan")
    return {"mse_x0": float(np.mean((pred - true) ** 2)), "mse_log_x0": float(np.mean((lp - lt) ** 2)), "contrast": contrast}


def _versus(df: pd.DataFrame, per: Mapping[str, Mapping[str, float]], name: str) -> Dict[str, Any]:
    """Trained / baseline ratios of the mean and median errors (< 1: trained better) and per-volume win counts."""
    t, b = per["trained"], per[name]
    out: Dict[str, Any] = {}
    for key in ("mean_mse_x0", "median_mse_x0", "mean_mse_log_x0", "median_mse_log_x0"):
        out[f"{key}_ratio"] = t[key] / b[key] if b[key] else None
    for col in ("mse_x0", "mse_log_x0"):
        wins = df[df.detector == "trained"][col].to_numpy() < df[df.detector == name][col].to_numpy()
        out[f"volumes_better_{col}"] = int(wins.sum())
    out["trained_better"] = bool(t[PRIMARY] < b[PRIMARY])
    return out


@task(name="evaluate-compare", cache_policy=NO_CACHE, persist_result=False)
def compare_detectors(heldout_path: str, pred_paths: Mapping[str, str], costs: Mapping[str, float], out: Mapping[str, str],
                      n_images: int) -> Dict[str, Any]:
    """Scores per detector and volume -> ``out["curve_csv"]`` (one row per held-out volume), ``out["metrics"]``
    (means, medians, trained-vs-baseline ratios), and ``n_images`` prediction-vs-truth PNGs per detector."""
    truth = [r.x0.astype(float) for r in read_passives(heldout_path)]
    rows: List[Dict[str, Any]] = []
    for name, path in pred_paths.items():
        preds = [r.x0.astype(float) for r in read_passives(path)]
        for i, (pr, tr) in enumerate(zip(preds, truth)):
            rows.append({"volume": i, "detector": name, **volume_scores(pr, tr)})
            if i < n_images and np.isfinite(pr).all():
                fig = plot_pred_true_x0(pr, tr)
                png = Path(out["plots_dir"]) / f"pred_vs_true_{name}_{i:02d}.png"
                png.parent.mkdir(parents=True, exist_ok=True)
                with atomic_path(png) as tmp:
                    fig.savefig(tmp, format="png", dpi=60)
    df = pd.DataFrame(rows)
    wide = pd.DataFrame({"volume": range(len(truth))})
    for col in ("mse_log_x0", "mse_x0"):
        for name in pred_paths:
            wide[f"{col}_{name}"] = df[df.detector == name][col].to_numpy()
    with atomic_path(out["curve_csv"]) as tmp:
        wide.to_csv(tmp, index=False)
    per: Dict[str, Any] = {}
    for name, g in df.groupby("detector", sort=False):
        per[name] = {"mean_mse_log_x0": float(g["mse_log_x0"].mean()), "median_mse_log_x0": float(g["mse_log_x0"].median()),
                     "mean_mse_x0": float(g["mse_x0"].mean()), "median_mse_x0": float(g["mse_x0"].median()),
                     "mean_contrast": float(g["contrast"].mean()), "n_failed": int(g["mse_log_x0"].isna().sum()),
                     "total_cost": float(costs.get(name, float("nan")))}
    metrics: Dict[str, Any] = {"n_volumes": len(truth), "primary_metric": PRIMARY, "detectors": per}
    if "trained" in per:
        for name in per:
            if name != "trained":
                metrics[f"trained_vs_{name}"] = _versus(df, per, name)
    write_json(metrics, out["metrics"])
    return metrics


def evaluate_markdown(m: Mapping[str, Any]) -> str:
    """Markdown table: one row per detector, then the trained-vs-baseline lines."""
    lines = ["# Held-out evaluation", "", f"{m['n_volumes']} held-out volumes", "",
             "| detector | mean MSE log X0 | median MSE log X0 | mean MSE X0 | contrast | cost |", "| --- | --- | --- | --- | --- | --- |"]
    for name, d in m["detectors"].items():
        lines.append(f"| {name} | {d['mean_mse_log_x0']:.4g} | {d['median_mse_log_x0']:.4g} | {d['mean_mse_x0']:.4g} | "
                     f"{d['mean_contrast']:.3g} | {d['total_cost']:.3g} |")
    for k, v in m.items():
        if k.startswith("trained_vs_"):
            lines.append(f"\n**{k}** (ratios < 1: trained better): mean MSE log X0 {v['mean_mse_log_x0_ratio']:.3g} "
                         f"(better on {v['volumes_better_mse_log_x0']}/{m['n_volumes']} volumes), mean MSE X0 "
                         f"{v['mean_mse_x0_ratio']:.3g} (better on {v['volumes_better_mse_x0']}/{m['n_volumes']})")
    return "\n".join(lines)
