"""``HeatMapVolumeWrapper``: optimises volumes of heat-map detectors (``tomopt_lib.volume.heatmap``).

Optimiser groups (TomOpt's names): "mu_opt" over the component centres ``mu`` of every heat map, "norm_opt" over the
amplitudes ``norm``, "sig_opt" over the widths ``sig``, "z_pos_opt" over the heights ``z``, and optionally "budget_opt"
over ``volume.budget_weights`` (fixed-budget mode, ``Volume(..., budget=B)``). After every update the wrapper calls
``conform_detector`` on each layer, which clamps the heat maps to their layer (``DetectorHeatMap.clamp_params``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from ...volume.heatmap import DetectorHeatMap
from ...volume.heatmap_layer import heatmap_layers
from .abs_wrapper import AbsVolumeWrapper

if TYPE_CHECKING:
    from ...volume.volume import Volume

__all__ = ["HeatMapVolumeWrapper"]

PartialOpt = Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer]


class HeatMapVolumeWrapper(AbsVolumeWrapper):
    """Wrapper for volumes with ``DetectorHeatMap`` detectors (in ``HeatMapDetectorLayer`` s).

    Args:
        volume: the volume; it must hold at least one heat-map layer.
        mu_opt / norm_opt / sig_opt / z_pos_opt / budget_opt: partial optimisers (e.g.
            ``functools.partial(torch.optim.SGD, lr=1e-2)``) called with the parameters of their group (see the module
            docstring); ``None`` leaves that group out.
        loss_func: detector loss (required by ``fit``). Other keywords: see :class:`AbsVolumeWrapper`
            (``partial_scatter_inferrer``, ``partial_volume_inferrer``, ``mu_generator``, ``generator`` / ``seed``, ...).
    """

    def __init__(
        self,
        volume: Volume,
        *,
        mu_opt: PartialOpt | None,
        norm_opt: PartialOpt | None,
        sig_opt: PartialOpt | None,
        z_pos_opt: PartialOpt | None,
        budget_opt: PartialOpt | None = None,
        loss_func: Callable[..., torch.Tensor] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            volume,
            partial_opts={
                "mu_opt": mu_opt,
                "norm_opt": norm_opt,
                "sig_opt": sig_opt,
                "z_pos_opt": z_pos_opt,
                "budget_opt": budget_opt,
            },
            loss_func=loss_func,
            **kwargs,
        )

    def _heatmaps(self) -> list[DetectorHeatMap]:
        return [hm for layer in heatmap_layers(self.volume.get_detectors()) for hm in layer.panels]

    def _build_opt(self, **kwargs: PartialOpt | None) -> None:
        maps = self._heatmaps()
        if not maps:
            raise ValueError("volume: HeatMapVolumeWrapper needs a volume with DetectorHeatMap layers")
        self._add_opts(list(maps), {"mu_opt": "mu", "norm_opt": "norm", "sig_opt": "sig", "z_pos_opt": "z"}, kwargs)
