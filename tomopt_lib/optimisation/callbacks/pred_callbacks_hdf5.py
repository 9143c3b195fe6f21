"""Former home of ``Save2HDF5PredHandler``, now in :mod:`.pred_callbacks` (TomOpt's path); kept for existing imports."""

from .pred_callbacks import PRED_KEY, TARG_KEY, Save2HDF5PredHandler

__all__ = ["Save2HDF5PredHandler", "PRED_KEY", "TARG_KEY"]
