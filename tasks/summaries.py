"""Short DVC metrics per stage and the rows of the stages' table artifacts.

``dvc metrics show`` and ``dvc exp show`` print one column per metric key of every metrics file: the full JSONs
(``metrics/report.json``, ``metrics/evaluate.json``, ... with keys such as
``detectors.trained.calibration.materials.aluminium.q16_ratio``) make hundreds of columns. DVC therefore tracks, as
``metrics:``, one small flat file per stage (``metrics/summary/<stage>.json``: at most :data:`MAX_KEYS` keys of at most
:data:`MAX_KEY_LEN` characters, every value a number, bool or short string), written from the full metrics by the
functions here; the full JSONs stay plain DVC outputs. Nothing here holds a wall-clock value.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from tomopt_lib.io import write_json

__all__ = [
    "MAX_KEYS",
    "MAX_KEY_LEN",
    "SUMMARY_STAGES",
    "report_summary",
    "optimise_summary",
    "evaluate_summary",
    "lumi_summary",
    "study_summary",
    "stage_summary",
    "write_summary",
    "evaluate_table",
    "optimise_table",
    "lumi_table",
]

MAX_KEYS = 6
"""Most keys of one stage's summary metrics file."""
MAX_KEY_LEN = 16
"""Longest key of a summary metrics file (``dvc metrics show`` columns stay narrow)."""


def _get(tree: Mapping[str, Any], dotted: str) -> Any:
    node: Any = tree
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def report_summary(m: Mapping[str, Any]) -> dict[str, Any]:
    """``report``: muons generated, reconstructed fraction, median scatter angle, angular and PoCA-z resolution."""
    return {
        "muons": _get(m, "muons.generated"),
        "reco_frac": _get(m, "fractions.reconstructed"),
        "scatter_mrad": _get(m, "scatter_mrad.median"),
        "theta_err_mrad": _get(m, "resolution.theta_in_median_abs_err_mrad"),
        "poca_z_unc_m": _get(m, "resolution.poca_z_median_unc_m"),
    }


def optimise_summary(m: Mapping[str, Any]) -> dict[str, Any]:
    """``optimise``: last train / validation loss, best validation loss, the trained detector's cost."""
    return {
        "train_loss": _get(m, "loss.train_last"),
        "valid_loss": _get(m, "loss.valid_last"),
        "valid_best": _get(m, "loss.valid_best"),
        "cost": _get(m, "detector.total_cost"),
    }


def evaluate_summary(m: Mapping[str, Any]) -> dict[str, Any]:
    """``evaluate``: the trained detector's primary metric and cost and, per baseline ``b``, ``<b>_ratio`` (trained /
    baseline, < 1: trained better) and ``<b>_hi95`` (upper end of its paired-bootstrap 95 % interval: < 1 means
    significantly better). Baselines are shortened: start, ref (reference)."""
    primary = str(m.get("primary_metric") or "mean_mse_log_x0")
    out: dict[str, Any] = {"trained": _get(m, f"detectors.trained.{primary}"), "cost": _get(m, "detectors.trained.total_cost")}
    for key, v in m.items():
        if not key.startswith("trained_vs_") or not isinstance(v, Mapping):
            continue
        b = {"reference": "ref"}.get(key[len("trained_vs_") :], key[len("trained_vs_") :])[:9]
        ci = v.get("primary_ratio_ci95") or [None, None]
        out[f"{b}_ratio"] = v.get("primary_ratio")
        out[f"{b}_hi95"] = ci[1] if len(ci) > 1 else None
    return out


_STUDY_SUMMARY: dict[str, tuple[str, str, tuple[str, ...], int, tuple[str, str, int | None]]] = {
    # study: (metric in detectors.<name>, key prefix, detectors, digits, (key, dotted path, index of a [lo, hi] pair))
    "ladle_furnace": (
        "mse",
        "mse",
        ("trained", "initial", "baseline_1", "baseline_2"),
        6,
        ("ratio_vs_bl1", "trained_vs_baseline_1.mse_ratio", None),
    ),
    "u_lorry": (
        "auc",
        "auc",
        ("trained", "start", "reference"),
        4,
        ("auc_diff_lo95", "trained_vs_reference.auc_difference_ci95", 0),
    ),
    "small_walls": (
        "mean_iou",
        "iou",
        ("trained", "start", "hand"),
        4,
        ("iou_diff_lo95", "trained_vs_hand.iou_difference_ci95", 0),
    ),
}


