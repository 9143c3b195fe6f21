"""``MergedScatterBatch``: the muons of several ``ScatterBatch`` es of one volume as one batch (for inferrers).

Every scatter variable, its uncertainty and the muon efficiency are per-muon functions of the muon's own hits, so
computing them once on the concatenated hits of all batches gives the per-batch results (to float rounding) with one
autograd graph instead of one per muon batch: at ``mu_bs`` = 250 the backward pass over hundreds of small graphs of
~800 nodes each was the largest cost of an epoch, and one batched graph of the same ops back-propagates several
times faster. The per-batch graphs up to the hits (detector panels) are kept and joined by the concatenation, so
gradients reach the detector parameters exactly as before.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import torch
from torch import Tensor

from .scattering import FitInputs, GenScatterBatch, ScatterBatch

__all__ = ["MergedScatterBatch", "merge_scatter_batches"]


class MergedScatterBatch(ScatterBatch):
    """Concatenation of compatible batches (see :func:`merge_scatter_batches`); variables are computed lazily."""

    def __init__(self, batches: Sequence[ScatterBatch]) -> None:  # noqa: D107  (no ScatterBatch.__init__: no refit)
        first = batches[0]
        self.mu = None  # type: ignore[assignment]  # a merged batch has no single MuonBatch (mom / mom_in are stored)
        self.volume, self.device = first.volume, first.device
        self.in_groups, self.out_groups, self.lw = first.in_groups, first.out_groups, first.lw
        self.z_bottom, self.z_top, self.z_ref = first.z_bottom, first.z_top, first.z_ref
        self._fit_in = cast(FitInputs, tuple(torch.cat([b._fit_in[k] for b in batches]) for k in range(3)))
        self._fit_out = cast(FitInputs, tuple(torch.cat([b._fit_out[k] for b in batches]) for k in range(3)))
        self._raw_in = {k: torch.cat([b._raw_in[k] for b in batches]) for k in first._raw_in}
        self._raw_out = {k: torch.cat([b._raw_out[k] for b in batches]) for k in first._raw_out}
        self._all_hits = {}
        self._lines, self._vals, self._uncs = None, None, None
        self._mom = torch.cat([b.mom for b in batches])
        self._mom_in = torch.cat([b.mom_in for b in batches])
        self.keep_mask = torch.ones(len(self._mom), dtype=torch.bool, device=self._mom.device)

    @property
    def mom(self) -> Tensor:
        """(N,) momenta [GeV] of the muons of all merged batches."""
        return self._mom

    reco_mom = mom

    @property
    def mom_in(self) -> Tensor:
        """(N,) momenta [GeV] before any energy loss of the muons of all merged batches."""
        return self._mom_in


def merge_scatter_batches(batches: Sequence[ScatterBatch]) -> MergedScatterBatch | None:
    """One :class:`MergedScatterBatch` of the non-empty ``batches``, or ``None`` if they cannot be merged exactly.

    Mergeable: all plain ``ScatterBatch`` or all ``GenScatterBatch`` (not other subclasses, which may compute their
    variables differently), with the same device, z range and detector groups, and the same hits per muon.
    """
    parts: list[ScatterBatch] = [b for b in batches if b.n_mu > 0]
    if not parts:
        return None
    kind = type(parts[0])
    if kind not in (ScatterBatch, GenScatterBatch) or any(type(b) is not kind for b in parts):
        return None
    first = parts[0]
    key = (first.device, first.z_bottom, first.z_top, first.in_groups, first.out_groups)
    shapes = [tuple(t.shape[1:]) for t in (*first._fit_in, *first._fit_out)]
    for b in parts[1:]:
        if (b.device, b.z_bottom, b.z_top, b.in_groups, b.out_groups) != key:
            return None
        if [tuple(t.shape[1:]) for t in (*b._fit_in, *b._fit_out)] != shapes or set(b._raw_in) != set(first._raw_in):
            return None
    return MergedScatterBatch(parts)
