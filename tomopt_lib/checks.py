"""Invariants shared by the core classes and the parameter validation (``config``): one rule, one tolerance, one
message. Light on purpose (torch and the material table only), so validating parameters loads no physics code."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from .core import X0

__all__ = ["VOXEL_MULTIPLE_RTOL", "is_voxel_multiple", "check_materials", "passive_batch_fits", "check_number", "check_vector"]

VOXEL_MULTIPLE_RTOL = 1e-5
"""Relative tolerance of "a length is a whole number of voxels": ``|L/s - round(L/s)| <= rtol * max(1, round(L/s))``
(above float32 rounding of lengths up to ~1000 voxels, far below any real mismatch)."""


def is_voxel_multiple(lengths: Tensor | Sequence[float] | float, size: Tensor | float) -> Tensor:
    """Boolean tensor (shape of ``lengths``): each length [m] is a whole, non-zero number of voxels of ``size`` [m]."""
    lengths_t = torch.as_tensor(lengths, dtype=torch.float64) if not isinstance(lengths, Tensor) else lengths.double()
    size_t = torch.as_tensor(size, dtype=torch.float64, device=lengths_t.device)
    n = lengths_t / size_t
    n_round = n.round()
    return ((n - n_round).abs() <= VOXEL_MULTIPLE_RTOL * n_round.clamp_min(1.0)) & (n_round >= 1)


def check_materials(materials: Sequence[str] | None) -> list[str]:
    """Material names (default: every key of ``X0``, in table order); ``ValueError`` for unknown or repeated names."""
    if materials is None:
        return list(X0)
    if isinstance(materials, str):
        raise ValueError(f"materials must be a list of names, got the string {materials!r}; allowed names: {list(X0)}")
    mats = list(materials)
    if not mats:
        raise ValueError(f"materials must not be empty; allowed names: {list(X0)}")
    unknown = [m for m in mats if m not in X0]
    if unknown:
        raise ValueError(f"unknown material(s) {unknown}; allowed names: {list(X0)}")
    if len(set(mats)) != len(mats):
        raise ValueError(f"materials must be unique, got {mats}")
    return mats


def passive_batch_fits(passive_bs: int, n_passives: int) -> bool:
    """Whether one update of ``passive_bs`` volumes is possible with ``n_passives`` training passives (an epoch makes
    ``n_passives // passive_bs`` updates; a remainder batch is dropped)."""
    return 1 <= passive_bs <= n_passives


def check_number(
    name: str,
    value: object,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
    integer: bool = False,
    unit: str = "",
) -> float:
    """``value`` (a number or a one-element tensor) as a float, checked to be finite (a whole number if ``integer``)
    and inside ``low``..``high`` (ends excluded where ``low_open`` / ``high_open``); else one ``ValueError``:
    ``"<name> must be <rule>, got <value>"``. With ``integer`` only integer types pass (ints, numpy / torch integers).
    The one scalar check of the cores' constructors."""
    kind = "an integer" if integer else "a finite number"
    bounds = []
    if low is not None:
        bounds.append(f"{'>' if low_open else '>='} {low:g}")
    if high is not None:
        bounds.append(f"{'<' if high_open else '<='} {high:g}")
    rule = " ".join([kind, " and ".join(bounds)]).strip() + (f" {unit}" if unit else "")
    try:
        if isinstance(value, (bool, str, bytes)) or (integer and not hasattr(value, "__index__")):
            raise TypeError  # True or "1" is not a number here, 2.0 not an integer count
        if isinstance(value, Tensor):
            if value.numel() != 1:
                raise TypeError
            v = float(value.detach().reshape(-1)[0])
        else:
            v = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be {rule}, got {value!r}") from None
    bad = not math.isfinite(v) or (integer and v != round(v))
    bad = bad or (low is not None and (v <= low if low_open else v < low))
    bad = bad or (high is not None and (v >= high if high_open else v > high))
    if bad:
        raise ValueError(f"{name} must be {rule}, got {value!r}")
    return v


def check_vector(
    name: str, value: Sequence[float] | Tensor, n: int, *, positive: bool = False, dtype: torch.dtype = torch.float32
) -> Tensor:
    """``value`` as a detached (n,) tensor of ``dtype`` with finite (and, if ``positive``, > 0) entries; else one
    ``ValueError`` naming ``name``. The vector counterpart of :func:`check_number` (positions, spans [m])."""
    try:
        t = torch.as_tensor(value, dtype=dtype).detach().clone().reshape(-1)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"{name} must be {n} numbers, got {value!r}") from None
    if t.numel() != n or not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} must be {n} finite numbers, got {t.tolist()}")
    if positive and bool((t <= 0).any()):
        raise ValueError(f"{name} must be {n} lengths > 0 m, got {t.tolist()}")
    return t
