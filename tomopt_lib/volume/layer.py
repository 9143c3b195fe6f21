"""Detector layers: ``AbsDetectorLayer`` and ``PanelDetectorLayer`` (a group of ``DetectorPanel`` s).

A detector layer occupies x in [0, lw[0]], y in [0, lw[1]] and z in [z - size, z] [m]. Layers sharing the group name
``pos`` (any string) have their hits stacked together in the ``MuonBatch``. Detectors never scatter muons, and muon
paths are not differentiable: only the hits depend on the detector parameters.
"""

from __future__ import annotations

from abc import ABCMeta, abstractmethod
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import Tensor, nn

from ..runtime import DeviceLike
from .layer_base import AbsLayer
from .panel import DetectorPanel

if TYPE_CHECKING:
    from ..muon.muon_batch import MuonBatch

__all__ = ["AbsLayer", "AbsDetectorLayer", "PlaneDetectorLayer", "PanelDetectorLayer", "PassiveLayer"]

Z_MARGIN: float = 1e-3
"""Largest margin [m] kept between a clamped panel and its layer's z boundaries (see ``DetectorPanel.clamp_params``)."""


class AbsDetectorLayer(AbsLayer, metaclass=ABCMeta):
    """Base of layers that record hits.

    Args:
        pos: name of the detector group (any non-empty string, e.g. ``"above"``, ``"below"``, ``"station_2"``).
        lw: (2,) footprint [m]; z: top [m]; size: thickness [m]; device: device of the layer tensors.

    Class attributes: ``type_label`` (detector model, e.g. ``"panel"``) and ``_n_costs`` (number of budget slots the
    ``Volume`` assigns in fixed-budget mode; 0 by default).
    """

    type_label: str = ""
    _n_costs: int = 0

    def __init__(self, pos: str, *, lw: Tensor | Sequence[float], z: float, size: float, device: DeviceLike = None) -> None:
        if not isinstance(pos, str) or not pos:
            raise ValueError(f"pos must be a non-empty string naming the detector group, got {pos!r}")
        super().__init__(lw=lw, z=z, size=size, device=device)
        self.pos = pos

    @abstractmethod
    def forward(self, mu: MuonBatch, generator: torch.Generator | None = None) -> None:
        """Move the muons through the layer, recording hits under ``self.pos``."""

    @abstractmethod
    def get_cost(self) -> Tensor:
        """Current total cost of the layer's detectors (0-d tensor)."""

    def conform_detector(self) -> None:
        """Bring detector parameters back inside their allowed ranges (after an optimiser step); no-op by default."""

    def assign_budget(self, budget: Tensor | None = None) -> None:
        """Distribute an (``_n_costs``,) tensor of budgets to the detectors; no-op by default."""

    def extra_repr(self) -> str:
        return f"pos={self.pos!r}, " + super().extra_repr()


