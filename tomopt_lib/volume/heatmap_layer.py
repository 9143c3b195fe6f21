"""``HeatMapDetectorLayer``: a detector layer of ``DetectorHeatMap`` s (:mod:`.heatmap`), visited by decreasing z."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, cast

import torch
from torch import Tensor, nn

from .heatmap import DetectorHeatMap
from .layer import AbsDetectorLayer

if TYPE_CHECKING:
    from ..muon.muon_batch import MuonBatch

__all__ = ["HeatMapDetectorLayer", "heatmap_layers"]


class HeatMapDetectorLayer(AbsDetectorLayer):
    """A layer of ``DetectorHeatMap`` s, visited in order of decreasing z (the heat-map counterpart of
    ``PanelDetectorLayer``; ``PanelDetectorLayer(..., panels=[heat maps])`` returns one).

    Args:
        pos: detector group name; lw: (2,) footprint [m]; z: top [m]; size: thickness [m].
        panels: non-empty list / ``nn.ModuleList`` of heat maps, all on one device and with z in [z - size, z].

    ``_n_costs = len(panels)``: in fixed-budget mode the k-th budget goes to the k-th heat map by decreasing z.
    """

    type_label = "heatmap"

    def __init__(
        self,
        pos: str,
        *,
        lw: Tensor | Sequence[float],
        z: float,
        size: float,
        panels: Sequence[DetectorHeatMap] | nn.ModuleList,
    ) -> None:
        maps = cast("list[DetectorHeatMap]", list(panels)) if panels is not None else []
        if not maps or not all(isinstance(p, DetectorHeatMap) for p in maps):
            raise ValueError(f"panels must be a non-empty list of DetectorHeatMap objects, got {panels!r}")
        devices = {p.z.device for p in maps}
        if len(devices) != 1:
            raise ValueError(f"panels must all be on one device, got {sorted(str(d) for d in devices)}")
        super().__init__(pos, lw=lw, z=z, size=size, device=devices.pop())
        bottom, top, tol = self.z_bottom, self.z_top, 1e-6
        for i, p in enumerate(maps):
            pz = float(p.z.detach())
            if not bottom - tol <= pz <= top + tol:
                raise ValueError(f"panels[{i}] has z={pz:.6g} m outside its layer's z range [{bottom:.6g}, {top:.6g}] m")
        self.panels = cast("Sequence[DetectorHeatMap]", nn.ModuleList(maps))
        self._n_costs = len(maps)

    def get_panel_zorder(self) -> list[int]:
        """Indices of the heat maps by decreasing z."""
        zs = torch.cat([p.z.detach().reshape(1) for p in self.panels])
        return torch.argsort(zs, descending=True, stable=True).tolist()

    def yield_zordered_panels(self) -> Iterator[tuple[int, DetectorHeatMap]]:
        """``(index, heat map)`` pairs by decreasing z."""
        for i in self.get_panel_zorder():
            yield i, self.panels[i]

    def forward(self, mu: MuonBatch, generator: torch.Generator | None = None) -> None:
        """Propagate ``mu`` to each heat map (detached dz), record its hits under ``pos``, then move to the layer bottom."""
        for _, hm in self.yield_zordered_panels():
            mu.propagate_dz(mu.z - hm.z.detach().to(mu.z.dtype))
            mu.append_hits(hm.get_hits(mu, generator), self.pos)
        mu.propagate_dz(mu.z - (self.z.to(mu.z.dtype) - self.size))

    def get_cost(self) -> Tensor:
        """Sum of the heat-map costs (0-d tensor)."""
        return torch.stack([p.get_cost().reshape(()) for p in self.panels]).sum()

    def conform_detector(self, generator: torch.Generator | None = None) -> None:
        """Clamp every heat map to the layer (``DetectorHeatMap.clamp_params`` with the box x in [0, lw_x],
        y in [0, lw_y], z in [z - size, z])."""
        low = torch.cat([torch.zeros(2, dtype=self.lw.dtype, device=self.lw.device), self.z - self.size])
        high = torch.cat([self.lw, self.z])
        for p in self.panels:
            p.clamp_params(low, high, generator=generator)

    def assign_budget(self, budget: Tensor | None = None) -> None:
        """Give ``budget[k]`` to the k-th heat map in decreasing-z order (``None``: no-op)."""
        if budget is None:
            return
        budget = torch.as_tensor(budget).reshape(-1)
        if len(budget) != self._n_costs:
            raise ValueError(f"budget must have one entry per heat map ({self._n_costs}), got {len(budget)}")
        for k, (_, hm) in enumerate(self.yield_zordered_panels()):
            hm.assign_budget(budget[k])


def heatmap_layers(detectors: Iterable[nn.Module]) -> list[HeatMapDetectorLayer]:
    """The heat-map layers among ``detectors`` (e.g. ``volume.get_detectors()``), in the given order."""
    return [d for d in detectors if isinstance(d, HeatMapDetectorLayer)]
