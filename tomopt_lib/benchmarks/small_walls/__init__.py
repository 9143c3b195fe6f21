"""Small-walls benchmark: buried stone walls in soil imaged with 1 GeV muons. Re-exports its modules' names, as TomOpt."""

from .data import SmallWallsPassiveGenerator
from .volume import get_small_walls_volume, get_small_walls_volume_wrapper

__all__ = ["SmallWallsPassiveGenerator", "get_small_walls_volume", "get_small_walls_volume_wrapper"]
