"""Optimisation: passive generators (``data``), losses (``loss``), wrappers (``wrapper``) and callbacks (``callbacks``).

As ``tomopt.optimisation`` does, the package re-exports the public names of its four subpackages, so that e.g.
``from tomopt_lib.optimisation import PanelVolumeWrapper, PassiveYielder, MetricLogger`` works.
"""

from .callbacks import (
    Callback,
    CostCoefWarmup,
    CyclicCallback,
    EpochSave,
    EvalMetric,
    HitRecord,
    MetricLogger,
    MuonResampler,
    NoMoreNaNs,
    OneCycle,
    OptConfig,
    PanelCentring,
    PanelMetricLogger,
    PanelUpdateLimiter,
    PostWarmupCallback,
    PredHandler,
    Save2HDF5PredHandler,
    ScatterRecord,
    SigmoidPanelSmoothnessSchedule,
    VolumeTargetPredHandler,
    WarmupCallback,
)
from .data import (
    AbsBlockPassiveGenerator,
    AbsPassiveGenerator,
    BlockPresentPassiveGenerator,
    PassiveYielder,
    RandomBlockPassiveGenerator,
    VoxelPassiveGenerator,
)
from .loss import (
    AbsDetectorLoss,
    AbsMaterialClassLoss,
    VolumeClassLoss,
    VolumeIntClassLoss,
    VolumeMSELoss,
    VoxelClassLoss,
    VoxelLogX0Loss,
    VoxelX0Loss,
    integer_class_loss,
)
from .wrapper import AbsVolumeWrapper, ArbVolumeWrapper, FitParams, PanelVolumeWrapper

__all__ = [
    # callbacks
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
    # data
    "AbsPassiveGenerator",
    "AbsBlockPassiveGenerator",
    "RandomBlockPassiveGenerator",
    "BlockPresentPassiveGenerator",
    "VoxelPassiveGenerator",
    "PassiveYielder",
    # loss
    "AbsDetectorLoss",
    "AbsMaterialClassLoss",
    "VoxelX0Loss",
    "VoxelLogX0Loss",
    "VoxelClassLoss",
    "VolumeClassLoss",
    "VolumeIntClassLoss",
    "VolumeMSELoss",
    "integer_class_loss",
    # wrapper
    "AbsVolumeWrapper",
    "PanelVolumeWrapper",
    "ArbVolumeWrapper",
    "FitParams",
]
