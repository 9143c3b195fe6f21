"""Plots of X0 predictions, PoCA / hit densities, scatter angles and detector layouts.

Every function builds a ``matplotlib.figure.Figure`` without pyplot (no GUI backend, no global figure state, safe in
worker threads), optionally saves it to ``savename`` and returns it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from .volume.layer import AbsDetectorLayer
    from .volume.volume import Volume

__all__ = [
    "TK_SZ",
    "LBL_SZ",
    "LEG_SZ",
    "CAT_PALETTE",
    "plot_pred_true_x0",
    "plot_scatter_density",
    "plot_hit_density",
    "plot_poca_density_per_layer",
    "plot_scatter_angle_hist",
    "plot_detector_layout",
    "panel_geometry",
]

TK_SZ: int = 16
"""Tick label size."""
LBL_SZ: int = 22
"""Axis label / title size."""
LEG_SZ: int = 16
"""Legend font size."""
CAT_PALETTE: str = "tab10"
"""Colour map of categorical series."""

PathLike = str | Path


def _finish(fig: Figure, savename: PathLike | None) -> Figure:
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    if savename is not None:
        Path(savename).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(savename, dpi=100)
    return fig


def _style(ax: Axes, xlabel: str = "", ylabel: str = "", title: str = "") -> None:
    ax.tick_params(labelsize=TK_SZ)
    if xlabel:
        ax.set_xlabel(xlabel, fontsize=LBL_SZ)
    if ylabel:
        ax.set_ylabel(ylabel, fontsize=LBL_SZ)
    if title:
        ax.set_title(title, fontsize=LBL_SZ)


def _colour(i: int) -> tuple[float, float, float, float]:
    from matplotlib import colormaps

    return colormaps[CAT_PALETTE](i % 10)


def plot_pred_true_x0(
    pred: np.ndarray, true: np.ndarray, savename: PathLike | None = None, *, voxel_size: float | None = None
) -> Figure:
    """Side-by-side (z, x, y) X0 maps [m] per layer (rows, bottom layer first): truth | prediction, shared log colour
    scale; with ``voxel_size`` [m] the axes are positions in metres, else voxel indices."""
    pred, true = np.asarray(pred, dtype=float), np.asarray(true, dtype=float)
    if pred.shape != true.shape or pred.ndim != 3:
        raise ValueError(f"pred and true must both have shape (z, x, y), got {pred.shape} and {true.shape}")
    vals = np.concatenate([pred[np.isfinite(pred)], true[np.isfinite(true)]])
    pos = vals[vals > 0]
    norm = LogNorm(vmin=pos.min(), vmax=pos.max()) if len(pos) and pos.min() < pos.max() else None
    n_z = pred.shape[0]
    fig = Figure(figsize=(12, 5 * n_z), layout="constrained")
    axes = fig.subplots(n_z, 2, squeeze=False)
    for z in range(n_z):
        for j, (arr, name) in enumerate(((true, "True"), (pred, "Prediction"))):
            ax = axes[z, j]
            ext = None if voxel_size is None else (0, arr.shape[1] * voxel_size, 0, arr.shape[2] * voxel_size)
            im = ax.imshow(arr[z].T, origin="lower", norm=norm, cmap="viridis", extent=ext)
            unit = "index" if voxel_size is None else "[m]"
            where = f"layer {z} (from bottom)" if voxel_size is None else f"z {z * voxel_size:.2f}-{(z + 1) * voxel_size:.2f} m"
            _style(ax, f"x {unit}", f"y {unit}", f"{name}, {where}")
        fig.colorbar(im, ax=axes[z].tolist(), label="X0 [m]")
    return _finish(fig, savename)


def plot_scatter_density(
    df: pd.DataFrame,
    *,
    cols: Sequence[str] = ("poca_x", "poca_y", "poca_z"),
    bins: int = 50,
    weight: str | None = None,
    savename: PathLike | None = None,
) -> Figure:
    """2-D densities of PoCA positions [m] in the xy, xz and yz projections (``weight``: optional weight column)."""
    x, y, z = (df[c].to_numpy(dtype=float) for c in cols)
    w = None if weight is None else df[weight].to_numpy(dtype=float)
    fig = Figure(figsize=(21, 7))
    axes = fig.subplots(1, 3)
    for ax, (a, b, la, lb) in zip(axes, ((x, y, "x", "y"), (x, z, "x", "z"), (y, z, "y", "z"))):
        ok = np.isfinite(a) & np.isfinite(b)
        if ok.any():
            ax.hist2d(a[ok], b[ok], bins=bins, weights=None if w is None else w[ok], cmap="viridis", cmin=1e-12)
        _style(ax, f"{la} [m]", f"{lb} [m]", f"PoCA density ({la}{lb})")
    return _finish(fig, savename)


def plot_hit_density(
    df: pd.DataFrame,
    *,
    x: str = "x",
    y: str = "y",
    panel: str = "panel",
    bins: int = 50,
    savename: PathLike | None = None,
) -> Figure:
    """2-D hit densities [m], one subplot per value of the ``panel`` column (or a single one without it)."""
    groups = list(df.groupby(panel, sort=True)) if panel in df.columns else [("all", df)]
    n = max(1, len(groups))
    n_col = min(4, n)
    n_row = int(np.ceil(n / n_col))
    fig = Figure(figsize=(6 * n_col, 5.5 * n_row))
    axes = np.atleast_1d(fig.subplots(n_row, n_col, squeeze=False)).reshape(-1)
    for ax, (name, g) in zip(axes, groups):
        a, b = g[x].to_numpy(dtype=float), g[y].to_numpy(dtype=float)
        ok = np.isfinite(a) & np.isfinite(b)
        if ok.any():
            ax.hist2d(a[ok], b[ok], bins=bins, cmap="viridis", cmin=1e-12)
        _style(ax, f"{x} [m]", f"{y} [m]", f"{panel} {name}" if panel in df.columns else "hits")
    for ax in axes[len(groups) :]:
        ax.set_visible(False)
    return _finish(fig, savename)


def plot_poca_density_per_layer(
    poca_xyz: np.ndarray,
    *,
    lw: Sequence[float],
    z_bottom: float,
    size: float,
    n_layers: int,
    bins_per_voxel: int = 2,
    savename: PathLike | None = None,
) -> Figure:
    """PoCA counts in xy per passive layer (top layer first), binned ``bins_per_voxel`` per voxel edge."""
    p = np.asarray(poca_xyz, dtype=float).reshape(-1, 3)
    p = p[np.isfinite(p).all(1)]
    n_col = min(3, n_layers)
    n_row = int(np.ceil(n_layers / n_col))
    fig = Figure(figsize=(6.5 * n_col + 1.5, 5.5 * n_row), layout="constrained")
    axes = np.asarray(fig.subplots(n_row, n_col, squeeze=False)).reshape(-1)
    ex = np.linspace(0, lw[0], int(round(lw[0] / size)) * bins_per_voxel + 1)
    ey = np.linspace(0, lw[1], int(round(lw[1] / size)) * bins_per_voxel + 1)
    hists = []
    for k in range(n_layers):
        lo = z_bottom + (n_layers - 1 - k) * size
        sel = p[(p[:, 2] >= lo) & (p[:, 2] < lo + size)]
        hists.append((lo, np.histogram2d(sel[:, 0], sel[:, 1], bins=(ex, ey))[0]))
    vmax = max([h.max() for _, h in hists] + [1.0])
    im = None
    for ax, (lo, h) in zip(axes, hists):
        im = ax.pcolormesh(ex, ey, h.T, vmin=0, vmax=vmax, cmap="viridis")
        _style(ax, "x [m]", "y [m]", f"z in [{lo:.2f}, {lo + size:.2f}) m")
        ax.set_aspect("equal")
    for ax in axes[n_layers:]:
        ax.set_visible(False)
    if im is not None:
        fig.colorbar(im, ax=axes[:n_layers].tolist(), label="PoCA count")
    return _finish(fig, savename)


def plot_scatter_angle_hist(
    angles: Mapping[str, np.ndarray],
    *,
    bins: int = 50,
    max_angle: float = 0.1,
    log: bool = True,
    xlabel: str = "Scatter angle [mrad]",
    savename: PathLike | None = None,
) -> Figure:
    """Step histograms of scatter angles [rad] (shown in mrad), one per labelled series; returns the figure."""
    edges = np.linspace(0.0, max_angle, bins + 1) * 1e3
    fig = Figure(figsize=(10, 7))
    ax = fig.subplots()
    n_total = 0
    for i, (label, arr) in enumerate(angles.items()):
        a = np.asarray(arr, dtype=float)
        a = a[np.isfinite(a)] * 1e3
        n_total += len(a)
        ax.hist(
            np.clip(a, edges[0], edges[-1] - 1e-9),
            bins=edges,  # type: ignore[arg-type]  # matplotlib's stubs leave out ndarray bin edges
            histtype="step",
            lw=2,
            color=_colour(i),
            label=f"{label} ({len(a)})",
        )
    if log and n_total:
        ax.set_yscale("log")
    _style(ax, xlabel, "Muons")
    if angles:
        ax.legend(fontsize=LEG_SZ)
    return _finish(fig, savename)


def panel_geometry(volume: Volume) -> Iterator[tuple[int, AbsDetectorLayer, int, tuple[float, float, float, float, float]]]:
    """``(detector index, detector layer, panel index, (x, y, z, span_x, span_y))`` [m] of every panel, spans
    effective (budget-scaled)."""
    for i, det in enumerate(volume.get_detectors()):
        for k, panel in enumerate(getattr(det, "panels", [])):
            (cx, cy), z = panel.xy.detach().cpu().numpy(), float(panel.z.detach().reshape(-1)[0])
            sx, sy = panel.get_scaled_xy_span().detach().cpu().numpy()
            yield i, det, k, (float(cx), float(cy), z, float(sx), float(sy))


def plot_detector_layout(
    volume: Volume,
    *,
    x0_cube: np.ndarray | None = None,
    savename: PathLike | None = None,
) -> Figure:
    """Side (x-z) and top (x-y) views of the passive block and the panels (coloured by detector group).

    ``x0_cube`` (z, x, y) [m], bottom layer first, optionally colours the side view by the y-averaged log10 X0.
    """
    passives = volume.get_passives()
    lw = volume.lw.detach().cpu().numpy()
    z_lo, z_hi = (float(t.reshape(-1)[0]) for t in volume.get_passive_z_range())
    h = float(volume.h.reshape(-1)[0])
    fig = Figure(figsize=(16, 8), layout="constrained")
    side, top = fig.subplots(1, 2)
    if x0_cube is not None:
        lx = np.log10(np.asarray(x0_cube, dtype=float)).mean(axis=2)  # (z, x)
        im = side.pcolormesh(
            np.linspace(0, lw[0], lx.shape[1] + 1), np.linspace(z_lo, z_hi, lx.shape[0] + 1), lx, cmap="viridis_r", alpha=0.8
        )
        fig.colorbar(im, ax=side, label="mean log10 X0 [m]")
    for p in passives:
        side.add_patch(Rectangle((0, p.z_bottom), float(lw[0]), p.size, fill=x0_cube is None, fc="0.85", ec="0.4", lw=1))
    top.add_patch(Rectangle((0, 0), float(lw[0]), float(lw[1]), fc="0.9", ec="0.4", lw=1, label="passive"))
    labelled = set()
    for i, det, _, (cx, cy, z, sx, sy) in panel_geometry(volume):
        col, ls = _colour(i), ("-", "--", ":", "-.")[i % 4]
        lab = None if det.pos in labelled else det.pos
        labelled.add(det.pos)
        side.plot([cx - sx / 2, cx + sx / 2], [z, z], color=col, lw=3, ls=ls, label=lab)
        top.add_patch(Rectangle((cx - sx / 2, cy - sy / 2), sx, sy, fill=False, ec=col, lw=2, ls=ls, label=lab))
    side.set_xlim(min(0.0, side.get_xlim()[0]) - 0.1 * lw[0], max(lw[0], side.get_xlim()[1]) + 0.1 * lw[0])
    side.set_ylim(-0.05 * h, 1.05 * h)
    top.set_xlim(-0.2 * lw[0], 1.2 * lw[0])
    top.set_ylim(-0.2 * lw[1], 1.2 * lw[1])
    top.set_aspect("equal")
    _style(side, "x [m]", "z [m]", "Side view")
    _style(top, "x [m]", "y [m]", "Top view")
    side.legend(fontsize=LEG_SZ, loc="upper right")
    top.legend(fontsize=LEG_SZ, loc="upper right")
    return _finish(fig, savename)
