"""Plots of a detector study: layouts overlaid, predicted vs true X0 per material, a metric with intervals, the
error per held-out volume, the training loss and the panel parameters per epoch.

All functions return a matplotlib ``Figure`` (no pyplot state) and optionally save it (``savename``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from .appearance import LBL_SZ, LEG_SZ, PathLike, _colour, _finish, _style
from .detectors import panel_geometry

if TYPE_CHECKING:
    from ..volume.volume import Volume

__all__ = [
    "plot_layouts_overlay",
    "plot_pred_vs_true_by_material",
    "plot_metric_intervals",
    "plot_error_per_volume",
    "plot_loss_history",
    "plot_panels_per_epoch",
    "plot_roc_curves",
]


def plot_layouts_overlay(volumes: Mapping[str, Volume], *, savename: PathLike | None = None) -> Figure:
    """Side (x-z) and top (x-y) views of several detectors over one passive block: one colour per detector, panels
    drawn with their effective (budget-scaled) spans."""
    first = next(iter(volumes.values()))
    lw = first.lw.detach().cpu().numpy()
    h = float(first.h.reshape(-1)[0])
    fig = Figure(figsize=(16, 7.5), layout="constrained")
    side, top = fig.subplots(1, 2)
    for p in first.get_passives():
        side.add_patch(Rectangle((0, p.z_bottom), float(lw[0]), p.size, fc="0.88", ec="0.5", lw=0.8))
    top.add_patch(Rectangle((0, 0), float(lw[0]), float(lw[1]), fc="0.9", ec="0.4", lw=1, label="passive block"))
    for i, (name, vol) in enumerate(volumes.items()):
        col, ls = _colour(i), ("-", "--", ":", "-.")[i % 4]
        for j, _, k, (cx, cy, z, sx, sy) in panel_geometry(vol):
            lab = name if j == 0 and k == 0 else None
            side.plot([cx - sx / 2, cx + sx / 2], [z, z], color=col, lw=2.5, ls=ls, label=lab)
            top.add_patch(Rectangle((cx - sx / 2, cy - sy / 2), sx, sy, fill=False, ec=col, lw=1.5, ls=ls, label=lab))
    side.set_xlim(-0.6 * lw[0], 1.6 * lw[0])
    side.set_ylim(-0.05 * h, 1.05 * h)
    top.set_xlim(-0.6 * lw[0], 1.6 * lw[0])
    top.set_ylim(-0.6 * lw[1], 1.6 * lw[1])
    top.set_aspect("equal")
    _style(side, "x [m]", "z [m]", "Side view (panel widths along x)")
    _style(top, "x [m]", "y [m]", "Top view (panel outlines)")
    side.legend(fontsize=LEG_SZ, loc="upper right")
    return _finish(fig, savename)


def plot_pred_vs_true_by_material(rows: Sequence[Mapping[str, Any]], *, savename: PathLike | None = None) -> Figure:
    """Predicted vs true X0 [m] per material and detector: markers at the median prediction of the material's voxels,
    error bars from the 16th to the 84th percentile; the diagonal is perfect calibration.

    ``rows``: dicts with ``detector``, ``material``, ``true`` [m], ``median``, ``q16``, ``q84`` [m].
    """
    fig = Figure(figsize=(9, 8), layout="constrained")
    ax = fig.subplots()
    dets = list(dict.fromkeys(r["detector"] for r in rows))
    trues = np.array([r["true"] for r in rows], dtype=float)
    for i, det in enumerate(dets):
        sel = [r for r in rows if r["detector"] == det]
        t = np.array([r["true"] for r in sel]) * (1 + 0.04 * (i - (len(dets) - 1) / 2))  # small offsets to separate
        med = np.array([r["median"] for r in sel])
        err = np.array([[r["median"] - r["q16"] for r in sel], [r["q84"] - r["median"] for r in sel]])
        ax.errorbar(t, med, yerr=np.clip(err, 0, None), fmt="o", color=_colour(i), capsize=4, label=det)
    lo, hi = trues.min() / 3, trues.max() * 3
    ax.plot([lo, hi], [lo, hi], "k--", lw=1, label="prediction = truth")
    for r in {r["material"]: r["true"] for r in rows}.items():
        ax.annotate(r[0], (r[1], lo * 1.2), rotation=90, fontsize=LEG_SZ - 4, ha="center", va="bottom")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    _style(ax, "true X0 [m]", "predicted X0 [m] (median, 16-84 %)", "Held-out voxels: predicted vs true X0 per material")
    ax.legend(fontsize=LEG_SZ)
    return _finish(fig, savename)


def plot_metric_intervals(
    values: Mapping[str, tuple[float, float, float]], *, label: str, title: str, savename: PathLike | None = None
) -> Figure:
    """One horizontal bar per detector: ``values[name] = (estimate, low, high)`` (e.g. a mean with its bootstrap 95 %
    interval)."""
    names = list(values)
    fig = Figure(figsize=(13, 1.6 + 0.8 * len(names)), layout="constrained")
    ax = fig.subplots()
    for i, name in enumerate(names):
        est, lo, hi = values[name]
        ax.errorbar([est], [i], xerr=[[est - lo], [hi - est]], fmt="o", color=_colour(i), capsize=6, ms=9)
        ax.annotate(f"{est:.3g} [{lo:.3g}, {hi:.3g}]", (est, i + 0.18), fontsize=LBL_SZ - 8, ha="center")
    ax.set_yticks(range(len(names)), names)
    ax.set_ylim(-0.6, len(names) - 0.4)
    _style(ax, label, "", title)
    return _finish(fig, savename)


def plot_error_per_volume(wide: pd.DataFrame, names: Sequence[str]) -> Figure:
    """MSE of log X0 and of X0 per held-out volume, one line per detector: ``wide`` has a ``volume`` column and
    ``mse_log_x0_<name>`` / ``mse_x0_<name>`` per detector name (the ``evaluate_per_volume.csv`` columns)."""
    fig = Figure(figsize=(10, 3.8), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, (col, label) in zip(axes, (("mse_log_x0", "MSE of ln X0 per voxel"), ("mse_x0", "MSE of X0 per voxel [m$^2$]"))):
        for name in names:
            ax.plot(wide["volume"], wide[f"{col}_{name}"], "o-" if name == "trained" else "s--", ms=3, label=name)
        ax.set_xlabel("held-out volume")
        ax.set_ylabel(label)
        vals = wide[[f"{col}_{name}" for name in names]].to_numpy(float)
        if (vals[np.isfinite(vals)] > 0).any():  # a log axis needs a positive value (failed detectors: NaN)
            ax.set_yscale("log")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.legend(fontsize=8)
    fig.suptitle("Held-out error per volume, trained vs baselines (lower is better)")
    return fig


def plot_loss_history(hist: pd.DataFrame) -> Figure:
    """Training (and validation) loss per epoch: ``hist`` has ``epoch``, ``train_loss``, ``valid_loss`` columns (log
    axis when every loss is positive)."""
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.subplots()
    ax.plot(hist["epoch"], hist["train_loss"], "o-", label="train")
    if hist["valid_loss"].notna().any():
        ax.plot(hist["epoch"], hist["valid_loss"], "s--", label="validation")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    if (hist[["train_loss", "valid_loss"]].dropna(how="all").fillna(1) > 0).all().all():
        ax.set_yscale("log")
    ax.set_title("Detector optimisation: loss per epoch")
    ax.legend()
    return fig


def plot_panels_per_epoch(panels: pd.DataFrame) -> Figure:
    """Every panel's centre x, y, height z and spans per epoch (the ``train_panels.csv`` columns), one line per panel."""
    cols = [("x", "centre x [m]"), ("y", "centre y [m]"), ("z", "z [m]"), ("span_x", "span x [m]"), ("span_y", "span y [m]")]
    cols = [(c, label) for c, label in cols if c in panels]
    fig = Figure(figsize=(3.2 * max(len(cols), 1), 3.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, max(len(cols), 1)))
    for ax, (c, label) in zip(axes, cols):
        for name, g in panels.groupby("panel", sort=False):
            ax.plot(g["epoch"], g[c], "-", lw=1.2, label=str(name))
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.xaxis.get_major_locator().set_params(integer=True)
    if cols:
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside right upper", fontsize=7)
    fig.suptitle("Panel positions and spans per epoch")
    return fig


