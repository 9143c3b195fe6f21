"""Axes-level drawing helpers of the training monitors (no pyplot; every function draws on given axes)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.patches import Rectangle

from ...plotting import CAT_PALETTE, LBL_SZ, LEG_SZ, TK_SZ
from ...volume.panel import SigmoidDetectorPanel

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from ...volume.layer import PanelDetectorLayer

__all__ = ["draw_loss_axes", "draw_sub_loss_axes", "draw_metric_axes", "draw_panel_axes"]

_SMALL = max(TK_SZ - 4, 8)


def _colour(i: int) -> tuple[float, float, float, float]:
    from matplotlib import colormaps

    return colormaps[CAT_PALETTE](i % 10)


def _style(ax: Axes, xlabel: str, ylabel: str, title: str = "") -> None:
    ax.tick_params(labelsize=_SMALL)
    ax.set_xlabel(xlabel, fontsize=LBL_SZ - 6)
    ax.set_ylabel(ylabel, fontsize=LBL_SZ - 6)
    if title:
        ax.set_title(title, fontsize=LBL_SZ - 6)


def _legend(ax: Axes) -> None:
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=LEG_SZ - 4)


def draw_loss_axes(ax: Axes, loss_vals: dict[str, list[float]], val_updates: Sequence[int]) -> None:
    """Training loss per update and validation loss per epoch (at the update count it was measured after)."""
    trn = np.asarray(loss_vals.get("Training", []), dtype=float)
    val = np.asarray(loss_vals.get("Validation", []), dtype=float)
    if len(trn):
        ax.plot(np.arange(1, len(trn) + 1), trn, color=_colour(0), label="Training")
    if len(val):
        ax.plot(np.asarray(val_updates[: len(val)]), val, "o-", color=_colour(1), label="Validation")
    finite = np.concatenate([trn, val])
    finite = finite[np.isfinite(finite)]
    if len(finite) and (finite > 0).all() and finite.max() / finite.min() > 20:
        ax.set_yscale("log")
    _style(ax, "Update", "Loss", "Loss")
    _legend(ax)


def draw_sub_loss_axes(ax: Axes, sub_loss_vals: dict[str, list[float]]) -> None:
    """Fraction of the validation loss in each sub-loss per epoch."""
    for i, (name, vals) in enumerate(sub_loss_vals.items()):
        v = np.asarray(vals, dtype=float)
        ax.plot(np.arange(1, len(v) + 1), v, "o-", color=_colour(i), label=name)
    ax.set_ylim(-0.05, 1.05)
    _style(ax, "Epoch", "Fraction of loss", "Sub-losses (validation)")
    _legend(ax)


def draw_metric_axes(ax: Axes, name: str, vals: Sequence[float]) -> None:
    """Metric value per epoch."""
    v = np.asarray(vals, dtype=float)
    if len(v):
        ax.plot(np.arange(1, len(v) + 1), v, "o-", color=_colour(2))
    _style(ax, "Epoch", name, name)


def draw_panel_axes(axes: Sequence[Axes], det: PanelDetectorLayer) -> None:
    """One row for a panel detector layer: top view (centres and spans), z per panel, spans per panel and, with a
    fourth axes, the smoothness of sigmoid panels."""
    panels = list(det.panels)
    xy = np.array([p.xy.detach().cpu().numpy() for p in panels], dtype=float).reshape(-1, 2)
    z = np.array([float(p.z.detach()) for p in panels], dtype=float)
    span = np.array([p.get_scaled_xy_span().detach().cpu().numpy() for p in panels], dtype=float).reshape(-1, 2)
    lw = np.asarray(det.lw.detach().cpu().numpy(), dtype=float).reshape(2)
    ax = axes[0]
    ax.add_patch(Rectangle((0, 0), lw[0], lw[1], fill=False, edgecolor="black", linestyle="--", label="passive"))
    for i in range(len(panels)):
        c = _colour(i)
        if np.isfinite(xy[i]).all() and np.isfinite(span[i]).all():
            ax.add_patch(Rectangle(tuple(xy[i] - span[i] / 2), span[i, 0], span[i, 1], fill=False, edgecolor=c, alpha=0.8))
        ax.plot(xy[i, 0], xy[i, 1], "o", color=c, label=f"panel {i}")
    lo, hi = -0.1 * lw, 1.1 * lw
    ok = np.isfinite(xy).all(1) & np.isfinite(span).all(1)
    if ok.any():
        lo = np.minimum(lo, (xy[ok] - span[ok] / 2).min(0) - 0.05 * lw)
        hi = np.maximum(hi, (xy[ok] + span[ok] / 2).max(0) + 0.05 * lw)
    ax.set_xlim(lo[0], hi[0])
    ax.set_ylim(lo[1], hi[1])
    ax.set_aspect("equal", adjustable="box")
    _style(ax, "x [m]", "y [m]", f"{det.pos}: xy and span")
    idx = np.arange(len(panels))
    axes[1].scatter(idx, z, c=[_colour(i) for i in range(len(panels))], s=60)
    axes[1].set_ylim(float(det.z) - float(det.size), float(det.z))
    axes[1].set_xlim(-0.5, max(len(panels) - 0.5, 0.5))
    _style(axes[1], "Panel", "z [m]", f"{det.pos}: z")
    w = 0.4
    axes[2].bar(idx - w / 2, span[:, 0], w, color=_colour(0), label="x span")
    axes[2].bar(idx + w / 2, span[:, 1], w, color=_colour(1), label="y span")
    _style(axes[2], "Panel", "Span [m]", f"{det.pos}: span")
    _legend(axes[2])
    if len(axes) > 3:
        smooth = np.array([float(p.smooth) if isinstance(p, SigmoidDetectorPanel) else np.nan for p in panels])
        axes[3].bar(idx, smooth, color=[_colour(i) for i in range(len(panels))])
        if np.isfinite(smooth).any() and (smooth[np.isfinite(smooth)] > 0).all():
            axes[3].set_yscale("log")
        _style(axes[3], "Panel", "Smooth", f"{det.pos}: smooth")
