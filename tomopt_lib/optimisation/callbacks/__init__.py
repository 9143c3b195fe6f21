"""Callbacks for the volume wrappers' fit / predict loops.

As in TomOpt, the package re-exports the public names of its modules (``callback``, ``cyclic_callbacks``,
``data_callbacks``, ``detector_callbacks``, ``diagnostic_callbacks``, ``eval_metric``, ``grad_callbacks``,
``heatmap_gif``, ``monitors``, ``opt_callbacks``, ``pred_callbacks``, ``warmup_callbacks``).
"""

from .callback import Callback
from .cyclic_callbacks import CyclicCallback
from .data_callbacks import MuonResampler
from .detector_callbacks import PanelCentring, PanelUpdateLimiter, SigmoidPanelSmoothnessSchedule
from .diagnostic_callbacks import HitRecord, ScatterRecord
from .eval_metric import EvalMetric
from .grad_callbacks import NoMoreNaNs
from .heatmap_gif import HeatMapGif
from .monitors import MetricLogger, PanelMetricLogger
from .opt_callbacks import EpochSave, OneCycle
from .pred_callbacks import PredHandler, Save2HDF5PredHandler, VolumeTargetPredHandler
from .warmup_callbacks import CostCoefWarmup, OptConfig, PostWarmupCallback, WarmupCallback

__all__ = [
    "Callback",
    "CyclicCallback",
    "MuonResampler",
    "PanelCentring",
    "PanelUpdateLimiter",
    "SigmoidPanelSmoothnessSchedule",
    "HitRecord",
    "ScatterRecord",
    "EvalMetric",
    "NoMoreNaNs",
    "HeatMapGif",
    "MetricLogger",
    "PanelMetricLogger",
    "EpochSave",
    "OneCycle",
    "PredHandler",
    "VolumeTargetPredHandler",
    "Save2HDF5PredHandler",
    "WarmupCallback",
    "CostCoefWarmup",
    "OptConfig",
    "PostWarmupCallback",
]