def plot_roc_curves(
    curves: Mapping[str, tuple[np.ndarray, np.ndarray]], *, title: str = "ROC", savename: PathLike | None = None
) -> Figure:
    """ROC curve (true- vs false-positive rate) per detector: ``curves[name] = (scores, labels)``, labels 1 =
    positive; the legend gives each AUC."""
    from ..metrics import roc_auc

    fig = Figure(figsize=(7, 6.5), layout="constrained")
    ax = fig.subplots()
    for i, (name, (scores, labels)) in enumerate(curves.items()):
        s, y = np.asarray(scores, dtype=float), np.asarray(labels) > 0.5
        cuts = np.r_[np.inf, np.unique(s)[::-1]]
        tpr = np.array([(s[y] >= c).mean() if y.any() else np.nan for c in cuts])
        fpr = np.array([(s[~y] >= c).mean() if (~y).any() else np.nan for c in cuts])
        ax.step(fpr, tpr, where="post", color=_colour(i), lw=2, label=f"{name}: AUC {roc_auc(s, y):.3f}")
    ax.plot([0, 1], [0, 1], color="0.6", ls="--", lw=1)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    _style(ax, "false-positive rate", "true-positive rate", title)
    ax.legend(fontsize=LEG_SZ * 0.75, loc="lower right")
    return _finish(fig, savename)
