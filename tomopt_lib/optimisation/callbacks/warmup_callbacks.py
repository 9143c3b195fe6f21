"""Warm-up callbacks (detector frozen while they monitor the fit) and the post-warm-up base class.

Several warm-up callbacks run one after the other in the order given; while any is active
``fit_params.skip_opt_step`` is True. When the last finishes, ``fit_params.warmup_done`` is set and updates resume.
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, cast

import numpy as np
import torch

from .callback import Callback

if TYPE_CHECKING:
    from ..loss.loss import AbsDetectorLoss

__all__ = ["WarmupCallback", "CostCoefWarmup", "OptConfig", "PostWarmupCallback"]

logger = logging.getLogger(__name__)


class WarmupCallback(Callback):
    """Base warm-up callback: active for ``n_warmup`` training epochs, during which parameter updates are skipped.

    Subclasses overriding ``on_train_begin`` / ``on_epoch_begin`` / ``on_epoch_end`` must call the super methods;
    :meth:`_on_warmup_end` is called once when the warm-up finishes.
    """

    def __init__(self, n_warmup: int) -> None:
        super().__init__()
        if isinstance(n_warmup, bool) or int(n_warmup) != n_warmup or n_warmup < 0:
            raise ValueError(f"n_warmup must be an integer >= 0, got {n_warmup!r}")
        self.n_warmup = int(n_warmup)
        self.warmup_active = False
        self.epoch_cnt = 0
        self.finished = False

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n_warmup={self.n_warmup})"

    def _on_warmup_end(self) -> None:
        """Hook for subclasses: the warm-up just finished."""

    def on_train_begin(self) -> None:
        """Reset; once all warm-up callbacks are reset (at the last one) the first becomes active and freezes the
        detector."""
        self.warmup_active, self.epoch_cnt, self.finished = False, 0, False
        fp = self.wrapper.fit_params
        if fp.warmup_cbs and fp.warmup_cbs[-1] is self:
            fp.warmup_done = False
            self._activate_from(0)

    def _activate_from(self, idx: int) -> None:
        """Activate the first unfinished warm-up callback from ``idx`` on (finishing zero-length ones at once)."""
        fp = self.wrapper.fit_params
        for cb in fp.warmup_cbs[idx:]:
            if cb.n_warmup > 0:
                cb.warmup_active = True
                fp.skip_opt_step = fp.warmup_active = True
                return
            cb.finished = True
            cb._on_warmup_end()
        fp.skip_opt_step = fp.warmup_active = False
        fp.warmup_done = True
        logger.info("warm-up finished; detector updates enabled")

    def check_warmups(self) -> None:
        """If this callback's warm-up is complete, deactivate it and hand over to the next one (or end the warm-up)."""
        if not self.warmup_active or self.epoch_cnt < self.n_warmup:
            return
        self.warmup_active, self.finished = False, True
        self._on_warmup_end()
        cbs = self.wrapper.fit_params.warmup_cbs
        self._activate_from(cbs.index(self) + 1)

    def on_epoch_begin(self) -> None:
        """At a training epoch start, note whether this warm-up is active for the whole epoch."""
        if self.wrapper.fit_params.state == "train":
            self._counting = self.warmup_active

    def on_epoch_end(self) -> None:
        """Count training epochs that were active from their start; finish when ``n_warmup`` are done."""
        if self.wrapper.fit_params.state != "train" or not getattr(self, "_counting", False):
            return
        self._counting = False
        self.epoch_cnt += 1
        self.check_warmups()


