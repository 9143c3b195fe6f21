"""Update guards: ``NoMoreNaNs`` (zero NaN gradients) and ``PanelUpdateLimiter`` (cap per-step panel changes)."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from ...volume.heatmap_layer import heatmap_layers
from ...volume.layer import PanelDetectorLayer
from .callback import Callback

if TYPE_CHECKING:
    from ...volume.panel import DetectorPanel
    from ...volume.volume import Volume

__all__ = ["NoMoreNaNs", "PanelUpdateLimiter"]

logger = logging.getLogger(__name__)


def _panels(volume: Volume) -> Iterator[DetectorPanel]:
    for det in volume.get_detectors():
        if isinstance(det, PanelDetectorLayer):
            yield from det.panels


class NoMoreNaNs(Callback):
    """After the backward, replaces NaN gradients of the panel and heat-map parameters and of ``budget_weights`` with 0."""

    def on_backwards_end(self) -> None:
        """Zero the NaN gradient elements (logged at DEBUG level)."""
        vol = self.wrapper.volume
        params: list[Tensor] = [p for panel in _panels(vol) for p in (panel.xy, panel.z, panel.xy_span)]
        params += [p for layer in heatmap_layers(vol.get_detectors()) for hm in layer.panels for p in hm.parameters()]
        if getattr(vol, "budget_weights", None) is not None:
            params.append(vol.budget_weights)
        n_bad = 0
        for p in params:
            if p.grad is not None:
                bad = torch.isnan(p.grad)
                if bool(bad.any()):
                    n_bad += int(bad.sum())
                    p.grad.masked_fill_(bad, 0.0)
        if n_bad:
            logger.debug("NoMoreNaNs: %d NaN gradient elements set to 0", n_bad)


Step = float | Sequence[float] | None


class PanelUpdateLimiter(Callback):
    """Hard-clamps the change of each panel parameter per update step.

    Args:
        max_xy_step: max |change| of xy per step (float or (x, y)) [m]; None = unlimited.
        max_z_step: max |change| of z per step [m]; None = unlimited.
        max_xy_span_step: max |change| of xy_span per step (float or (x, y)) [m]; None = unlimited.
    """

    def __init__(self, max_xy_step: Step = None, max_z_step: Step = None, max_xy_span_step: Step = None) -> None:
        super().__init__()
        for name, v in (("max_xy_step", max_xy_step), ("max_z_step", max_z_step), ("max_xy_span_step", max_xy_span_step)):
            if v is not None and not bool((torch.as_tensor(v, dtype=torch.float64) >= 0).all()):
                raise ValueError(f"{name} must be None or >= 0, got {v!r}")
        self.limits = {"xy": max_xy_step, "z": max_z_step, "xy_span": max_xy_span_step}
        self.panel_params: list[tuple[nn.Module, dict]] = []

    def __repr__(self) -> str:
        return f"PanelUpdateLimiter({self.limits})"

    def on_backwards_end(self) -> None:
        """Record the panel parameters before the update."""
        self.panel_params = [
            (p, {k: getattr(p, k).detach().clone() for k, lim in self.limits.items() if lim is not None})
            for p in _panels(self.wrapper.volume)
        ]

    def on_step_end(self) -> None:
        """Clamp each parameter to within its limit of the value before the update."""
        if self.wrapper.fit_params.state != "train":
            return
        with torch.no_grad():
            for panel, old in self.panel_params:
                for k, prev in old.items():
                    lim = torch.as_tensor(self.limits[k], dtype=prev.dtype, device=prev.device)
                    par = getattr(panel, k)
                    par.copy_(torch.minimum(torch.maximum(par, prev - lim), prev + lim))
        self.panel_params = []
