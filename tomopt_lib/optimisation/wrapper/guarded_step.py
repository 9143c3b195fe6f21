"""The volume wrappers' guarded optimiser step: updates with non-finite gradients are rejected, an update that gives
non-finite parameters is rolled back, and a detector that reconstructs no muon is replaced by the last usable one (with
smaller learning rates). Mixed into :class:`~.abs_wrapper.AbsVolumeWrapper`."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from .utils import conform, grads_finite, opt_params

if TYPE_CHECKING:
    from ...muon.muon_batch import MuonBatch
    from ...volume.volume import Volume
    from .fit_state import FitParams

__all__ = ["GuardedStepMixin"]

logger = logging.getLogger(__name__)


class GuardedStepMixin:
    """Optimiser step, snapshot / recovery of the last usable detector and gradient zeroing of a volume wrapper.

    Expects ``self.opts`` (name -> optimiser), ``self.volume``, ``self.generator``, ``self.fit_params``,
    ``self.dead_lr_factor``, ``self.partial_scatter_inferrer`` and ``self._gen_mu`` (the wrapper's muon source)."""

    opts: dict[str, torch.optim.Optimizer]
    volume: Volume
    generator: torch.Generator | None
    fit_params: FitParams
    dead_lr_factor: float
    partial_scatter_inferrer: Callable[..., Any]
    _last_good: list[Tensor] | None

    if TYPE_CHECKING:

        def _gen_mu(self, n: int) -> MuonBatch: ...

    def _step(self) -> None:
        """Guarded optimiser step: reject non-finite gradients, roll back non-finite parameters, then conform."""
        fp = self.fit_params
        params = opt_params(self.opts)
        if not fp.skip_opt_step:
            if not any(p.grad is not None for p in params):
                logger.warning("epoch %d: no gradients in the volume batch; update skipped", fp.epoch)
            elif not grads_finite(params):
                fp.n_rejected_updates += 1
                logger.warning("epoch %d: non-finite gradients; update rejected (parameters unchanged)", fp.epoch)
            else:
                saved = [p.detach().clone() for p in params]
                for opt in self.opts.values():
                    opt.step()
                if all(bool(torch.isfinite(p).all()) for p in params):
                    fp.n_updates += 1
                else:
                    with torch.no_grad():
                        for p, s in zip(params, saved):
                            p.copy_(s)
                    fp.n_rejected_updates += 1
                    logger.warning("epoch %d: the update gave non-finite parameters; rolled back", fp.epoch)
        with torch.no_grad():
            conform(self.volume, self.generator)

    def _snapshot(self) -> None:
        """Remember the current (usable) detector parameters."""
        self._last_good = [p.detach().clone() for p in opt_params(self.opts)]

    def _recover(self) -> None:
        """Restore the last usable detector, clear optimiser states and scale the learning rates down."""
        fp = self.fit_params
        fp.n_recoveries += 1
        if self._last_good is not None:
            with torch.no_grad():
                for p, s in zip(opt_params(self.opts), self._last_good):
                    p.copy_(s)
        for opt in self.opts.values():
            opt.state.clear()
            for g in opt.param_groups:
                g["lr"] = g["lr"] * self.dead_lr_factor
        logger.warning(
            "epoch %d: no muon of the volume batch could be reconstructed; restored the last usable detector "
            "and scaled every learning rate by %g",
            fp.epoch,
            self.dead_lr_factor,
        )

    def _ensure_usable(self) -> None:
        """End-of-fit check: if one muon batch through the detector gives no reconstructed muon, restore the last
        usable detector."""
        if self._last_good is None:
            return
        with torch.no_grad():
            mu_bs = self.fit_params.mu_bs
            assert mu_bs is not None  # set by _setup
            mu = self._gen_mu(mu_bs)
            self.volume(mu, generator=self.generator)
            n = len(self.partial_scatter_inferrer(mu=mu, volume=self.volume)) if len(mu) else 0
            if n == 0:
                for p, s in zip(opt_params(self.opts), self._last_good):
                    p.copy_(s)
                self.fit_params.n_recoveries += 1
                logger.warning("final detector reconstructs no muon; restored the last usable detector")

    def _zero_grad(self) -> None:
        for opt in self.opts.values():
            opt.zero_grad(set_to_none=True)
        self.volume.zero_grad(set_to_none=True)
