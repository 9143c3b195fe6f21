"""Optimisation wrappers and their shared fit state."""

from .abs_wrapper import AbsVolumeWrapper
from .fit_state import STATES, FitParams
from .volume_wrapper import ArbVolumeWrapper, HeatMapVolumeWrapper, PanelVolumeWrapper

__all__ = ["AbsVolumeWrapper", "PanelVolumeWrapper", "HeatMapVolumeWrapper", "ArbVolumeWrapper", "FitParams", "STATES"]
