"""Statistics of a detector study against truth: scatter-table metrics (counts, scatter angles per PoCA material), per-volume scores, per-material calibration (median predicted /
true X0, pull width of ln X0) and bootstrap intervals of means and of paired ratios over held-out volumes.

Pure numpy; lengths in metres. The evaluation stage calls these on its held-out predictions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from .core import X0

__all__ = [
    "X0_CLIP",
    "MRAD",
    "paired_bootstrap_ratio",
    "bootstrap_mean",
    "roc_auc",
    "material_of",
    "calibration",
    "volume_scores",
    "poca_materials",
    "scatter_metrics",
]

X0_CLIP = (1e-4, 1e3)
"""Predicted X0 [m] is clipped to this range for the log-space metrics (uncovered voxels can be predicted at ~1e6 m)."""
MRAD = 1e3
"""Radians to milliradians."""


def paired_bootstrap_ratio(a: np.ndarray, b: np.ndarray, n_boot: int, seed: int) -> tuple[float, list[float]]:
    """``(mean(a) / mean(b), [2.5 %, 97.5 %] percentile interval)`` over ``n_boot`` resamples of the paired
    volumes (the same resampled volumes in a and b; NaN pairs dropped)."""
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    if len(a) < 2 or b.mean() <= 0:
        return float("nan"), [float("nan"), float("nan")]
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(a), size=(n_boot, len(a)))
    ratios = a[idx].mean(1) / np.maximum(b[idx].mean(1), 1e-300)
    return float(a.mean() / b.mean()), [float(np.quantile(ratios, 0.025)), float(np.quantile(ratios, 0.975))]


def roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` for binary ``labels`` (1 = positive): the Mann-Whitney probability that a
    positive outscores a negative, ties counting one half, AUC = (R_pos - n_pos (n_pos + 1) / 2) / (n_pos n_neg) with
    R_pos the sum of the positives' mid-ranks. NaN without both classes."""
    from scipy.stats import rankdata

    s, y = np.asarray(scores, dtype=float).reshape(-1), np.asarray(labels).reshape(-1) > 0.5
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(s)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def bootstrap_mean(a: np.ndarray, n_boot: int, seed: int) -> tuple[float, float, float]:
    """``(mean, 2.5 %, 97.5 %)`` of the mean of ``a`` over volumes (percentile bootstrap, NaN dropped)."""
    a = a[np.isfinite(a)]
    if not len(a):
        return float("nan"), float("nan"), float("nan")
    means = a[np.random.default_rng(seed).integers(0, len(a), size=(n_boot, len(a)))].mean(1)
    return float(a.mean()), float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


def material_of(x0: np.ndarray) -> np.ndarray:
    """Material name of each true X0 value [m] (the core table's entry within 0.1 %, else ``"other"``)."""
    names = np.array(list(X0))
    vals = np.array(list(X0.values()))
    rel = np.abs(x0.reshape(-1, 1) / vals[None, :] - 1)
    out = np.where(rel.min(1) < 1e-3, names[rel.argmin(1)], "other")
    return out.reshape(x0.shape)


def calibration(preds: list[np.ndarray], uncs: list[np.ndarray], truth: list[np.ndarray]) -> dict[str, Any]:
    """Per material: median predicted / true X0 over the held-out voxels (and 16 / 84 % quantiles); pull width: the
    standard deviation of (ln pred - ln true) / (unc / pred) over voxels with a data-driven uncertainty
    (unc < pred)."""
    p = np.concatenate([x.reshape(-1) for x in preds])
    u = np.concatenate([x.reshape(-1) for x in uncs])
    t = np.concatenate([x.reshape(-1) for x in truth])
    ok = np.isfinite(p) & (p > 0)
    mats = material_of(t)
    per: dict[str, Any] = {}
    for m in sorted(set(mats[ok].tolist())):
        sel = ok & (mats == m)
        r = p[sel] / t[sel]
        per[m] = {
            "n_voxels": int(sel.sum()),
            "median_ratio": float(np.median(r)),
            "q16_ratio": float(np.quantile(r, 0.16)),
            "q84_ratio": float(np.quantile(r, 0.84)),
            "true_x0": float(np.median(t[sel])),
        }
    data = ok & np.isfinite(u) & (u > 0) & (u < p)
    pulls = (np.log(p[data]) - np.log(t[data])) / (u[data] / p[data])
    return {
        "materials": per,
        "pull_width": float(np.std(pulls)) if len(pulls) > 1 else float("nan"),
        "pull_voxels": int(data.sum()),
    }


