"""Detector and passive layers, panels, scattering models and the ``Volume`` that chains them."""

from .builders import build_panel_volume, rad_length_func_from_cube
from .heatmap import GMM, DetectorHeatMap
from .heatmap_layer import HeatMapDetectorLayer
from .layer import AbsDetectorLayer, AbsLayer, PanelDetectorLayer
from .panel import DetectorPanel, SigmoidDetectorPanel
from .passive_layer import PassiveLayer, RadLengthFunc
from .scatter_model import AbsScatterModel, PDGScatterModel, get_scatter_model
from .scatter_table import TabulatedScatterModel, build_pdg_scatter_table, build_scatter_table
from .volume import Volume

__all__ = [
    "AbsLayer",
    "AbsDetectorLayer",
    "PanelDetectorLayer",
    "PassiveLayer",
    "RadLengthFunc",
    "DetectorPanel",
    "SigmoidDetectorPanel",
    "DetectorHeatMap",
    "HeatMapDetectorLayer",
    "GMM",
    "AbsScatterModel",
    "PDGScatterModel",
    "TabulatedScatterModel",
    "build_scatter_table",
    "build_pdg_scatter_table",
    "get_scatter_model",
    "Volume",
    "build_panel_volume",
    "rad_length_func_from_cube",
]
