"""TomOpt's benchmark studies: ``ladle_furnace`` (fill level of liquid steel), ``small_walls`` (buried walls in soil),
``u_lorry`` (a uranium block in a lorry). Every documented name is re-exported here, as the API test expects."""

from . import ladle_furnace, small_walls, u_lorry
from .ladle_furnace import *  # noqa: F403
from .small_walls import *  # noqa: F403
from .u_lorry import *  # noqa: F403

__all__ = [*ladle_furnace.__all__, *small_walls.__all__, *u_lorry.__all__]
