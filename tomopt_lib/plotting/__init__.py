"""Plots of X0 predictions, PoCA / hit densities, scatter angles and detector layouts.

Every function builds a ``matplotlib.figure.Figure`` without pyplot (no GUI backend, no global figure state, safe in
worker threads), optionally saves it to ``savename`` and returns it. Modules at TomOpt's paths: ``appearance``
(sizes, palette), ``diagnostics`` (PoCA / hit densities, scatter angles), ``predictions`` (X0 maps); plus
``detectors`` (layouts). Their public names are re-exported here.
"""

from __future__ import annotations

from .appearance import CAT_PALETTE, LBL_SZ, LEG_SZ, TK_SZ
from .detectors import panel_geometry, plot_detector_layout
from .diagnostics import plot_hit_density, plot_poca_density_per_layer, plot_scatter_angle_hist, plot_scatter_density
from .predictions import plot_pred_true_x0

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
