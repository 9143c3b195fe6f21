"""``AbsVolumeWrapper``: the fit / predict loops shared by all volume wrappers.

Hook order of :meth:`AbsVolumeWrapper.fit` (every hook of TomOpt, in its documented order):

1. ``set_wrapper`` on every callback, then ``on_train_begin``
2. per epoch, ``state = "train"`` (then ``"valid"`` if validation passives are given):
   ``on_epoch_begin``; per passive volume: [``on_volume_batch_begin`` at the start of a volume batch]
   -> load layout -> ``on_volume_begin`` -> per muon batch: generate muons -> ``on_mu_batch_begin`` -> propagate ->
   scatter inference -> ``on_scatter_end`` -> ``volume_inferrer.add_scatters`` -> ``on_mu_batch_end``;
   -> ``on_x0_pred_begin`` -> prediction -> ``on_x0_pred_end`` -> loss -> ``on_volume_end``
   -> (training) backward of ``loss_val / passive_bs`` right away (gradients accumulate over the volume batch);
   at the end of a volume batch: ``mean_loss`` -> ``on_volume_batch_end`` -> (training) ``on_backwards_begin`` ->
   ``on_backwards_end`` -> guarded optimiser step (skipped while ``skip_opt_step``) -> ``conform_detector`` ->
   ``on_step_end``; finally ``on_epoch_end``
3. ``on_train_end``

Differences from TomOpt: gradients are zeroed at ``on_volume_batch_begin`` and each volume is back-propagated as soon
as its loss exists, so at most one volume's graph is alive (memory independent of ``passive_bs``); a callback may
still change ``fit_params.loss_val`` in ``on_volume_end`` before that backward. Empty muon batches, volumes without
reconstructed muons and non-finite losses are skipped with a logged warning; steps with non-finite gradients are
rejected, and a step that produces non-finite parameters is rolled back. A trailing incomplete training batch is
skipped (as in TomOpt); validation uses every volume.
"""

from __future__ import annotations

import logging
import math
from abc import ABCMeta, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast

import torch
from torch import Tensor

from ...checks import passive_batch_fits
from ...inference.scattering import ScatterBatch
from ...inference.x0_base import NoMuonsError
from ...muon.generation import AbsMuonGenerator, MuonGenerator2016
from ...muon.muon_batch import MuonBatch
from ...runtime import make_generator
from ..callbacks.callback import Callback, CyclicCallback
from ..callbacks.eval_metric import EvalMetric
from ..callbacks.monitors import MetricLogger
from ..callbacks.warmup_callbacks import WarmupCallback
from ..data.passives import PassiveData, PassiveYielder
from .fit_state import FitParams
from .guarded_step import GuardedStepMixin
from .mixins import OptimiserAccessMixin
from .utils import (
    VolumeInferrerSpec,
    as_yielder,
    check_int,
    resolve_volume_inferrer,
    seeded_iteration,
)

if TYPE_CHECKING:
    from ...volume.layer import AbsDetectorLayer
    from ...volume.passive_layer import RadLengthFunc
    from ...volume.volume import Volume

__all__ = ["AbsVolumeWrapper"]

logger = logging.getLogger(__name__)


class _PredsCallback(Protocol):
    """What :meth:`AbsVolumeWrapper.predict` needs of ``pred_cb`` besides the hooks: a ``get_preds()`` method."""

    def get_preds(self) -> Any: ...


