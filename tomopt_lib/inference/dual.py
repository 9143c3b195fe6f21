"""Minimal forward-mode dual numbers for per-muon Jacobians, built from plain torch ops.

A ``Dual`` holds a value ``v`` (N,) and tangents ``d`` (P, N): the derivatives of ``v`` w.r.t. P per-muon
parameters (``None`` = constant). Evaluating a function on duals gives its value and its (P, N) Jacobian rows in one
O(P N) pass. Every step is an ordinary differentiable torch op, so values and Jacobians stay differentiable w.r.t.
whatever the inputs depend on (autograd), and nothing from ``torch.func`` / dynamo is needed.
"""

from __future__ import annotations

import math
from typing import Union, cast

import torch
from torch import Tensor

__all__ = ["Dual", "lift", "d_atan", "d_atan2", "d_safe_sqrt", "d_where", "d_abs", "d_wrap", "safe_sqrt"]

Num = Union["Dual", Tensor, float]


def _add(a: Tensor | None, b: Tensor | None) -> Tensor | None:
    if a is None:
        return b
    if b is None:
        return a
    return a + b


def _scale(d: Tensor | None, s: Tensor | float) -> Tensor | None:
    return None if d is None else d * s


class Dual:
    """Value (N,) with tangents (P, N) (or ``None`` for a constant); supports + - * / ** 2 and unary minus."""

    __slots__ = ("v", "d")

    def __init__(self, v: Tensor | float, d: Tensor | None = None) -> None:
        self.v = v
        self.d = d

    @staticmethod
    def inputs(params: Tensor, with_tangents: bool = True) -> list:
        """One dual per column of (N, P) ``params``; column k gets the one-hot tangent e_k (if ``with_tangents``)."""
        n, p = params.shape
        cols = params.unbind(1)
        if not with_tangents:
            return [Dual(c) for c in cols]
        eye = torch.eye(p, dtype=params.dtype, device=params.device)
        return [Dual(c, eye[:, k : k + 1].expand(p, n)) for k, c in enumerate(cols)]

    def __add__(self, o: Num) -> Dual:
        o = lift(o)
        return Dual(self.v + o.v, _add(self.d, o.d))

    __radd__ = __add__

    def __neg__(self) -> Dual:
        return Dual(-self.v, _scale(self.d, -1.0))

    def __sub__(self, o: Num) -> Dual:
        return self + (-lift(o))

    def __rsub__(self, o: Num) -> Dual:
        return lift(o) + (-self)

    def __mul__(self, o: Num) -> Dual:
        o = lift(o)
        return Dual(self.v * o.v, _add(_scale(self.d, o.v), _scale(o.d, self.v)))

    __rmul__ = __mul__

    def __truediv__(self, o: Num) -> Dual:
        o = lift(o)
        v = self.v / o.v
        return Dual(v, _scale(_add(self.d, _scale(o.d, -v)), 1 / o.v))

    def __rtruediv__(self, o: Num) -> Dual:
        return lift(o) / self

    def __pow__(self, k: int) -> Dual:
        if k != 2:
            raise ValueError("only squares are supported")
        return Dual(self.v**2, _scale(self.d, 2 * self.v))


def lift(x: Num) -> Dual:
    """A constant dual from a tensor or Python float (kept as a float: no rounding to the default dtype)."""
    return x if isinstance(x, Dual) else Dual(x if isinstance(x, Tensor) else float(x))


def safe_sqrt(x: Tensor) -> Tensor:
    """sqrt(x) for x > 0, else 0, with finite autograd derivatives everywhere."""
    pos = x > 0
    return torch.where(pos, torch.sqrt(torch.where(pos, x, torch.ones_like(x))), torch.zeros_like(x))


def d_safe_sqrt(a: Dual) -> Dual:
    """sqrt with value and tangent 0 where a <= 0 (d sqrt(a) = d a / (2 sqrt(a)))."""
    r = safe_sqrt(cast(Tensor, a.v))
    pos = r > 0
    return Dual(r, None if a.d is None else torch.where(pos, a.d / (2 * torch.where(pos, r, torch.ones_like(r))), 0.0))


def d_atan(a: Dual) -> Dual:
    """atan, d = d a / (1 + a^2)."""
    return Dual(torch.atan(cast(Tensor, a.v)), _scale(a.d, 1 / (1 + a.v**2)))


def d_atan2(y: Dual, x: Dual) -> Dual:
    """atan2(y, x), d = (x dy - y dx) / (x^2 + y^2); the caller keeps (x, y) away from (0, 0)."""
    r2 = x.v**2 + y.v**2
    return Dual(torch.atan2(cast(Tensor, y.v), cast(Tensor, x.v)), _scale(_add(_scale(y.d, x.v), _scale(x.d, -y.v)), 1 / r2))


def d_where(mask: Tensor, a: Num, b: Num) -> Dual:
    """Elementwise choice between duals (tangents chosen alike)."""
    a, b = lift(a), lift(b)
    v = torch.where(mask, a.v, b.v)
    if a.d is None and b.d is None:
        return Dual(v)
    zero = torch.zeros((), dtype=v.dtype, device=v.device)
    return Dual(v, torch.where(mask, zero if a.d is None else a.d, zero if b.d is None else b.d))


def d_abs(a: Dual) -> Dual:
    """|a|, d = sign(a) d a."""
    v = cast(Tensor, a.v)
    return Dual(v.abs(), _scale(a.d, torch.sign(v)))


def d_wrap(a: Dual) -> Dual:
    """Angle wrapped to [-pi, pi) (tangent unchanged)."""
    return Dual(torch.remainder(cast(Tensor, a.v) + math.pi, 2 * math.pi) - math.pi, a.d)
