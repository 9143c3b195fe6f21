"""Callbacks acting on the panels of the detector: ``PanelCentring`` and ``SigmoidPanelSmoothnessSchedule`` (and
``PanelUpdateLimiter``, defined in :mod:`.grad_callbacks`, re-exported here at TomOpt's path)."""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from typing import TYPE_CHECKING

import numpy as np
import torch

from ...volume.layer import PanelDetectorLayer
from ...volume.panel import SigmoidDetectorPanel
from .callback import Callback
from .grad_callbacks import PanelUpdateLimiter
from .warmup_callbacks import PostWarmupCallback

if TYPE_CHECKING:
    from ...volume.volume import Volume

__all__ = ["PanelCentring", "PanelUpdateLimiter", "SigmoidPanelSmoothnessSchedule", "iter_sigmoid_panels"]

logger = logging.getLogger(__name__)


def iter_sigmoid_panels(volume: Volume) -> Iterator[SigmoidDetectorPanel]:
    """All ``SigmoidDetectorPanel`` s of the panel detector layers of ``volume``, in layer order."""
    for det in volume.get_detectors():
        for panel in getattr(det, "panels", []):
            if isinstance(panel, SigmoidDetectorPanel):
                yield panel


class PanelCentring(Callback):
    """After every optimiser step, moves every panel of each ``PanelDetectorLayer`` to the mean xy of its layer's panels
    (z and spans are unchanged), keeping the panels of a layer stacked on one axis."""

    def on_step_end(self) -> None:
        """Set every panel's ``xy`` to the mean ``xy`` of the panels of its layer."""
        for det in self.wrapper.volume.get_detectors():
            if not isinstance(det, PanelDetectorLayer):
                continue
            with torch.no_grad():
                mean_xy = torch.stack([p.xy.detach() for p in det.panels]).mean(0)
                if not bool(torch.isfinite(mean_xy).all()):
                    logger.warning("PanelCentring: non-finite mean xy in layer %r; panels left unchanged", det.pos)
                    continue
                for p in det.panels:
                    p.xy.copy_(mean_xy)


class SigmoidPanelSmoothnessSchedule(PostWarmupCallback):
    """Anneals the ``smooth`` of every ``SigmoidDetectorPanel`` from ``smooth_range[0]`` to ``smooth_range[1]``.

    At ``on_train_begin`` all sigmoid panels get the initial value; once every warm-up callback has finished
    (``fit_params.warmup_done``, or no warm-up callbacks), the start of each training epoch sets the next value of a
    base-10 log-spaced schedule over the ``n_epochs - n_warmup`` post-warm-up epochs (``n_warmup`` = sum of the
    warm-up callbacks' ``n_warmup``). Moves from smooth, unphysically sensitive panels to sharp-edged, physical ones.

    Args:
        smooth_range: (initial, final) smoothness, both > 0.
    """

    def __init__(self, smooth_range: tuple[float, float]) -> None:
        super().__init__()
        try:
            s0, s1 = (float(v) for v in smooth_range)
        except (TypeError, ValueError):
            raise ValueError(f"smooth_range must be two numbers (initial, final), got {smooth_range!r}") from None
        if not all(math.isfinite(s) and s > 0 for s in (s0, s1)):
            raise ValueError(f"smooth_range must be two finite numbers > 0, got {(s0, s1)}")
        self.smooth_range = (s0, s1)
        self.schedule: list[float] = []
        self.epoch_cnt = 0

    def __repr__(self) -> str:
        return f"SigmoidPanelSmoothnessSchedule(smooth_range={self.smooth_range})"

    def _set_smooth(self, smooth: float) -> None:
        for panel in iter_sigmoid_panels(self.wrapper.volume):
            panel.smooth = smooth

    def _n_warmup(self) -> int:
        return int(sum(int(getattr(cb, "n_warmup", 0)) for cb in self.wrapper.fit_params.warmup_cbs))

    def on_train_begin(self) -> None:
        """Set every sigmoid panel to the initial smoothness and build the post-warm-up schedule."""
        super().on_train_begin()
        fp = self.wrapper.fit_params
        n_epochs = fp.n_epochs if fp.n_epochs is not None else 1
        n_sched = max(int(n_epochs) - self._n_warmup(), 1)
        s0, s1 = self.smooth_range
        self.schedule = np.logspace(math.log10(s0), math.log10(s1), n_sched).tolist()
        self.epoch_cnt = 0
        self._set_smooth(s0)
        if not any(True for _ in iter_sigmoid_panels(self.wrapper.volume)):
            logger.warning("SigmoidPanelSmoothnessSchedule: the volume has no SigmoidDetectorPanel; nothing to anneal")

    def on_epoch_begin(self) -> None:
        """At the start of each post-warm-up training epoch, set the next smoothness of the schedule."""
        super().on_epoch_begin()
        if self.wrapper.fit_params.state != "train":
            return
        if not self.active or not self.schedule:
            return
        self._set_smooth(self.schedule[min(self.epoch_cnt, len(self.schedule) - 1)])
        self.epoch_cnt += 1
