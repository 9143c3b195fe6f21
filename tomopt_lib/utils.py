"""Utilities at TomOpt's ``tomopt.utils`` path: the Jacobian helper and the X0 / class-ID conversions of :mod:`.core`."""

from __future__ import annotations

import torch
from torch import Tensor

from .core import class_to_x0preds, x0_from_mixture, x0targs_to_classtargs

__all__ = ["jacobian", "class_to_x0preds", "x0_from_mixture", "x0targs_to_classtargs"]


def jacobian(y: Tensor, x: Tensor, create_graph: bool = False, allow_unused: bool = True) -> Tensor:
    """Full Jacobian dy/dx, shape ``y.shape + x.shape``, by reverse mode (one vector-Jacobian product per element of y).

    Args:
        y: output tensor, computed from ``x``.
        x: input tensor (requires grad).
        create_graph: keep the graph of the derivatives (for higher-order derivatives).
        allow_unused: if ``y`` does not depend on ``x`` (or has no graph at all), return zeros instead of raising.

    The products are batched (``is_grads_batched``); operations without a batching rule fall back to a loop.
    Cost and memory grow as ``y.numel() * x.numel()``: use it for small blocks, not whole muon batches.
    """
    shape = (*y.shape, *x.shape)
    flat = y.reshape(-1)
    n = flat.numel()
    if n == 0 or not flat.requires_grad:
        if n and not allow_unused:
            raise RuntimeError("jacobian: y does not depend on x (no graph); pass allow_unused=True to get zeros")
        return torch.zeros(shape, dtype=y.dtype, device=y.device)
    eye = torch.eye(n, dtype=flat.dtype, device=flat.device)
    rows: Tensor | None
    try:
        (rows,) = torch.autograd.grad(
            flat, x, eye, retain_graph=True, create_graph=create_graph, allow_unused=allow_unused, is_grads_batched=True
        )
    except RuntimeError:  # an operation without a batching rule: one product at a time
        per_row = [
            torch.autograd.grad(flat, x, eye[i], retain_graph=True, create_graph=create_graph, allow_unused=allow_unused)[0]
            for i in range(n)
        ]
        rows = (
            None if all(r is None for r in per_row) else torch.stack([torch.zeros_like(x) if r is None else r for r in per_row])
        )
    if rows is None:
        return torch.zeros(shape, dtype=y.dtype, device=y.device)
    return rows.reshape(shape)
