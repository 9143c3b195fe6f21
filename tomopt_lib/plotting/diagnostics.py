"""Diagnostic plots (TomOpt's ``tomopt.plotting.diagnostics`` path): PoCA and hit densities, scatter angles."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .appearance import LBL_SZ, LEG_SZ, PathLike, _colour, _finish, _map_grid, _style

__all__ = ["plot_scatter_density", "plot_hit_density", "plot_poca_density_per_layer", "plot_scatter_angle_hist"]

_POCA_COLS: tuple[tuple[str, str, str], ...] = (("poca_x", "poca_y", "poca_z"), ("x", "y", "z"))
"""Default PoCA column triples of :func:`plot_scatter_density`, in order of preference."""


def plot_scatter_density(
    scatter_df: pd.DataFrame,
    savename: PathLike | None = None,
    *,
    cols: Sequence[str] | None = None,
    bins: int = 50,
    weight: str | None = None,
) -> Figure:
    """2-D densities of PoCA positions [m] in the xy, xz and yz projections (``weight``: optional weight column).

    ``cols``: the x, y, z columns; by default ``poca_x, poca_y, poca_z`` if present, else ``x, y, z`` (the columns of
    ``ScatterRecord.get_record(as_df=True)``).
    """
    if cols is None:
        cols = next((c for c in _POCA_COLS if set(c) <= set(scatter_df.columns)), _POCA_COLS[0])
    missing = [c for c in cols if c not in scatter_df.columns]
    if missing:
        raise ValueError(f"scatter_df has no column(s) {missing}; columns: {list(scatter_df.columns)}")
    df = scatter_df
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
    hit_df: pd.DataFrame,
    savename: PathLike | None = None,
    *,
    x: str = "x",
    y: str = "y",
    panel: str = "panel",
    bins: int = 50,
) -> Figure:
    """2-D hit densities [m], one subplot per value of the ``panel`` column (or a single one without it).

    The default columns are those of ``HitRecord.get_record(as_df=True)``.
    """
    df = hit_df
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
    fig, grid, cax = _map_grid(n_row, n_col, panel=3.2)
    axes = grid.reshape(-1)
    ex = np.linspace(0, lw[0], int(round(lw[0] / size)) * bins_per_voxel + 1)
    ey = np.linspace(0, lw[1], int(round(lw[1] / size)) * bins_per_voxel + 1)
    hists = []
    for k in range(n_layers):
        lo = z_bottom + (n_layers - 1 - k) * size
        sel = p[(p[:, 2] >= lo) & (p[:, 2] < lo + size)]
        hists.append((lo, np.histogram2d(sel[:, 0], sel[:, 1], bins=(ex, ey))[0]))
    vmax = max([h.max() for _, h in hists] + [1.0])
    meshes = []
    for i, (ax, (lo, h)) in enumerate(zip(axes, hists)):
        meshes.append(ax.pcolormesh(ex, ey, h.T, vmin=0, vmax=vmax, cmap="viridis"))
        ax.set_title(f"z in [{lo:.2f}, {lo + size:.2f}) m", fontsize=LBL_SZ - 6)
        ax.set_aspect("equal")
        if i % n_col == 0:
            ax.set_ylabel("y [m]", fontsize=LBL_SZ - 6)
        if i + n_col >= n_layers:  # the lowest panel of its column
            ax.set_xlabel("x [m]", fontsize=LBL_SZ - 6)
            ax.xaxis.set_tick_params(labelbottom=True)
    for ax in axes[n_layers:]:
        ax.set_visible(False)
    fig.colorbar(meshes[0], cax=cax).set_label("PoCA count", fontsize=LBL_SZ - 6)
    fig.suptitle("PoCA counts per passive layer (top layer first)", fontsize=LBL_SZ - 4)
    return _finish(fig, savename, tight=False)  # the fixed grid is the layout


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
