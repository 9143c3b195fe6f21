"""Linear de-biasing of fill-height predictions: the least-squares fit of (w, b) and :class:`LinearCorrectionCallback`,
which applies w p + b to every prediction in training, validation and prediction (TomOpt documents it in
``ladle_furnace.inference``, which re-exports it)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn

from ...optimisation.callbacks.callback import Callback

__all__ = ["LinearCorrectionCallback", "fit_linear_correction"]


def fit_linear_correction(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Least-squares (w, b) minimising sum (w p_i + b - t_i)^2: w = cov(p, t) / var(p), b = mean(t) - w mean(p)
    (w = 1, b = mean(t - p) when the predictions have no spread). Detached 0-d tensors."""
    p = torch.as_tensor(pred).detach().double().reshape(-1)
    t = torch.as_tensor(target).detach().double().reshape(-1).to(p.device)
    if p.numel() != t.numel() or p.numel() == 0:
        raise ValueError(f"pred and target must have the same, non-zero number of values, got {p.numel()} and {t.numel()}")
    dp = p - p.mean()
    var = dp.square().mean()
    if float(var) <= 1e-18:
        return torch.ones((), dtype=torch.float64), (t - p).mean()
    w = (dp * (t - t.mean())).mean() / var
    return w, t.mean() - w * p.mean()


class LinearCorrectionCallback(Callback):
    """Linear de-biasing of scalar predictions: every prediction p becomes w p + b (``on_x0_pred_end``).

    (w, b) start at (``init_weight``, ``init_bias``); after each training volume batch (``on_backwards_end``) they are
    refitted to the batch's (raw prediction, target) pairs, minimising sum (w p_i + b - t_i)^2: exactly by least
    squares (:func:`fit_linear_correction`) when ``partial_opt`` is None, else by ``n_steps`` steps of
    ``partial_opt([w, b])`` (TomOpt's way) from the current values. The correction is applied with (w, b) detached, so
    the detector's gradients flow through p only; validation and prediction use the latest fit.

    Args:
        partial_opt: optimiser factory, e.g. ``partial(torch.optim.SGD, lr=1e-2)``, or None for least squares.
        init_weight, init_bias: starting w and b [m / m, m].
        n_steps: optimiser steps per refit.
    """

    def __init__(
        self,
        partial_opt: Callable[[Iterable[nn.Parameter]], torch.optim.Optimizer] | None = None,
        init_weight: float = 1.0,
        init_bias: float = 0.0,
        *,
        n_steps: int = 10000,
    ) -> None:
        super().__init__()
        if isinstance(n_steps, bool) or int(n_steps) != n_steps or n_steps < 1:
            raise ValueError(f"n_steps must be an integer >= 1, got {n_steps!r}")
        self.partial_opt, self.n_steps = partial_opt, int(n_steps)
        self.init_weight, self.init_bias = float(init_weight), float(init_bias)
        self.weight = nn.Parameter(torch.tensor(self.init_weight, dtype=torch.float64))
        self.bias = nn.Parameter(torch.tensor(self.init_bias, dtype=torch.float64))
        self._opt: torch.optim.Optimizer | None = None
        self._preds: list[Tensor] = []
        self._targs: list[Tensor] = []

    def on_train_begin(self) -> None:
        """Reset (w, b) to their initial values and build the optimiser."""
        with torch.no_grad():
            self.weight.fill_(self.init_weight)
            self.bias.fill_(self.init_bias)
        self._opt = self.partial_opt([self.weight, self.bias]) if self.partial_opt is not None else None

    def on_volume_batch_begin(self) -> None:
        """Forget the previous batch's pairs."""
        self._preds, self._targs = [], []

    def correct(self, pred: Tensor) -> Tensor:
        """w p + b with (w, b) detached, in the dtype and on the device of ``pred``."""
        return self.weight.detach().to(pred.device, pred.dtype) * pred + self.bias.detach().to(pred.device, pred.dtype)

    def on_x0_pred_end(self) -> None:
        """Record the raw prediction and the volume's target; replace the prediction by its corrected value."""
        fp = self.wrapper.fit_params
        pred = fp.pred
        if not isinstance(pred, Tensor):
            return
        target = self.wrapper.volume.target
        if fp.state == "train" and target is not None:
            self._preds.append(pred.detach().reshape(-1))
            self._targs.append(torch.as_tensor(target).detach().reshape(-1).to(pred.device))
        fp.pred = self.correct(pred)

    def on_backwards_end(self) -> None:
        """Refit (w, b) to the batch's pairs."""
        if not self._preds:
            return
        p, t = torch.cat(self._preds).double(), torch.cat(self._targs).double()
        if self._opt is None:
            w, b = fit_linear_correction(p, t)
            with torch.no_grad():
                self.weight.fill_(float(w))
                self.bias.fill_(float(b))
            return
        p, t = p.to(self.weight.device), t.to(self.weight.device)
        with torch.enable_grad():
            for _ in range(self.n_steps):
                self._opt.zero_grad()
                loss = (self.weight * p + self.bias - t).square().mean()
                loss.backward()
                self._opt.step()
