"""Inference: per-muon track fits, PoCA and scattering variables with per-muon uncertainties."""

from .scattering import GenScatterBatch, ScatterBatch

__all__ = ["ScatterBatch", "GenScatterBatch"]
