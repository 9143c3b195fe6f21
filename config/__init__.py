"""Typed pipeline configuration: the only definition of every parameter, its default and its allowed range.

``load_params("params.yaml")`` returns the frozen root model :class:`PipelineParams`; flows take it whole, tasks take
their sections (``VolumeParams``, ``IrradiateParams`` ...), cores take plain keyword arguments. Adding a parameter
touches the section model here, the code that uses it and ``params.yaml``.
"""

from __future__ import annotations

from .base import ParamsError, ParamsModel
from .loading import load_params, parse_params
from .lumi import LumiBaseParams, LumiPlanParams, LumiReportParams, LumiScanParams
from .optimise import EvaluateParams, LearningRates, MomentumParams, OptimiseParams, StartLayout
from .pipeline import PipelineParams
from .schedules import CronEntry, SchedulesParams
from .sections import (
    IrradiateParams,
    JobqueueParams,
    PassiveParams,
    ReconstructParams,
    ReportParams,
    RuntimeParams,
    VolumeParams,
)
from .studies import STUDY_NAMES, LadleFurnaceStudy, SmallWallsStudy, StudiesParams, StudyRates, ULorryStudy

__all__ = [
    "ParamsError",
    "ParamsModel",
    "load_params",
    "parse_params",
    "PipelineParams",
    "RuntimeParams",
    "JobqueueParams",
    "VolumeParams",
    "PassiveParams",
    "IrradiateParams",
    "ReconstructParams",
    "ReportParams",
    "OptimiseParams",
    "EvaluateParams",
    "LearningRates",
    "MomentumParams",
    "StartLayout",
    "LumiBaseParams",
    "LumiPlanParams",
    "LumiScanParams",
    "LumiReportParams",
    "CronEntry",
    "SchedulesParams",
    "STUDY_NAMES",
    "StudiesParams",
    "LadleFurnaceStudy",
    "StudyRates",
    "ULorryStudy",
    "SmallWallsStudy",
]
