"""Typed state shared between a volume wrapper and its callbacks during ``fit`` / ``predict``."""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

if TYPE_CHECKING:  # pragma: no cover
    from ...inference.scattering import ScatterBatch
    from ...inference.x0_base import AbsVolumeInferrer
    from ...muon.muon_batch import MuonBatch
    from ..callbacks.callback import Callback, CyclicCallback
    from ..callbacks.eval_metric import EvalMetric
    from ..callbacks.monitors import MetricLogger
    from ..callbacks.warmup_callbacks import WarmupCallback
    from ..data.passives import PassiveYielder

__all__ = ["FitParams", "STATES"]

STATES = ("train", "valid", "test")
"""Allowed values of :attr:`FitParams.state`."""


@dataclass(init=False)
class FitParams:
    """Everything a fit or a prediction is made of; callbacks read/write it via ``self.wrapper.fit_params``.

    Loop position: ``state`` ("train" / "valid" / "test"), ``epoch`` (1-based, counted in training), ``n_epochs``,
    ``volume_id`` (index of the passive in the current pass), ``volume_batch_id``, ``mu_batch_id``.
    Per muon batch: ``mu`` (the :class:`MuonBatch`; a callback may replace it in ``on_mu_batch_begin``), ``sb``
    (its :class:`ScatterBatch`). Per volume: ``volume_inferrer``, ``pred`` (its prediction), ``loss_val`` (the volume's
    loss; a tensor with its graph until the per-volume backward, detached afterwards), ``n_mu_used``. Per volume
    batch: ``mean_loss`` (detached mean loss of the batch, set before ``on_volume_batch_end``), ``n_volumes_in_batch``.
    Control flags callbacks may set: ``stop`` (end the fit after the current epoch), ``skip_opt_step`` (no parameter
    update, e.g. during warm-up), ``skip_backward`` (no backward at all).
    Bookkeeping: ``n_updates`` (parameter updates done), ``n_rejected_updates`` (non-finite updates rolled back),
    ``n_skipped_mu_batches`` (empty muon batches skipped), ``n_recoveries`` (restorations of the last
    usable detector after a training batch in which no muon could be reconstructed), ``warmup_active`` / ``warmup_done`` (set by the warm-up
    callbacks: a warm-up callback is running / all warm-ups have finished).
    Extra keyword arguments become plain attributes (TomOpt's ``FitParams(**kwargs)``), e.g. for custom callbacks.
    """

    state: str | None = None
    epoch: int = 0
    n_epochs: int | None = None
    volume_id: int | None = None
    volume_batch_id: int = 0
    mu_batch_id: int = 0
    # data
    passives: PassiveYielder | None = None
    trn_passives: PassiveYielder | None = None
    val_passives: PassiveYielder | None = None
    tst_passives: PassiveYielder | None = None
    passive_bs: int | None = None
    n_mu_per_volume: int | None = None
    mu_bs: int | None = None
    # per batch / volume objects
    mu: MuonBatch | None = None
    sb: ScatterBatch | None = None
    volume_inferrer: AbsVolumeInferrer | None = None
    pred: Tensor | None = None
    loss_val: Tensor | None = None
    mean_loss: Tensor | None = None
    n_mu_used: int = 0
    n_volumes_in_batch: int = 0
    # callbacks
    cbs: list[Callback] = field(default_factory=list)
    cyclic_cbs: list[CyclicCallback] = field(default_factory=list)
    warmup_cbs: list[WarmupCallback] = field(default_factory=list)
    metric_cbs: list[EvalMetric] = field(default_factory=list)
    metric_log: MetricLogger | None = None
    cb_savepath: Path | None = None
    # control flags
    stop: bool = False
    skip_opt_step: bool = False
    skip_backward: bool = False
    # bookkeeping
    n_updates: int = 0
    n_rejected_updates: int = 0
    n_skipped_mu_batches: int = 0
    n_recoveries: int = 0
    warmup_active: bool = False
    warmup_done: bool = False
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    generator: torch.Generator | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __init__(self, **kwargs: Any) -> None:
        """Set the given fields (the others take their defaults) and, as TomOpt's ``FitParams(**kwargs)``, any extra
        keyword as a plain attribute (``ValueError`` if it would shadow a method or a private name)."""
        for f in fields(self):
            if f.name in kwargs:
                value = kwargs.pop(f.name)
            elif f.default is not MISSING:
                value = f.default
            elif callable(f.default_factory):
                value = f.default_factory()
            else:  # pragma: no cover - every field has a default or a factory
                raise TypeError(f"FitParams field {f.name!r} has no default")
            setattr(self, f.name, value)
        for key, value in kwargs.items():
            if key.startswith("_") or hasattr(type(self), key):
                raise ValueError(f"FitParams: extra key {key!r} would shadow a method or private attribute; rename it")
            setattr(self, key, value)
        self.__post_init__()

    def __post_init__(self) -> None:
        self.check_state()

    def check_state(self) -> None:
        """Raise ``ValueError`` if ``state`` is not one of :data:`STATES` (or None)."""
        if self.state is not None and self.state not in STATES:
            raise ValueError(f"state must be one of {STATES}, got {self.state!r}")

    def reset_volume(self) -> None:
        """Drop the per-volume objects (and with them any autograd graph they hold)."""
        self.mu = None
        self.sb = None
        self.pred = None
        self.loss_val = None
        self.volume_inferrer = None
        self.n_mu_used = 0

    @classmethod
    def field_names(cls) -> list[str]:
        """Names of all fields (for introspection / docs)."""
        return [f.name for f in fields(cls)]
