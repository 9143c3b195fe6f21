"""Detector layout plots: the passive block and the panels seen from the side and from the top."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from .appearance import LEG_SZ, PathLike, _colour, _finish, _style

if TYPE_CHECKING:
    from ..volume.layer import AbsDetectorLayer
    from ..volume.volume import Volume

__all__ = ["panel_geometry", "plot_detector_layout"]


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
