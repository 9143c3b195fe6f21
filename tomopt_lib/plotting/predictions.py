"""Plots of X0 predictions (TomOpt's ``tomopt.plotting.predictions`` path)."""

from __future__ import annotations

import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from .appearance import LBL_SZ, PathLike, _finish, _map_grid

__all__ = ["plot_pred_true_x0"]


def plot_pred_true_x0(
    pred: np.ndarray, true: np.ndarray, savename: PathLike | None = None, *, voxel_size: float | None = None
) -> Figure:
    """X0 maps [m] of a (z, x, y) volume, one column per layer (bottom layer left), truth above prediction, on one
    shared log colour scale; with ``voxel_size`` [m] the axes are positions in metres, else voxel indices.

    Laid out on a fixed grid (``_map_grid``) with one colour bar."""
    pred, true = np.asarray(pred, dtype=float), np.asarray(true, dtype=float)
    if pred.shape != true.shape or pred.ndim != 3:
        raise ValueError(f"pred and true must both have shape (z, x, y), got {pred.shape} and {true.shape}")
    vals = np.concatenate([pred[np.isfinite(pred)], true[np.isfinite(true)]])
    pos = vals[vals > 0]
    norm = LogNorm(vmin=pos.min(), vmax=pos.max()) if len(pos) and pos.min() < pos.max() else None
    n_z = pred.shape[0]
    fig, axes, cax = _map_grid(2, n_z)
    unit = "index" if voxel_size is None else "[m]"
    images = []
    for row, (arr, name) in enumerate(((true, "True"), (pred, "Predicted"))):
        for z in range(n_z):
            ax = axes[row, z]
            ext = None if voxel_size is None else (0, arr.shape[1] * voxel_size, 0, arr.shape[2] * voxel_size)
            images.append(ax.imshow(arr[z].T, origin="lower", norm=norm, cmap="viridis", extent=ext, aspect="equal"))
            if row == 0:
                where = f"layer {z}" if voxel_size is None else f"z {z * voxel_size:.2f}-{(z + 1) * voxel_size:.2f} m"
                ax.set_title(where, fontsize=LBL_SZ - 6)
            if row == 1:
                ax.set_xlabel(f"x {unit}", fontsize=LBL_SZ - 6)
        axes[row, 0].set_ylabel(f"{name}\ny {unit}", fontsize=LBL_SZ - 6)
    fig.colorbar(images[-1], cax=cax).set_label("X0 [m]", fontsize=LBL_SZ - 6)
    fig.suptitle("X0 per layer (bottom layer left): truth (top) and prediction (bottom)", fontsize=LBL_SZ - 4)
    return _finish(fig, savename, tight=False)  # the grid above is the layout
