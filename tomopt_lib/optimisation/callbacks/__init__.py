"""Callbacks for the volume wrappers' fit / predict loops."""

from .callback import Callback, CyclicCallback
from .eval_metric import EvalMetric
from .grad_callbacks import NoMoreNaNs, PanelUpdateLimiter
from .opt_callbacks import EpochSave, OneCycle
from .pred_callbacks import PredHandler, VolumeTargetPredHandler
from .warmup_callbacks import CostCoefWarmup, OptConfig, PostWarmupCallback, WarmupCallback

__all__ = [
    "Callback",
    "CyclicCallback",
    "EvalMetric",
    "NoMoreNaNs",
    "PanelUpdateLimiter",
    "EpochSave",
    "OneCycle",
    "PredHandler",
    "VolumeTargetPredHandler",
    "WarmupCallback",
    "CostCoefWarmup",
    "OptConfig",
    "PostWarmupCallback",
]

# monitors helper: append MetricLogger, PanelMetricLogger, ScatterRecord, HitRecord, Save2HDF5PredHandler,
# MuonResampler, SigmoidPanelSmoothnessSchedule, PanelCentring below.
from .data_callbacks import MuonResampler  # noqa: E402
from .detector_callbacks import PanelCentring, SigmoidPanelSmoothnessSchedule  # noqa: E402
from .diagnostic_callbacks import HitRecord, ScatterRecord  # noqa: E402
from .monitors import MetricLogger, PanelMetricLogger  # noqa: E402
from .pred_callbacks_hdf5 import Save2HDF5PredHandler  # noqa: E402

__all__ += [
    "MetricLogger",
    "PanelMetricLogger",
    "ScatterRecord",
    "HitRecord",
    "Save2HDF5PredHandler",
    "MuonResampler",
    "SigmoidPanelSmoothnessSchedule",
    "PanelCentring",
]
