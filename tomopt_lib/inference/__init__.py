"""Inference: per-muon track fits, PoCA and scattering variables with per-muon uncertainties; volume inference."""

from .scattering import GenScatterBatch, ScatterBatch
from .volume import (
    VOLUME_INFERRERS,
    AbsIntClassifierFromX0,
    AbsVolumeInferrer,
    AbsX0Inferrer,
    DenseBlockClassifierFromX0s,
    NoMuonsError,
    PanelX0Inferrer,
    PathX0Inferrer,
    get_volume_inferrer,
)

__all__ = [
    "ScatterBatch",
    "GenScatterBatch",
    "AbsVolumeInferrer",
    "AbsX0Inferrer",
    "PanelX0Inferrer",
    "PathX0Inferrer",
    "DenseBlockClassifierFromX0s",
    "AbsIntClassifierFromX0",
    "NoMuonsError",
    "VOLUME_INFERRERS",
    "get_volume_inferrer",
]
