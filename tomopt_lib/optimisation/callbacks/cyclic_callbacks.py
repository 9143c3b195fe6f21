"""Cyclic callbacks (TomOpt's ``tomopt.optimisation.callbacks.cyclic_callbacks`` path).

``CyclicCallback`` is defined with the other base classes in :mod:`.callback`; the schedules built on it (e.g.
``OneCycle``) live in :mod:`.opt_callbacks`.
"""

from .callback import CyclicCallback

__all__ = ["CyclicCallback"]
