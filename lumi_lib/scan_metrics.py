"""Metrics of a luminosity-inversion scan against its truths: relative errors, pulls (and the width of their
distribution with its statistical error), convergence, outliers, conditioning. Pure numpy / pandas."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["scan_metrics", "pulls", "pull_summary", "finite_or_none"]


def finite_or_none(x: Any) -> float | None:
    """``float(x)``, or None when it is not finite (JSON has no NaN)."""
    x = float(x)
    return x if math.isfinite(x) else None


def scan_metrics(df: pd.DataFrame, meta: Mapping[str, Any], *, outlier_sigma: float, outlier_rel_error: float) -> dict[str, Any]:
    """Accuracy, convergence, outliers and conditioning of a scan table (one row per inversion: ``est_<u>``,
    ``true_<u>``, ``sigma_<u>``, ``rel_err_<u>`` per unknown u of ``meta["names"]``, ``converged``, ``status``, ``cond``,
    ...). An outlier has |estimate - truth| > ``outlier_sigma`` sigma in any component; also reported: the fraction
    with any |relative error| > ``outlier_rel_error``. No wall-clock values (a versioned output)."""
    names: list[str] = list(meta["names"])
    n = len(df)
    k, thr = outlier_sigma, outlier_rel_error
    rel = df[[f"rel_err_{c}" for c in names]].to_numpy(float)
    pull = pulls(df, names)
    at_bound = df["at_bound"].to_numpy(bool) if "at_bound" in df else np.zeros(n, dtype=bool)
    out_sigma = (~np.isfinite(pull) | (np.abs(pull) > k)).any(axis=1)
    out_rel = (np.abs(rel) > thr).any(axis=1)
    cond = df["cond"].to_numpy(float)
    cond_warn = float(meta.get("params", {}).get("cond_warn", 1e8))
    stat = lambda a, fn: finite_or_none(fn(a)) if len(a) else None  # noqa: E731
    return {
        "scan": {
            "mode": meta["mode"],
            "unknowns": names,
            "n_inversions": n,
            "n_residuals": int(meta.get("n_configs", 0)),
            "n_chunks": int(meta.get("n_chunks", df["chunk"].nunique() if n else 0)),
            "rel_noise": meta.get("params", {}).get("rel_noise"),
        },
        "rel_error": {
            c: {
                "mean_abs": stat(np.abs(rel[:, j]), np.mean),
                "max_abs": stat(np.abs(rel[:, j]), np.max),
                "mean": stat(rel[:, j], np.mean),
                "std": stat(rel[:, j], np.std),
            }
            for j, c in enumerate(names)
        },
        "pull_std": {c: stat(pull[np.isfinite(pull[:, j]), j], np.std) for j, c in enumerate(names)},
        "pull": pull_summary(pull, at_bound),
        "convergence_rate": finite_or_none(df["converged"].mean()) if n else None,
        "at_bound_fraction": finite_or_none(at_bound.mean()) if n else None,
        "status_counts": {str(k): int(v) for k, v in sorted(df["status"].value_counts().items())} if "status" in df else {},
        "identifiability_warning": meta.get("warning"),
        "iterations": {
            "mean": stat(df["iterations"].to_numpy(float), np.mean),
            "max": int(df["iterations"].max()) if n else None,
        },
        "outliers": {
            "definition": f"|estimate - truth| > {k:g} sigma(covariance) in any component, or non-finite sigma",
            "k_sigma": k,
            "count": int(out_sigma.sum()),
            "fraction": finite_or_none(out_sigma.mean()) if n else None,
            "rel_error_threshold": thr,
            "fraction_rel_error_above": finite_or_none(out_rel.mean()) if n else None,
        },
        "condition_number": {
            "median": stat(cond, np.median),
            "max": stat(cond, np.max),
            "fraction_above_warn": finite_or_none((~(cond <= cond_warn)).mean()) if n else None,
            "warn_threshold": cond_warn,
        },
        "residual_norm": {
            "median": stat(df["residual_norm"].to_numpy(float), np.median),
            "max": stat(df["residual_norm"].to_numpy(float), np.max),
        },
    }


def pulls(df: pd.DataFrame, names: Sequence[str]) -> np.ndarray:
    """(n, K) pulls (estimate - truth) / sigma (NaN/inf where sigma is not finite and positive)."""
    err = df[[f"est_{c}" for c in names]].to_numpy(float) - df[[f"true_{c}" for c in names]].to_numpy(float)
    sig = df[[f"sigma_{c}" for c in names]].to_numpy(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        return err / sig


def pull_summary(pull: np.ndarray, at_bound: np.ndarray) -> dict[str, Any]:
    """Width of the pull distribution: pooled std (all components) and its statistical uncertainty (from the number
    of inversions), a robust width (1.4826 x median absolute deviation), the std of inversions with no unknown on a
    bound, the mean and the number of pulls."""
    finite = pull[np.isfinite(pull)]
    inner = pull[~at_bound]
    inner = inner[np.isfinite(inner)]
    n_rows = int(np.isfinite(pull).all(axis=1).sum()) if pull.ndim == 2 else int(finite.size)
    width = float(np.std(finite)) if finite.size else math.nan
    return {
        "width": finite_or_none(width) if finite.size else None,
        "std_error": finite_or_none(width / math.sqrt(2.0 * (n_rows - 1))) if n_rows > 1 else None,
        "width_robust": finite_or_none(1.4826 * np.median(np.abs(finite - np.median(finite)))) if finite.size else None,
        "width_interior": finite_or_none(np.std(inner)) if inner.size else None,
        "mean": finite_or_none(np.mean(finite)) if finite.size else None,
        "n": int(finite.size),
        "definition": "pull = (estimate - truth) / sigma(covariance), all components pooled; 1 if sigma is right",
    }
