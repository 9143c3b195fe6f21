"""Optimisation: passive generators (``data``), losses (``loss``), wrappers (``wrapper``) and callbacks."""

from .loss import (
    AbsDetectorLoss,
    AbsMaterialClassLoss,
    VolumeClassLoss,
    VolumeIntClassLoss,
    VolumeMSELoss,
    VoxelClassLoss,
    VoxelX0Loss,
    integer_class_loss,
)
from .wrapper import AbsVolumeWrapper, ArbVolumeWrapper, FitParams, PanelVolumeWrapper

__all__ = [
    "AbsDetectorLoss",
    "AbsMaterialClassLoss",
    "VoxelX0Loss",
    "VoxelClassLoss",
    "VolumeClassLoss",
    "VolumeIntClassLoss",
    "VolumeMSELoss",
    "integer_class_loss",
    "AbsVolumeWrapper",
    "PanelVolumeWrapper",
    "ArbVolumeWrapper",
    "FitParams",
]
