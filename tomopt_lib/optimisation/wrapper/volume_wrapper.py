"""Volume wrappers: ``PanelVolumeWrapper`` (panel detectors), ``HeatMapVolumeWrapper`` (heat maps, defined in
``heatmap_wrapper``) and ``ArbVolumeWrapper`` (ready-made optimisers).

``AbsVolumeWrapper`` (the loops and the hook order) and ``FitParams`` are re-exported here for TomOpt-compatible imports.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ...volume.layer import PanelDetectorLayer
from .abs_wrapper import AbsVolumeWrapper
from .fit_state import FitParams
from .heatmap_wrapper import HeatMapVolumeWrapper

if TYPE_CHECKING:
    from ...volume.volume import Volume

__all__ = ["AbsVolumeWrapper", "PanelVolumeWrapper", "HeatMapVolumeWrapper", "ArbVolumeWrapper", "FitParams"]

PartialOpt = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]


class PanelVolumeWrapper(AbsVolumeWrapper):
    """Wrapper for volumes of ``PanelDetectorLayer`` s: optimisers "xy_pos_opt", "z_pos_opt", "xy_span_opt" over the
    xy, z and xy_span of all panels, and optionally "budget_opt" over ``volume.budget_weights`` (fixed-budget mode,
    ``Volume(..., budget=B)``).

    Args:
        volume: the volume; xy_pos_opt / z_pos_opt / xy_span_opt / budget_opt: partial optimisers
            (e.g. ``functools.partial(torch.optim.SGD, lr=1e-2)``), called with the parameters of their group;
            ``None`` leaves that group out. Other keywords: see :class:`AbsVolumeWrapper`.
    """

    def __init__(
        self,
        volume: Volume,
        *,
        xy_pos_opt: PartialOpt | None,
        z_pos_opt: PartialOpt | None,
        xy_span_opt: PartialOpt | None,
        budget_opt: PartialOpt | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            volume,
            partial_opts={"xy_pos_opt": xy_pos_opt, "z_pos_opt": z_pos_opt, "xy_span_opt": xy_span_opt, "budget_opt": budget_opt},
            **kwargs,
        )

    def _panels(self) -> list[nn.Module]:
        return [p for det in self.volume.get_detectors() if isinstance(det, PanelDetectorLayer) for p in det.panels]

    def _build_opt(self, **kwargs: PartialOpt | None) -> None:
        panels = self._panels()
        if not panels:
            raise ValueError("volume: PanelVolumeWrapper needs a volume with PanelDetectorLayer panels")
        self._add_opts(list(panels), {"xy_pos_opt": "xy", "z_pos_opt": "z", "xy_span_opt": "xy_span"}, kwargs)


class ArbVolumeWrapper(AbsVolumeWrapper):
    """Wrapper taking ready optimisers: ``opts`` maps names to optimisers over parameters of ``volume``.

    Every optimised parameter must belong to ``volume`` (``ValueError`` naming the optimiser otherwise).
    """

    def __init__(self, volume: Volume, *, opts: dict[str, torch.optim.Optimizer], **kwargs: Any) -> None:
        super().__init__(volume, partial_opts={"opts": opts}, **kwargs)

    def _build_opt(self, **kwargs: Any) -> None:
        opts = kwargs["opts"]
        if not isinstance(opts, dict) or not opts:
            raise ValueError(f"opts must be a non-empty dict of name -> optimiser, got {opts!r}")
        own = {id(p) for p in self.volume.parameters()}
        for name, opt in opts.items():
            if not isinstance(opt, torch.optim.Optimizer):
                raise ValueError(f"opts[{name!r}] must be a torch optimiser, got {type(opt)}")
            if any(id(p) not in own for g in opt.param_groups for p in g["params"]):
                raise ValueError(f"opts[{name!r}] optimises parameters that are not parameters of the volume")
        self.opts = dict(opts)
