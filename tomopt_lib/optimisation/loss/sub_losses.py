"""Sub-loss functions used by the detector losses."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["integer_class_loss"]

_REDUCTIONS = ("mean", "sum", "none")


def integer_class_loss(
    int_probs: Tensor,
    target_int: Tensor,
    pred_start_int: int,
    use_mse: bool,
    weight: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Integer-class loss (ICL): penalises predicted probability mass far from the target integer more than near it.

    For every candidate integer k (``pred_start_int`` + column index) the error |t - k| (or (t - k)^2 if ``use_mse``)
    is computed, the errors are normalised to sum 1 over the candidates (as TomOpt does), weighted by the predicted
    probabilities and summed: ICL = sum_k p_k e_k / sum_k' e_k'. Its range is [0, max_k e_k / sum e].

    Args:
        int_probs: (*, n_int) predicted probabilities.
        target_int: (*) or (*, 1) target integers.
        pred_start_int: integer of the zeroth probability column.
        use_mse: squared instead of absolute errors.
        weight: optional (*) multiplicative weights of the unreduced losses.
        reduction: "mean", "sum" or "none".
    """
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction must be one of {_REDUCTIONS}, got {reduction!r}")
    n_int = int_probs.shape[-1]
    ints = torch.arange(pred_start_int, pred_start_int + n_int, device=int_probs.device, dtype=int_probs.dtype)
    targ = torch.as_tensor(target_int, device=int_probs.device).to(int_probs.dtype)
    if targ.dim() == int_probs.dim() and targ.shape[-1] == 1:
        targ = targ.squeeze(-1)
    diffs = targ.unsqueeze(-1) - ints
    errs = diffs.square() if use_mse else diffs.abs()
    loss = (errs / errs.sum(-1, keepdim=True).clamp_min(torch.finfo(errs.dtype).tiny) * int_probs).sum(-1)
    if weight is not None:
        loss = loss * torch.as_tensor(weight, device=loss.device, dtype=loss.dtype).reshape(loss.shape)
    if reduction == "mean":
        return loss.mean(-1)
    if reduction == "sum":
        return loss.sum(-1)
    return loss
