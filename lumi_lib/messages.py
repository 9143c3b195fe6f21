"""Identifiability warnings of an inversion, worded once: which unknowns (or which linear combination of them) a
measurement plan does not determine, from the Jacobian's condition number or from the covariance at the noise."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["identifiability_message", "uncertainty_message"]


def _combo(w: Tensor, names: Sequence[str]) -> str:
    """``w`` (K,) as a signed linear combination of ``names`` (terms below 1e-3 dropped)."""
    terms = [(float(c), n) for c, n in zip(w, names) if abs(float(c)) > 1e-3]
    text = " ".join(f"{'-' if c < 0 else '+'} {abs(c):.3g}*{n}" for c, n in terms)
    return text[2:] if text.startswith("+ ") else "-" + text[2:]


def _undetermined(v: Tensor, names: Sequence[str]) -> str:
    """``the combination ...is not determined; only ... is measurable`` for a least-determined direction ``v``."""
    v = v * torch.sign(v[v.abs().argmax()])
    text = f"the combination {_combo(v, names)} is not determined"
    if len(names) == 2:
        text += f"; only {_combo(torch.stack([v[1], -v[0]]) * torch.sign(v[1]) if float(v[1]) != 0 else v, names)} is measurable"
    else:
        text += "; only combinations orthogonal to it are measurable"
    return text + " (in units of the scale, e.g. 2.3e-6 m rad)"


def identifiability_message(cond: Tensor, null_direction: Tensor, names: Sequence[str], threshold: float) -> str | None:
    """Human-readable warning text if any condition number exceeds ``threshold`` (else None)."""
    bad = ~(cond <= threshold)
    if not bool(bad.any()):
        return None
    i = int(torch.nan_to_num(cond, posinf=float("inf")).masked_fill(~bad, -1.0).argmax())
    return (
        f"the measurement plan cannot separate the unknowns ({', '.join(names)}) for {int(bad.sum())} of "
        f"{cond.numel()} inversions (Jacobian condition number up to {float(cond[i]):.3g} > {threshold:.3g}): "
        f"{_undetermined(null_direction[i], names)}."
    )


def uncertainty_message(
    rel_std: Tensor,
    names: Sequence[str],
    threshold: float,
    *,
    null_direction: Tensor | None = None,
    cond: Tensor | None = None,
    cond_threshold: float = math.inf,
    noise: str = "the configured noise",
) -> str | None:
    """Warning text when some unknown's relative uncertainty ``rel_std`` (B, K) (std from the covariance over the
    estimate) exceeds ``threshold`` in any of the B inversions, or when a condition number exceeds ``cond_threshold``
    (the exactly degenerate case, where the covariance is meaningless); None otherwise. Names the worst unknown and,
    with ``null_direction`` (B, K), the least-determined combination of the worst inversion."""
    rel = torch.nan_to_num(rel_std.detach().double(), nan=math.inf)
    bad = ~(rel <= threshold)
    cond_bad = torch.zeros(rel.shape[0], dtype=torch.bool) if cond is None else ~(cond.detach().cpu() <= cond_threshold)
    rows_bad = bad.any(dim=1).cpu() | cond_bad
    if not bool(rows_bad.any()):
        return None
    if bool(cond_bad.any()):
        assert cond is not None
        c = cond.detach().cpu()
        i = int(torch.nan_to_num(c, posinf=float("inf")).masked_fill(~cond_bad, -1.0).argmax())
        head = (
            f"the measurement plan cannot separate the unknowns ({', '.join(names)}) for {int(rows_bad.sum())} of "
            f"{rel.shape[0]} inversions (Jacobian condition number up to {float(c[i]):.3g} > {cond_threshold:.3g})"
        )
    else:
        worst = rel.masked_fill(~bad, -1.0).cpu()
        i, j = divmod(int(worst.argmax()), rel.shape[1])
        per = ", ".join(f"{n} {int(bad[:, k].sum())}" for k, n in enumerate(names) if bool(bad[:, k].any()))
        head = (
            f"the measurement plan does not determine the unknowns ({', '.join(names)}) to {100.0 * threshold:.3g} % "
            f"at {noise} for {int(rows_bad.sum())} of {rel.shape[0]} inversions (relative uncertainty up to "
            f"{100.0 * float(rel[i, j]):.3g} % on {names[j]}; inversions above {100.0 * threshold:.3g} % per unknown: {per})"
        )
    if null_direction is None:
        return head + "."
    v = null_direction[i].detach().cpu()
    if bool(cond_bad.any()):
        return f"{head}: {_undetermined(v, names)}."
    v = v * torch.sign(v[v.abs().argmax()])
    return f"{head}; the least-determined combination is {_combo(v, names)} (in units of the scale, e.g. 2.3e-6 m rad)."
