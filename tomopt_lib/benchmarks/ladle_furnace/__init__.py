"""Ladle-furnace benchmark: fill level of liquid steel in a 1 x 1 m steel ladle under slag (TomOpt's published study).

Re-exports the public names of its modules (``data``, ``inference``, ``loss``, ``plotting``, ``volume``), as TomOpt.
"""

from .data import LadleFurnacePassiveGenerator
from .inference import EdgeDetLadleFurnaceFillLevelInferrer, LinearCorrectionCallback, PocaZLadleFurnaceFillLevelInferrer
from .loss import LadleFurnaceIntClassLoss, SpreadRangeLoss
from .plotting import (
    compare_init_optimised_2,
    compare_init_to_optimised,
    compare_optimised_to_baselines,
    compare_raw_init_to_bias_corrected_init,
)
from .volume import get_baseline_detector_1, get_baseline_detector_2, get_initial_detector

__all__ = [
    "LadleFurnacePassiveGenerator",
    "EdgeDetLadleFurnaceFillLevelInferrer",
    "LinearCorrectionCallback",
    "PocaZLadleFurnaceFillLevelInferrer",
    "LadleFurnaceIntClassLoss",
    "SpreadRangeLoss",
    "compare_init_optimised_2",
    "compare_init_to_optimised",
    "compare_optimised_to_baselines",
    "compare_raw_init_to_bias_corrected_init",
    "get_baseline_detector_1",
    "get_baseline_detector_2",
    "get_initial_detector",
]
