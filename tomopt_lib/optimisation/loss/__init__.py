"""Detector losses."""

from .loss import (
    AbsDetectorLoss,
    AbsMaterialClassLoss,
    VolumeClassLoss,
    VolumeIntClassLoss,
    VolumeMSELoss,
    VoxelClassLoss,
    VoxelLogX0Loss,
    VoxelX0Loss,
)
from .sub_losses import integer_class_loss

__all__ = [
    "AbsDetectorLoss",
    "AbsMaterialClassLoss",
    "VoxelX0Loss",
    "VoxelLogX0Loss",
    "VoxelClassLoss",
    "VolumeClassLoss",
    "VolumeIntClassLoss",
    "VolumeMSELoss",
    "integer_class_loss",
]
