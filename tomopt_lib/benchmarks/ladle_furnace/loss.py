"""Ladle-furnace losses: the integer-class loss on the fill layer and the spread-over-range batch loss."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from ...optimisation.callbacks.callback import Callback
from ...optimisation.loss.loss import VolumeIntClassLoss
from .inference import fill_height_to_layer

if TYPE_CHECKING:
    from ...volume.volume import Volume

__all__ = ["LadleFurnaceIntClassLoss", "SpreadRangeLoss", "spread_range"]


class LadleFurnaceIntClassLoss(VolumeIntClassLoss):
    """Integer-class loss of fill-layer probabilities: ``VolumeIntClassLoss`` whose target is the index k of the topmost
    liquid layer, k = round((fill_z - z_bottom) / size) - 1 (``fill_z`` = ``volume.target`` [m]).

    Error = sum_j p_j e_j / sum_j' e_j' with e_j = |k - j| (or (k - j)^2 if ``use_mse``), j = ``pred_int_start`` + column
    (:func:`~tomopt_lib.optimisation.loss.sub_losses.integer_class_loss`); plus the cost term of ``AbsDetectorLoss``.
    Pairs with :class:`~.inference.EdgeDetLadleFurnaceFillLevelInferrer` (probabilities over the layers, from the bottom).
    """

    def __init__(self, *, pred_int_start: int = 0, use_mse: bool, target_budget: float | None, **kwargs: Any) -> None:
        super().__init__(
            targ2int=self._targ2int, pred_int_start=pred_int_start, use_mse=use_mse, target_budget=target_budget, **kwargs
        )

    @staticmethod
    def _targ2int(target: Tensor, volume: Volume) -> Tensor:
        return fill_height_to_layer(target, volume)


def spread_range(preds: Tensor, targets: Tensor) -> Tensor:
    """Spread over range of predictions grouped by their (equal) targets:

        L = mean_g s_g / (max_g m_g - min_g m_g),   m_g, s_g = mean and (population) std of the predictions of group g,

    the spread averaged over the groups with at least two members. With a single group the range is taken as 1; with
    no group of two the spread is 0. Invariant under p -> w p + b (w > 0), so it scores a detector independently of a
    later linear de-biasing. Differentiable w.r.t. ``preds`` (N,); ``targets`` (N,) are compared exactly.
    """
    p = preds.reshape(-1)
    t = targets.detach().reshape(-1).to(p.device)
    if p.numel() != t.numel() or p.numel() == 0:
        raise ValueError(f"preds and targets must have the same, non-zero length, got {p.numel()} and {t.numel()}")
    uniq, inv = torch.unique(t, return_inverse=True)
    n_g = len(uniq)
    one_hot = torch.nn.functional.one_hot(inv, n_g).to(p.dtype)  # (N, G)
    counts = one_hot.sum(0)
    means = (one_hot * p[:, None]).sum(0) / counts
    var = (one_hot * (p[:, None] - means).square()).sum(0) / counts
    multi = counts >= 2
    spread = var[multi].clamp_min(0).add(1e-30).sqrt().mean() if bool(multi.any()) else p.new_zeros(())
    rng = (means.max() - means.min()) if n_g > 1 else p.new_ones(())
    return spread / rng.clamp_min(1e-12)


class SpreadRangeLoss(Callback):
    """Replaces the loss of each volume batch by :func:`spread_range` of the batch's predictions vs their targets.

    Per batch (training and validation): the predictions (with their graphs) and ``volume.target`` s are collected at
    ``on_x0_pred_end``; in training the per-volume backward of the wrapper's ``loss_func`` is switched off
    (``fit_params.skip_backward``), and at ``on_volume_batch_end`` the batch loss L is back-propagated and
    ``fit_params.mean_loss`` set to it (put this callback before a ``MetricLogger`` in ``cbs``). The wrapper still
    needs a ``loss_func`` (e.g. ``VolumeMSELoss``): its per-volume values mark the volumes as usable; its cost term
    is not included, so use a fixed budget. Batches need repeated targets (e.g. several layouts per fill height).
    """

    def __init__(self) -> None:
        super().__init__()
        self._preds: list[Tensor] = []
        self._targs: list[Tensor] = []

    def on_volume_batch_begin(self) -> None:
        """Start a new batch; in training, switch off the wrapper's per-volume backward."""
        self._preds, self._targs = [], []
        fp = self.wrapper.fit_params
        if fp.state == "train":
            fp.skip_backward = True

    def on_x0_pred_end(self) -> None:
        """Keep the volume's prediction (with its graph) and its target."""
        fp = self.wrapper.fit_params
        target = self.wrapper.volume.target
        if fp.state == "test" or not isinstance(fp.pred, Tensor) or target is None:
            return
        self._preds.append(fp.pred.reshape(-1)[:1])
        self._targs.append(torch.as_tensor(target).detach().reshape(-1)[:1].to(fp.pred.device))

    def on_volume_batch_end(self) -> None:
        """Compute the batch loss; in training back-propagate it."""
        fp = self.wrapper.fit_params
        fp.skip_backward = False
        if fp.state == "test" or not self._preds:
            return
        loss = spread_range(torch.cat(self._preds), torch.cat(self._targs))
        fp.mean_loss = loss.detach()
        if fp.state == "train" and loss.requires_grad and bool(torch.isfinite(loss.detach())):
            loss.backward()
        self._preds, self._targs = [], []