class AbsVolumeWrapper(GuardedStepMixin, OptimiserAccessMixin, metaclass=ABCMeta):
    """Holds a ``Volume``, its optimisers and loss; optimises the detectors (:meth:`fit`) or predicts (:meth:`predict`).

    Args:
        volume: the volume whose detectors are optimised.
        partial_opts: keyword arguments handed to :meth:`_build_opt`.
        loss_func: detector loss (required by :meth:`fit`).
        partial_scatter_inferrer: class building the scatter inference of a muon batch (``ScatterBatch``).
        partial_volume_inferrer: volume-inferrer class/factory, or a registered name ("poca", "path"); None = PoCA.
        mu_generator: muon generator (default ``MuonGenerator2016.from_volume(volume)``).
        generator: ``torch.Generator`` for muons, panel hits, conform jitter and passive shuffling.
        seed: alternative to ``generator``: seed of a new generator (repeatable runs).
        eval_no_grad: run validation and prediction under ``torch.no_grad()``.
        dead_lr_factor: when a whole training volume batch yields no reconstructed muon (e.g. panels thrown to their
            clamps by too large learning rates), the last usable detector is restored, optimiser states are cleared
            and every learning rate is multiplied by this factor (logged).
    """

    def __init__(
        self,
        volume: Volume,
        *,
        partial_opts: dict[str, Any],
        loss_func: Callable[..., Tensor] | None = None,
        partial_scatter_inferrer: Callable[..., ScatterBatch] = ScatterBatch,
        partial_volume_inferrer: VolumeInferrerSpec = None,
        mu_generator: AbsMuonGenerator | None = None,
        generator: torch.Generator | None = None,
        seed: int | None = None,
        eval_no_grad: bool = True,
        dead_lr_factor: float = 0.1,
    ) -> None:
        if not 0 < dead_lr_factor <= 1:
            raise ValueError(f"dead_lr_factor must be in (0, 1], got {dead_lr_factor!r}")
        self.dead_lr_factor = float(dead_lr_factor)
        self._last_good: list[Tensor] | None = None
        if generator is not None and seed is not None:
            raise ValueError("give at most one of generator and seed")
        self.volume = volume
        self.device = volume.device
        self.loss_func = loss_func
        self.partial_scatter_inferrer = partial_scatter_inferrer
        self.partial_volume_inferrer = resolve_volume_inferrer(partial_volume_inferrer)
        self.mu_generator = (
            mu_generator if mu_generator is not None else MuonGenerator2016.from_volume(volume, device=self.device)
        )
        self.generator = generator if generator is not None else (make_generator(seed, self.device) if seed is not None else None)
        self.eval_no_grad = bool(eval_no_grad)
        self.opts: dict[str, torch.optim.Optimizer] = {}
        self._build_opt(**partial_opts)
        self.fit_params = FitParams(device=self.device)

    def get_detectors(self) -> list[AbsDetectorLayer]:
        """The detector layers of the volume, in layer order (normally decreasing z)."""
        return self.volume.get_detectors()

    # ------------------------------------------------------------------ optimisers
    @abstractmethod
    def _build_opt(self, **kwargs: Any) -> None:
        """Fill ``self.opts`` (name -> optimiser)."""

    # ------------------------------------------------------------------ callbacks
    @staticmethod
    def _sort_cbs(cbs: list[Callback]) -> tuple[list[CyclicCallback], MetricLogger | None, list[EvalMetric]]:
        """(cyclic callbacks, the metric logger or None, evaluation metrics), as TomOpt."""
        cyclic = [c for c in cbs if isinstance(c, CyclicCallback)]
        loggers = [c for c in cbs if isinstance(c, MetricLogger)]
        metrics = [c for c in cbs if isinstance(c, EvalMetric)]
        return cyclic, (loggers[0] if loggers else None), metrics

    def _cb(self, hook: str) -> None:
        for c in self.fit_params.cbs:
            getattr(c, hook)()

    # ------------------------------------------------------------------ loops
    def _gen_mu(self, n: int) -> MuonBatch:
        xy_p_theta_phi = self.mu_generator(n, generator=self.generator)
        return MuonBatch(xy_p_theta_phi, init_z=self.volume.h, device=self.device)

    def _mu_batch_sizes(self) -> list[int]:
        n, bs = self.fit_params.n_mu_per_volume, self.fit_params.mu_bs
        assert n is not None and bs is not None  # set by _setup
        sizes = [bs] * (n // bs)
        return sizes + [n % bs] if n % bs else sizes

    def _scan_volume(self) -> bool:
        """Irradiate the loaded volume, predict and (outside of prediction) compute the loss. False if skipped."""
        fp = self.fit_params
        fp.volume_inferrer = self.partial_volume_inferrer(volume=self.volume)
        fp.n_mu_used = 0
        for i, n in enumerate(self._mu_batch_sizes()):
            fp.mu_batch_id, fp.sb = i, None
            fp.mu = self._gen_mu(n)
            self._cb("on_mu_batch_begin")
            if len(fp.mu) > 0:
                self.volume(fp.mu, generator=self.generator)
            if len(fp.mu) == 0:
                fp.n_skipped_mu_batches += 1
                logger.warning("volume %s, muon batch %d: no muons left after propagation; batch skipped", fp.volume_id, i)
                continue
            fp.sb = self.partial_scatter_inferrer(mu=fp.mu, volume=self.volume)
            if len(fp.sb) == 0:
                fp.n_skipped_mu_batches += 1
                logger.warning("volume %s, muon batch %d: no muon could be reconstructed; batch skipped", fp.volume_id, i)
                continue
            self._cb("on_scatter_end")
            fp.volume_inferrer.add_scatters(fp.sb)
            fp.n_mu_used += len(fp.sb)
            self._cb("on_mu_batch_end")
        fp.mu, fp.sb = None, None
        if fp.n_mu_used == 0:
            logger.warning("volume %s: no reconstructed muons in any batch; volume skipped", fp.volume_id)
            fp.pred, fp.loss_val = None, None
            return False
        self._cb("on_x0_pred_begin")
        try:
            fp.pred = fp.volume_inferrer.get_prediction()
        except NoMuonsError as err:  # every reconstructed muon was left out by the inferrer (e.g. non-finite)
            logger.warning("volume %s: %s; volume skipped", fp.volume_id, err)
            fp.pred, fp.loss_val = None, None
            return False
        self._cb("on_x0_pred_end")
        fp.loss_val = None
        if fp.state != "test" and self.loss_func is not None:
            fp.loss_val = self.loss_func(fp.pred, self.volume)
        self._cb("on_volume_end")
        return True

    def _backward_volume(self) -> float | None:
        """Back-propagate the latest volume's loss / passive_bs (training); its detached value or None if unusable."""
        fp = self.fit_params
        loss = fp.loss_val
        if loss is None:
            return None
        value = float(loss.detach())
        if not math.isfinite(value):
            logger.warning("volume %s: non-finite loss (%s); not back-propagated", fp.volume_id, value)
            fp.loss_val = loss.detach()
            return None
        if fp.state == "train" and not fp.skip_backward and loss.requires_grad:
            assert fp.passive_bs is not None  # set by _setup
            (loss / fp.passive_bs).backward()
        fp.loss_val = loss.detach()
        if isinstance(fp.pred, Tensor):
            fp.pred = fp.pred.detach()
        return value

    def _scan_volumes(self, passives: PassiveYielder) -> None:
        """One pass over ``passives`` in the current ``fit_params.state``, updating the detector in training."""
        fp = self.fit_params
        train = fp.state == "train"
        bs = fp.passive_bs
        assert bs is not None  # set by _setup
        n_use = (len(passives) // bs) * bs if train else len(passives)
        batch_losses: list[float] = []
        for p, (layout, target) in enumerate(passives):
            if p >= n_use:
                break
            if p % bs == 0:
                batch_losses = []
                fp.volume_batch_id = p // bs
                fp.n_volumes_in_batch = min(bs, n_use - p)
                if train:
                    self._zero_grad()
                self._cb("on_volume_batch_begin")
            fp.volume_id = p
            self.volume.load_rad_length(layout, target)
            self._cb("on_volume_begin")
            if self._scan_volume():
                val = self._backward_volume()
                if val is not None:
                    batch_losses.append(val)
            if (p + 1) % bs == 0 or p + 1 == n_use:
                if fp.state != "test":
                    denom = bs if train else len(batch_losses)
                    mean = sum(batch_losses) / denom if batch_losses else math.nan
                    fp.mean_loss = torch.tensor(mean, device=self.device)
                self._cb("on_volume_batch_end")
                if train:
                    self._cb("on_backwards_begin")
                    self._cb("on_backwards_end")
                    if batch_losses:
                        self._snapshot()
                        self._step()
                    else:
                        self._recover()
                    self._cb("on_step_end")

    def _run_state(self, state: str, passives: PassiveYielder, shuffle: bool | None = None) -> None:
        fp = self.fit_params
        fp.state = state
        fp.passives = passives
        self.volume.train(state == "train")
        self._cb("on_epoch_begin")
        grad_ctx = torch.no_grad() if (state != "train" and self.eval_no_grad) else torch.enable_grad()
        with grad_ctx, seeded_iteration(passives, self.generator, shuffle):
            self._scan_volumes(passives)
        self._cb("on_epoch_end")

    def _fit_epoch(self) -> None:
        fp = self.fit_params
        fp.epoch += 1
        assert fp.trn_passives is not None  # set by fit
        self._run_state("train", fp.trn_passives)
        if fp.val_passives is not None:
            self._run_state("valid", fp.val_passives)

    def _setup(self, cbs: list[Callback] | None, **kwargs: Any) -> list[Callback]:
        cbs = [] if cbs is None else (list(cbs) if isinstance(cbs, (list, tuple)) else [cbs])
        cyclic, metric_log, metric_cbs = self._sort_cbs(cbs)
        warmup = [c for c in cbs if isinstance(c, WarmupCallback)]
        self.fit_params = FitParams(
            cbs=cbs,
            cyclic_cbs=cyclic,
            metric_log=metric_log,
            metric_cbs=metric_cbs,
            warmup_cbs=warmup,
            warmup_done=not warmup,
            device=self.device,
            generator=self.generator,
            **kwargs,
        )
        for c in cbs:
            c.set_wrapper(self)
        return cbs

    def fit(
        self,
        n_epochs: int,
        passive_bs: int,
        n_mu_per_volume: int,
        mu_bs: int,
        trn_passives: PassiveYielder | Sequence[RadLengthFunc | PassiveData],
        val_passives: PassiveYielder | Sequence[RadLengthFunc | PassiveData] | None = None,
        cbs: list[Callback] | None = None,
        cb_savepath: str | Path = Path("train_weights"),
        *,
        seed: int | None = None,
    ) -> list[Callback]:
        """Optimise the detectors for ``n_epochs`` epochs; returns the callbacks. ``seed`` re-seeds the wrapper."""
        n_epochs = check_int("n_epochs", n_epochs, 0)
        passive_bs = check_int("passive_bs", passive_bs)
        n_mu_per_volume = check_int("n_mu_per_volume", n_mu_per_volume)
        mu_bs = check_int("mu_bs", mu_bs)
        if self.loss_func is None:
            raise ValueError("loss_func: the wrapper has no loss function; give one to optimise the detectors")
        trn = as_yielder("trn_passives", trn_passives)
        if not passive_batch_fits(passive_bs, len(trn)):
            raise ValueError(f"passive_bs={passive_bs} exceeds the {len(trn)} training passives (no update possible)")
        val = as_yielder("val_passives", val_passives) if val_passives is not None else None
        if seed is not None:
            self.generator = make_generator(seed, self.device)
        cbs = self._setup(
            cbs,
            n_epochs=n_epochs,
            passive_bs=passive_bs,
            n_mu_per_volume=n_mu_per_volume,
            mu_bs=mu_bs,
            trn_passives=trn,
            val_passives=val,
            cb_savepath=Path(cb_savepath),
        )
        self._cb("on_train_begin")
        for _ in range(n_epochs):
            self._fit_epoch()
            if self.fit_params.stop:
                logger.info("fit stopped by a callback after epoch %d", self.fit_params.epoch)
                break
        self.volume.train()
        self._ensure_usable()
        self._cb("on_train_end")
        return cbs

    def predict(
        self,
        passives: PassiveYielder | Sequence[RadLengthFunc | PassiveData],
        n_mu_per_volume: int,
        mu_bs: int,
        pred_cb: Callback | None = None,
        cbs: list[Callback] | None = None,
        cb_savepath: str | Path = Path("train_weights"),
    ) -> Any:
        """Predict every passive of ``passives`` with the current detector (no shuffling); ``pred_cb.get_preds()``.

        ``cb_savepath``: where callbacks may write (``fit_params.cb_savepath``), as in :meth:`fit`.
        """
        from ..callbacks.pred_callbacks import PredHandler

        tst = as_yielder("passives", passives, shuffle=False)
        n_mu_per_volume = check_int("n_mu_per_volume", n_mu_per_volume)
        mu_bs = check_int("mu_bs", mu_bs)
        pred_cb = PredHandler() if pred_cb is None else pred_cb
        all_cbs = self._setup(
            (list(cbs) if cbs else []) + [pred_cb],
            passive_bs=1,
            n_mu_per_volume=n_mu_per_volume,
            mu_bs=mu_bs,
            tst_passives=tst,
            cb_savepath=Path(cb_savepath),
        )
        self._cb("on_pred_begin")
        self._run_state("test", tst, shuffle=False)
        self._cb("on_pred_end")
        del all_cbs
        return cast(_PredsCallback, pred_cb).get_preds()
