"""Volume inference (TomOpt's ``tomopt.inference.volume``): X0 inferrers, classifiers and the inferrer registry.

- ``PanelX0Inferrer`` ("poca"): TomOpt's PoCA-based estimator (``x0_poca``), separable sparse voxel probabilities.
- ``PathX0Inferrer`` ("path"): maximum likelihood of the scattering density along each muon's path (``x0_path``).
- ``DenseBlockClassifierFromX0s``, ``AbsIntClassifierFromX0`` (``classifiers``).

Empty input: ``get_prediction`` with no usable muon raises ``NoMuonsError`` (a ``ValueError``); ``n_mu`` is then 0.
"""

from __future__ import annotations

from .classifiers import AbsIntClassifierFromX0, DenseBlockClassifierFromX0s, make_x0_inferrer
from .voxel_probs import dense_voxel_probs, prob_at_least_two, voxel_pair_probs
from .x0_base import (
    AbsVolumeInferrer,
    AbsX0Inferrer,
    NoMuonsError,
    panel_muon_efficiency,
    solve_highland_x,
    x0_from_scatters,
)
from .x0_path import PathX0Inferrer
from .x0_poca import PanelX0Inferrer

__all__ = [
    "AbsVolumeInferrer",
    "AbsX0Inferrer",
    "PanelX0Inferrer",
    "PathX0Inferrer",
    "DenseBlockClassifierFromX0s",
    "AbsIntClassifierFromX0",
    "NoMuonsError",
    "VOLUME_INFERRERS",
    "get_volume_inferrer",
    "make_x0_inferrer",
    "panel_muon_efficiency",
    "prob_at_least_two",
    "voxel_pair_probs",
    "dense_voxel_probs",
    "x0_from_scatters",
    "solve_highland_x",
]

VOLUME_INFERRERS: dict[str, type[AbsX0Inferrer]] = {"poca": PanelX0Inferrer, "path": PathX0Inferrer}
"""Registry of X0 inferrers by name (read-only by convention)."""


def get_volume_inferrer(name: str) -> type[AbsX0Inferrer]:
    """X0 inferrer class for ``name`` ("poca" or "path"); ``ValueError`` listing the names otherwise."""
    try:
        return VOLUME_INFERRERS[name]
    except (KeyError, TypeError):
        raise ValueError(f"inferrer={name!r} is unknown; allowed: {sorted(VOLUME_INFERRERS)}") from None