class PlaneDetectorLayer(AbsDetectorLayer):
    """A layer of thin detector planes (``plane_type``: panels, heat maps), visited in order of decreasing z: each
    plane records its hits under ``pos``, its cost adds to the layer's, and in fixed-budget mode the k-th budget goes
    to the k-th plane by decreasing z (``_n_costs = len(panels)``).

    Args:
        pos: detector group name; lw: (2,) footprint [m]; z: top [m]; size: thickness [m].
        panels: non-empty list / ``nn.ModuleList`` of ``plane_type`` objects, all on one device and with z in
            [z - size, z].
    """

    plane_type: type[nn.Module] = nn.Module

    def __init__(
        self,
        pos: str,
        *,
        lw: Tensor | Sequence[float],
        z: float,
        size: float,
        panels: Sequence[nn.Module] | nn.ModuleList,
    ) -> None:
        planes = list(panels) if panels is not None else []
        if not planes or not all(isinstance(p, self.plane_type) for p in planes):
            raise ValueError(f"panels must be a non-empty list of {self.plane_type.__name__} objects, got {panels!r}")
        super().__init__(pos, lw=lw, z=z, size=size, device=self.get_device(planes))
        bottom, top = self.z_bottom, self.z_top
        tol = 1e-6
        for i, p in enumerate(planes):
            pz = float(cast("Tensor", p.z).detach())
            if not bottom - tol <= pz <= top + tol:
                raise ValueError(f"panels[{i}] has z={pz:.6g} m outside its layer's z range [{bottom:.6g}, {top:.6g}] m")
        self.panels = cast("Sequence[Any]", nn.ModuleList(planes))  # registered submodules
        self._n_costs = len(planes)

    @staticmethod
    def get_device(panels: Iterable[nn.Module]) -> torch.device:
        """The one device all ``panels`` live on; ``ValueError`` naming ``panels`` if they differ."""
        devices = {cast("Tensor", p.z).device for p in panels}
        if len(devices) != 1:
            raise ValueError(f"panels must all be on one device, got {sorted(str(d) for d in devices)}")
        return devices.pop()

    def get_panel_zorder(self) -> list[int]:
        """Indices of the planes by decreasing z."""
        zs = torch.cat([p.z.detach().reshape(1) for p in self.panels])
        return torch.argsort(zs, descending=True, stable=True).tolist()

    def yield_zordered_panels(self) -> Iterator[tuple[int, Any]]:
        """``(index, plane)`` pairs by decreasing z."""
        for i in self.get_panel_zorder():
            yield i, self.panels[i]

    def forward(self, mu: MuonBatch, generator: torch.Generator | None = None) -> None:
        """Propagate ``mu`` to each plane (detached dz), record its hits under ``pos``, then move to the layer bottom."""
        for _, plane in self.yield_zordered_panels():
            mu.propagate_dz(mu.z - plane.z.detach().to(mu.z.dtype))
            mu.append_hits(plane.get_hits(mu, generator), self.pos)
        mu.propagate_dz(mu.z - (self.z.to(mu.z.dtype) - self.size))

    def get_cost(self) -> Tensor:
        """Sum of the plane costs (0-d tensor)."""
        return torch.stack([p.get_cost().reshape(()) for p in self.panels]).sum()

    def conform_detector(self, generator: torch.Generator | None = None) -> None:
        """Clamp every plane to the layer's box: xy in [0, lw], z in [z - size, z] (``clamp_params`` of the plane
        type: panels keep a jitter margin < 1e-3 m and spans in [lw / 20, 10 lw])."""
        low = torch.cat([torch.zeros(2, dtype=self.lw.dtype, device=self.lw.device), self.z - self.size])
        high = torch.cat([self.lw, self.z])
        for p in self.panels:
            p.clamp_params(low, high, generator=generator)

    def assign_budget(self, budget: Tensor | None = None) -> None:
        """Give ``budget[k]`` to the k-th plane in decreasing-z order (``None``: no-op)."""
        if budget is None:
            return
        budget = torch.as_tensor(budget).reshape(-1)
        if len(budget) != self._n_costs:
            raise ValueError(f"budget must have one entry per panel ({self._n_costs}), got {len(budget)}")
        for k, (_, plane) in enumerate(self.yield_zordered_panels()):
            plane.assign_budget(budget[k])


class PanelDetectorLayer(PlaneDetectorLayer):
    """A layer of ``DetectorPanel`` s (or subclasses), visited in order of decreasing z (:class:`PlaneDetectorLayer`).

    Args:
        pos: detector group name; lw: (2,) footprint [m]; z: top [m]; size: thickness [m].
        panels: non-empty list / ``nn.ModuleList`` of panels, all on one device and with z in [z - size, z].
    """

    type_label = "panel"
    plane_type = DetectorPanel
    panels: Sequence[DetectorPanel]

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        """As TomOpt's ``PanelDetectorLayer`` accepts heat maps: given only ``DetectorHeatMap`` s as ``panels``, build
        and return a ``HeatMapDetectorLayer`` (``tomopt_lib.volume.heatmap``) instead."""
        panels = kwargs.get("panels")
        if cls is PanelDetectorLayer and isinstance(panels, (list, tuple, nn.ModuleList)) and len(panels) > 0:
            from .heatmap import DetectorHeatMap
            from .heatmap_layer import HeatMapDetectorLayer

            if all(isinstance(p, DetectorHeatMap) for p in panels):
                return HeatMapDetectorLayer(*args, **kwargs)
        return super().__new__(cls)

    def yield_zordered_panels(self) -> Iterator[tuple[int, DetectorPanel]]:
        """``(index, panel)`` pairs by decreasing panel z."""
        return super().yield_zordered_panels()


from .passive_layer import PassiveLayer  # noqa: E402  (re-exported for TomOpt-compatible imports)