def study_summary(m: Mapping[str, Any]) -> dict[str, Any]:
    """``study``: the study's name and its headline per detector: the de-biased fill-height MSE [m^2] (ladle furnace),
    the ROC AUC (U-lorry) or the mean wall-mask IoU (small walls), plus the trained / baseline-1 MSE ratio (< 1:
    trained better) or the lower end of the 95 % interval of the trained - hand-design difference (> 0: trained
    significantly better)."""
    name = str(m.get("study", "default"))
    if name not in _STUDY_SUMMARY:
        return {"study": name}
    metric, prefix, detectors, digits, (key, path, index) = _STUDY_SUMMARY[name]
    out: dict[str, Any] = {"study": name}
    for det in detectors:
        v = _get(m, f"detectors.{det}.{metric}")
        out[f"{prefix}_{det}"] = None if v is None else round(float(v), digits)
    v = _get(m, path)
    if v is not None and index is not None:
        v = v[index]
    out[key] = None if v is None else round(float(v), 4)
    return out


def lumi_summary(m: Mapping[str, Any]) -> dict[str, Any]:
    """``lumi_report``: convergence rate, mean and max |relative error| over the components, pooled pull width,
    outlier fraction."""
    rel = [r for r in (m.get("rel_error") or {}).values() if isinstance(r, Mapping)]
    means = [r["mean_abs"] for r in rel if r.get("mean_abs") is not None]
    maxes = [r["max_abs"] for r in rel if r.get("max_abs") is not None]
    return {
        "converged": m.get("convergence_rate"),
        "rel_err_mean": sum(means) / len(means) if means else None,
        "rel_err_max": max(maxes) if maxes else None,
        "pull_width": _get(m, "pull.width"),
        "outliers": _get(m, "outliers.fraction"),
    }


SUMMARY_STAGES: dict[str, Callable[[Mapping[str, Any]], dict[str, Any]]] = {
    "report": report_summary,
    "optimise": optimise_summary,
    "evaluate": evaluate_summary,
    "lumi_report": lumi_summary,
    "study": study_summary,
}
"""Stage -> the function that shortens its full metrics into its DVC summary."""


def stage_summary(stage: str, metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The short, flat DVC metrics of ``stage`` from its full ``metrics``."""
    return SUMMARY_STAGES[stage](metrics)


def write_summary(stage: str, metrics: Mapping[str, Any], path: str | Path) -> dict[str, Any]:
    """Write :func:`stage_summary` to ``path`` (atomic JSON); return it."""
    summary = stage_summary(stage, metrics)
    write_json(summary, path)
    return summary


# ------------------------------------------------------------------------------------------------ table artifacts
def evaluate_table(m: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per detector: MSE of log X0 and of X0 (mean, median), contrast, cost, failed volumes."""
    cols = ("mean_mse_log_x0", "median_mse_log_x0", "mean_mse_x0", "median_mse_x0", "mean_contrast", "total_cost", "n_failed")
    return [{"detector": name, **{c: d.get(c) for c in cols}} for name, d in (m.get("detectors") or {}).items()]


def optimise_table(history: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per epoch: train and validation loss, updates applied / rejected, seconds (a Prefect artifact, not
    versioned)."""
    keys = ("epoch", "train_loss", "valid_loss", "n_updates", "n_rejected", "seconds")
    return [{k: r.get(k) for k in keys} for r in history]


def lumi_table(m: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per unknown: mean / max |relative error|, bias, std, pull std."""
    pulls = m.get("pull_std") or {}
    return [
        {
            "component": c,
            "mean_abs_rel_err": r.get("mean_abs"),
            "max_abs_rel_err": r.get("max_abs"),
            "bias": r.get("mean"),
            "std": r.get("std"),
            "pull_std": pulls.get(c),
        }
        for c, r in (m.get("rel_error") or {}).items()
    ]
