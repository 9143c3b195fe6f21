"""``HeatMapDetectorLayer``: a detector layer of ``DetectorHeatMap`` s (:mod:`.heatmap`), visited by decreasing z."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING

from torch import nn

from .heatmap import DetectorHeatMap
from .layer import PlaneDetectorLayer

if TYPE_CHECKING:
    pass

__all__ = ["HeatMapDetectorLayer", "heatmap_layers"]


class HeatMapDetectorLayer(PlaneDetectorLayer):
    """A layer of ``DetectorHeatMap`` s, visited in order of decreasing z (:class:`~.layer.PlaneDetectorLayer`; the
    heat-map counterpart of ``PanelDetectorLayer``, which returns one when given heat maps).

    Args:
        pos: detector group name; lw: (2,) footprint [m]; z: top [m]; size: thickness [m].
        panels: non-empty list / ``nn.ModuleList`` of heat maps, all on one device and with z in [z - size, z].
    """

    type_label = "heatmap"
    plane_type = DetectorHeatMap
    panels: Sequence[DetectorHeatMap]

    def yield_zordered_panels(self) -> Iterator[tuple[int, DetectorHeatMap]]:
        """``(index, heat map)`` pairs by decreasing z."""
        return super().yield_zordered_panels()


def heatmap_layers(detectors: Iterable[nn.Module]) -> list[HeatMapDetectorLayer]:
    """The heat-map layers among ``detectors`` (e.g. ``volume.get_detectors()``), in the given order."""
    return [d for d in detectors if isinstance(d, HeatMapDetectorLayer)]
