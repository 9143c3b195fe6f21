"""Optimiser-related callbacks: the 1-cycle schedule ``OneCycle`` and per-epoch checkpoints ``EpochSave``."""

from __future__ import annotations

import logging
import math
from pathlib import Path

from .callback import Callback, CyclicCallback
from .warmup_callbacks import PostWarmupCallback

__all__ = ["OneCycle", "EpochSave"]

logger = logging.getLogger(__name__)


def _cos_interp(start: float | None, end: float | None, t: float) -> float | None:
    """Cosine interpolation from ``start`` (t=0) to ``end`` (t=1); None if either is None."""
    if start is None or end is None:
        return None
    t = min(max(t, 0.0), 1.0)
    return end + (start - end) * (1 + math.cos(math.pi * t)) / 2


class OneCycle(PostWarmupCallback, CyclicCallback):
    """Smith 1-cycle schedule of the learning rate and momentum (beta1) of optimiser ``opt_name`` per update step.

    After the warm-up callbacks: over ``warmup_length`` epochs lr rises init_lr -> mid_lr while momentum falls
    init_mom -> mid_mom (cosine); over the remaining epochs lr falls mid_lr -> final_lr and momentum rises
    mid_mom -> final_mom. ``None`` values leave that quantity untouched.
    """

    def __init__(
        self,
        opt_name: str,
        warmup_length: int,
        init_lr: float | None = None,
        init_mom: float | None = None,
        mid_lr: float | None = None,
        mid_mom: float | None = None,
        final_lr: float | None = None,
        final_mom: float | None = None,
    ) -> None:
        super().__init__()
        if int(warmup_length) != warmup_length or warmup_length < 0:
            raise ValueError(f"warmup_length must be an integer >= 0 (epochs), got {warmup_length!r}")
        self.opt_name, self.warmup_length = opt_name, int(warmup_length)
        self.init_lr, self.mid_lr, self.final_lr = init_lr, mid_lr, final_lr
        self.init_mom, self.mid_mom, self.final_mom = init_mom, mid_mom, final_mom
        self.iter_cnt, self.n_warmup_steps, self.n_total_steps = 0, 0, 1
        self.hist: list = []

    def __repr__(self) -> str:
        return f"OneCycle(opt_name={self.opt_name!r}, warmup_length={self.warmup_length})"

    def on_train_begin(self) -> None:
        """Check the optimiser name and reset the step counter."""
        super().on_train_begin()
        self.wrapper._check_opt(self.opt_name)
        self.iter_cnt, self.hist = 0, []

    def _on_activate(self) -> None:
        fp = self.wrapper.fit_params
        assert fp.passive_bs is not None  # set by _setup
        nb = max(len(fp.trn_passives) // fp.passive_bs, 1) if fp.trn_passives is not None else 1
        n_wu = sum(c.n_warmup for c in fp.warmup_cbs)
        n_epochs = max((fp.n_epochs or 1) - n_wu, 1)
        self.n_warmup_steps = self.warmup_length * nb
        self.n_total_steps = max(n_epochs * nb, self.n_warmup_steps + 1)

    def schedule(self) -> tuple[float | None, float | None]:
        """(lr, momentum) at the current step ``iter_cnt``."""
        if self.iter_cnt < self.n_warmup_steps:
            t = self.iter_cnt / max(self.n_warmup_steps, 1)
            return _cos_interp(self.init_lr, self.mid_lr, t), _cos_interp(self.init_mom, self.mid_mom, t)
        n_conv = max(self.n_total_steps - self.n_warmup_steps - 1, 1)
        t = (self.iter_cnt - self.n_warmup_steps) / n_conv
        return _cos_interp(self.mid_lr, self.final_lr, t), _cos_interp(self.mid_mom, self.final_mom, t)

    def on_volume_batch_begin(self) -> None:
        """Before each training update (once active), set the scheduled lr and momentum."""
        if not self.active or self.wrapper.fit_params.state != "train":
            return
        lr, mom = self.schedule()
        if lr is not None:
            self.wrapper.set_opt_lr(lr, self.opt_name)
        if mom is not None:
            self.wrapper.set_opt_mom(mom, self.opt_name)
        self.hist.append((lr, mom))

    def on_step_end(self) -> None:
        """Advance the schedule by one update."""
        if self.active and self.wrapper.fit_params.state == "train":
            self.iter_cnt += 1


class EpochSave(Callback):
    """Saves the wrapper state after every training epoch to ``cb_savepath / volume_state_{epoch}.pt``."""

    def on_epoch_end(self) -> None:
        """Save after a training epoch."""
        fp = self.wrapper.fit_params
        if fp.state != "train":
            return
        path = Path(fp.cb_savepath if fp.cb_savepath is not None else "train_weights")
        path.mkdir(parents=True, exist_ok=True)
        name = path / f"volume_state_{fp.epoch}.pt"
        self.wrapper.save(name)
        logger.info("EpochSave: saved %s", name)
