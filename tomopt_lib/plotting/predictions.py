"""Plots of X0 predictions (TomOpt's ``tomopt.plotting.predictions`` path)."""

from __future__ import annotations

import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from .appearance import PathLike, _finish, _style

__all__ = ["plot_pred_true_x0"]


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
