"""Passive-volume generators and the ``PassiveYielder`` that feeds them to fits and predictions."""

from .passives import (
    AbsBlockPassiveGenerator,
    AbsPassiveGenerator,
    BlockPresentPassiveGenerator,
    PassiveYielder,
    RandomBlockPassiveGenerator,
    VoxelPassiveGenerator,
)

__all__ = [
    "AbsPassiveGenerator",
    "AbsBlockPassiveGenerator",
    "RandomBlockPassiveGenerator",
    "BlockPresentPassiveGenerator",
    "VoxelPassiveGenerator",
    "PassiveYielder",
]
