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

__all__ = ["AbsLayer", "AbsDetectorLayer", "PanelDetectorLayer", "PassiveLayer"]

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


class PanelDetectorLayer(AbsDetectorLayer):
    """A layer of ``DetectorPanel`` s (or subclasses), visited in order of decreasing z.

    Args:
        pos: detector group name; lw: (2,) footprint [m]; z: top [m]; size: thickness [m].
        panels: non-empty list / ``nn.ModuleList`` of panels, all on one device and with z in [z - size, z].
    """

    type_label = "panel"

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

    def __init__(
        self,
        pos: str,
        *,
        lw: Tensor | Sequence[float],
        z: float,
        size: float,
        panels: Sequence[DetectorPanel] | nn.ModuleList,
    ) -> None:
        panels = cast("list[DetectorPanel]", list(panels)) if panels is not None else []
        if not panels or not all(isinstance(p, DetectorPanel) for p in panels):
            raise ValueError(f"panels must be a non-empty list of DetectorPanel objects, got {panels!r}")
        device = self.get_device(cast("Iterable[DetectorPanel]", nn.ModuleList(panels)))
        super().__init__(pos, lw=lw, z=z, size=size, device=device)
        bottom, top = self.z_bottom, self.z_top
        tol = 1e-6
        for i, p in enumerate(panels):
            pz = float(p.z.detach())
            if not bottom - tol <= pz <= top + tol:
                raise ValueError(f"panels[{i}] has z={pz:.6g} m outside its layer's z range [{bottom:.6g}, {top:.6g}] m")
        self.panels = cast("Sequence[DetectorPanel]", nn.ModuleList(panels))  # registered submodules, typed by item
        self._n_costs = len(panels)

    @staticmethod
    def get_device(panels: Iterable[DetectorPanel]) -> torch.device:
        """The one device all ``panels`` live on; ``ValueError`` naming ``panels`` if they differ."""
        devices = {p.xy.device for p in panels}
        if len(devices) != 1:
            raise ValueError(f"panels must all be on one device, got {sorted(str(d) for d in devices)}")
        return devices.pop()

    def get_panel_zorder(self) -> list[int]:
        """Indices of the panels by decreasing z."""
        zs = torch.cat([p.z.detach().reshape(1) for p in self.panels])
        return torch.argsort(zs, descending=True, stable=True).tolist()

    def yield_zordered_panels(self) -> Iterator[tuple[int, DetectorPanel]]:
        """``(index, panel)`` pairs by decreasing panel z."""
        for i in self.get_panel_zorder():
            yield i, self.panels[i]

    def forward(self, mu: MuonBatch, generator: torch.Generator | None = None) -> None:
        """Propagate ``mu`` to each panel (detached dz), record its hits under ``pos``, then move to the layer bottom."""
        for _, panel in self.yield_zordered_panels():
            mu.propagate_dz(mu.z - panel.z.detach().to(mu.z.dtype))
            mu.append_hits(panel.get_hits(mu, generator), self.pos)
        mu.propagate_dz(mu.z - (self.z.to(mu.z.dtype) - self.size))

    def get_cost(self) -> Tensor:
        """Sum of the panel costs (0-d tensor)."""
        return torch.stack([p.get_cost().reshape(()) for p in self.panels]).sum()

    def conform_detector(self, generator: torch.Generator | None = None) -> None:
        """Clamp every panel: centre xy in [0, lw], z inside the layer (with a jitter margin < 1e-3 m), span in
        [lw / 20, 10 lw]."""
        low = torch.cat([torch.zeros(2, dtype=self.lw.dtype, device=self.lw.device), self.z - self.size])
        high = torch.cat([self.lw, self.z])
        for p in self.panels:
            p.clamp_params(low, high, generator=generator)

    def assign_budget(self, budget: Tensor | None = None) -> None:
        """Give ``budget[k]`` to the k-th panel in decreasing-z order (``None``: no-op)."""
        if budget is None:
            return
        budget = torch.as_tensor(budget).reshape(-1)
        if len(budget) != self._n_costs:
            raise ValueError(f"budget must have one entry per panel ({self._n_costs}), got {len(budget)}")
        for k, (_, panel) in enumerate(self.yield_zordered_panels()):
            panel.assign_budget(budget[k])


from .passive_layer import PassiveLayer  # noqa: E402  (re-exported for TomOpt-compatible imports)