def volume_scores(pred: np.ndarray, true: np.ndarray) -> dict[str, float]:
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


def _stat(a: Any, fn: Callable[[np.ndarray], Any]) -> float | None:
    a = np.asarray(a, dtype=float)
    a = a[np.isfinite(a)]
    return float(fn(a)) if len(a) else None


def poca_materials(df: pd.DataFrame, cubes: list[np.ndarray], *, voxel_size: float, z_bottom: float) -> np.ndarray:
    """Name of the material (nearest known X0, in ln X0) of the voxel holding each PoCA of the scatter table ``df``
    (``volume_id``, ``poca_inside``, ``poca_x/y/z`` [m]); ``""`` for PoCAs outside the block. ``cubes[v]`` is volume v's
    (z, x, y) X0 cube [m], its lowest layer starting at ``z_bottom`` [m]."""
    out = np.full(len(df), "", dtype=object)
    if len(df) == 0:
        return out
    size = voxel_size
    names = np.array(list(X0))
    log_x0 = np.log(np.array([X0[n] for n in names]))
    inside = df["poca_inside"].to_numpy(bool)
    vid = df["volume_id"].to_numpy(int)
    p = df[["poca_x", "poca_y", "poca_z"]].to_numpy(float)
    for v in np.unique(vid[inside]):
        sel = inside & (vid == v)
        cube = cubes[v]
        iz = np.clip(np.floor((p[sel, 2] - z_bottom) / size).astype(int), 0, cube.shape[0] - 1)
        ix = np.clip(np.floor(p[sel, 0] / size).astype(int), 0, cube.shape[1] - 1)
        iy = np.clip(np.floor(p[sel, 1] / size).astype(int), 0, cube.shape[2] - 1)
        x0 = cube[iz, ix, iy].astype(float)
        out[sel] = names[np.abs(np.log(x0)[:, None] - log_x0[None, :]).argmin(1)]
    return out


def scatter_metrics(df: pd.DataFrame, materials: np.ndarray, n_generated: int, n_volumes: int) -> dict[str, Any]:
    """Counts, fractions, scatter-angle statistics [mrad] overall and per PoCA material (``materials``, from
    :func:`poca_materials`), angular and PoCA resolution, of the scatter table ``df`` of ``n_volumes`` volumes."""
    reco = df[df["reco_ok"]] if len(df) else df
    inside = df["poca_inside"].to_numpy(bool) if len(df) else np.zeros(0, bool)
    n_reco, n_inside = int(len(reco)), int(inside.sum())
    metrics: dict[str, Any] = {
        "n_volumes": int(n_volumes),
        "muons": {"generated": int(n_generated), "left_volume": int(len(df)), "reconstructed": n_reco, "poca_inside": n_inside},
        "fractions": {
            "left_volume": len(df) / n_generated if n_generated else None,
            "reconstructed": n_reco / n_generated if n_generated else None,
            "poca_inside_of_reconstructed": n_inside / n_reco if n_reco else None,
        },
        "scatter_mrad": {
            "mean": _stat(reco["total_scatter"] * MRAD, np.mean),
            "median": _stat(reco["total_scatter"] * MRAD, np.median),
            "true_mean": _stat(reco["true_total_scatter"] * MRAD, np.mean),
            "true_median": _stat(reco["true_total_scatter"] * MRAD, np.median),
            "mean_unc": _stat(reco["total_scatter_unc"] * MRAD, np.mean),
        },
        "resolution": {
            "theta_in_median_abs_err_mrad": _stat((reco["theta_in"] - reco["true_theta_in"]).abs() * MRAD, np.median),
            "poca_z_median_unc_m": _stat(reco["poca_z_unc"], np.median),
        },
        "mean_momentum_gev": _stat(reco["mom"], np.mean),
        "per_material": {},
    }
    for name in sorted(set(materials[inside])):
        sel = df[inside & (materials == name)]
        metrics["per_material"][name] = {
            "n_poca": int(len(sel)),
            "mean_scatter_mrad": _stat(sel["total_scatter"] * MRAD, np.mean),
            "median_scatter_mrad": _stat(sel["total_scatter"] * MRAD, np.median),
            "median_true_scatter_mrad": _stat(sel["true_total_scatter"] * MRAD, np.median),
        }
    return metrics
