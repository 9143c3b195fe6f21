"""Optimisation: passive generators (``data``), losses (``loss``), wrappers (``wrapper``) and callbacks (``callbacks``).

As ``tomopt.optimisation`` does, the package re-exports the public names of its four subpackages, so that e.g.
``from tomopt_lib.optimisation import PanelVolumeWrapper, PassiveYielder, MetricLogger`` works. The names are each
subpackage's ``__all__`` (one list per subpackage, not a copy here).
"""

from . import callbacks, data, loss, wrapper
from .callbacks import *  # noqa: F403
from .data import *  # noqa: F403
from .loss import *  # noqa: F403
from .wrapper import *  # noqa: F403

__all__ = [*callbacks.__all__, *data.__all__, *loss.__all__, *wrapper.__all__]
