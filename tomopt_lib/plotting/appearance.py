"""Plot appearance (TomOpt's ``tomopt.plotting.appearance`` path): font sizes, palette and the shared figure helpers."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from matplotlib.figure import Figure

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