class CostCoefWarmup(WarmupCallback):
    """Sets ``loss_func.cost_coef`` to the median inference error of the training volumes seen during the warm-up."""

    def on_train_begin(self) -> None:
        """Reset the record of errors."""
        self.errors: list[float] = []
        super().on_train_begin()

    def on_volume_end(self) -> None:
        """While active in training, record the error component of the latest volume's loss."""
        if not self.warmup_active or self.wrapper.fit_params.state != "train":
            return
        err = getattr(self.wrapper.loss_func, "sub_losses", {}).get("error")
        if err is not None and math.isfinite(float(err)):
            self.errors.append(float(err))

    def _on_warmup_end(self) -> None:
        loss = cast("AbsDetectorLoss", self.wrapper.loss_func)  # a loss with a cost_coef (AbsDetectorLoss-like)
        if not self.errors:
            logger.warning("CostCoefWarmup: no finite error recorded; cost_coef left at %s", loss.cost_coef)
            return
        coef = float(np.median(self.errors))
        loss.cost_coef = torch.tensor(coef, device=self.wrapper.device)
        logger.info("CostCoefWarmup: cost_coef set to the median error %.6g (%d volumes)", coef, len(self.errors))


class OptConfig(WarmupCallback):
    """Sets each optimiser's learning rate so that an update moves its parameters by ``rates[name]`` (physical units).

    During the warm-up the mean |gradient| of each optimiser's parameters is recorded at every (skipped) update;
    afterwards lr = rate / median(|gradient|). Momentum and adaptive optimisers are not accounted for.

    Args:
        n_warmup: warm-up training epochs.
        rates: optimiser name -> desired update per step.
    """

    def __init__(self, n_warmup: int, rates: dict[str, float]) -> None:
        super().__init__(n_warmup)
        if not rates or not all(float(v) > 0 for v in rates.values()):
            raise ValueError(f"rates must be a non-empty dict of optimiser name -> rate > 0, got {rates!r}")
        self.rates = {k: float(v) for k, v in rates.items()}
        self.grads: dict[str, list[float]] = {}

    def __repr__(self) -> str:
        return f"OptConfig(n_warmup={self.n_warmup}, rates={self.rates})"

    def on_train_begin(self) -> None:
        """Check the optimiser names and reset the gradient record."""
        missing = [k for k in self.rates if k not in self.wrapper.opts]
        if missing:
            raise ValueError(f"rates: no optimiser named {missing} in the wrapper; available: {sorted(self.wrapper.opts)}")
        self.grads = {k: [] for k in self.rates}
        super().on_train_begin()

    def on_backwards_end(self) -> None:
        """While active in training, record the mean |gradient| per optimiser."""
        if not self.warmup_active or self.wrapper.fit_params.state != "train":
            return
        for name in self.rates:
            gs = [
                p.grad.detach().abs().reshape(-1) for p in self.wrapper.opts[name].param_groups[0]["params"] if p.grad is not None
            ]
            if gs:
                g = torch.cat(gs)
                g = g[torch.isfinite(g)]
                if g.numel():
                    self.grads[name].append(float(g.mean()))

    def _on_warmup_end(self) -> None:
        for name, rate in self.rates.items():
            med = float(np.median(self.grads[name])) if self.grads.get(name) else 0.0
            if med > 0 and math.isfinite(med):
                self.wrapper.set_opt_lr(rate / med, name)
                logger.info("OptConfig: %s lr set to %.4g (rate %.4g / median |grad| %.4g)", name, rate / med, rate, med)
            else:
                logger.warning("OptConfig: no usable gradient for %s; lr left at %.4g", name, self.wrapper.get_opt_lr(name))


class PostWarmupCallback(Callback):
    """Base of callbacks that become active (``self.active``) once all warm-up callbacks have finished."""

    def __init__(self) -> None:
        super().__init__()
        self.active = False

    def check_warmups(self) -> None:
        """Become active when there is no warm-up or all warm-ups are done."""
        fp = self.wrapper.fit_params
        if not self.active and (not fp.warmup_cbs or fp.warmup_done):
            self.active = True
            self._on_activate()

    def _on_activate(self) -> None:
        """Hook for subclasses: the callback just became active."""

    def on_train_begin(self) -> None:
        """Reset; inactive until the warm-ups end."""
        self.active = False

    def on_epoch_begin(self) -> None:
        """Check whether the warm-ups have finished."""
        self.check_warmups()
