"""Plot appearance (TomOpt's ``tomopt.plotting.appearance`` path): font sizes, palette and the shared figure helpers."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = ["TK_SZ", "LBL_SZ", "LEG_SZ", "CAT_PALETTE"]

TK_SZ: int = 16
"""Tick label size."""
LBL_SZ: int = 22
"""Axis label / title size."""
LEG_SZ: int = 16
"""Legend font size."""
CAT_PALETTE: str = "tab10"
"""Colour map of categorical series."""

PathLike = str | Path


def _finish(fig: Figure, savename: PathLike | None, *, tight: bool = True) -> Figure:
    """Tight layout (unless ``tight`` is False or the figure has a layout engine); saved to ``savename`` if given."""
    if tight and fig.get_layout_engine() is None:
        fig.tight_layout()
    if savename is not None:
        Path(savename).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(savename, dpi=100)
    return fig


def _map_grid(
    n_row: int, n_col: int, *, panel: float = 2.6, margins: tuple[float, float, float, float] = (1.5, 1.6, 0.9, 0.8)
) -> tuple[Figure, np.ndarray, Axes]:
    """A figure of ``n_row`` x ``n_col`` map panels (``panel`` inches each, shared axes) on a fixed grid, with a
    colour-bar axes at the right; ``margins``: left, right, bottom, top [inch]. Returns (figure, axes[n_row, n_col],
    colour-bar axes). No layout engine: constrained layout took ~2-3 s per many-map figure, this grid ~0.5 s."""
    left, right, bottom, top = margins
    width, height = left + right + n_col * panel * 1.08, bottom + top + n_row * panel * 1.12
    fig = Figure(figsize=(width, height))
    axes = fig.subplots(
        n_row,
        n_col,
        squeeze=False,
        sharex=True,
        sharey=True,
        gridspec_kw={
            "left": left / width,
            "right": 1 - right / width,
            "bottom": bottom / height,
            "top": 1 - top / height,
            "wspace": 0.08,
            "hspace": 0.16,
        },
    )
    for ax in axes.flat:
        ax.tick_params(labelsize=TK_SZ - 4)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=3))  # shared axes: a few ticks, no clash at the panel joins
        ax.yaxis.set_major_locator(MaxNLocator(nbins=4))
    cax = fig.add_axes((1 - (right - 0.35) / width, bottom / height, 0.25 / width, 1 - (bottom + top) / height))
    return fig, axes, cax


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
