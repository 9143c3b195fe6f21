"""Memory-lean per-voxel weighted sums over separable, windowed PoCA voxel probabilities.

For muon i the PoCA-in-voxel probability over its window is the outer product p_i(a, b, c) = pz_ia px_ib py_ic at
the voxel (iz_ia, ix_ib, iy_ic) (see ``voxel_probs``). :func:`separable_voxel_sums` returns

    S1[v, k] = sum_{i, (a, b, c) -> v} p_i(a, b, c) A[i, k]    and    S2[v, k] = sum_{...} p_i(a, b, c)^2 B[i, k]

without ever materialising the (N, W) probabilities or the (N, W, K) products of the whole muon sample: forward and
backward loop over chunks of muons (``chunk`` elements of work space at a time), and the backward recomputes each
chunk's probabilities from the (N, w) per-axis factors instead of saving them. With few voxels (n_vox <= W K) a
chunk's probabilities are densified to (C, n_vox) and reduced by matrix products (several times faster than the
sparse ``index_add`` / gather of (C, W, K) values used otherwise). Memory is O(N (w_z + w_x + w_y + K))
for the saved inputs plus O(chunk) of work space; the result equals the unchunked ``index_add`` up to float rounding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = ["separable_voxel_sums", "DEFAULT_CHUNK_ELEMENTS"]

DEFAULT_CHUNK_ELEMENTS = 1 << 22
"""Default work-space size (elements of one (C, W, K) chunk, 16 MB in float32)."""


def _chunk_probs(
    pz: Tensor, px: Tensor, py: Tensor, iz: Tensor, ix: Tensor, iy: Tensor, n_x: int, n_y: int
) -> tuple[Tensor, Tensor]:
    """(C, W) probabilities and flat voxel indices of one chunk (W = w_z w_x w_y, C order z, x, y)."""
    c = len(pz)
    probs = (pz[:, :, None, None] * px[:, None, :, None] * py[:, None, None, :]).reshape(c, -1)
    idx = ((iz[:, :, None, None] * n_x + ix[:, None, :, None]) * n_y + iy[:, None, None, :]).reshape(c, -1)
    return probs, idx


def _densify(probs: Tensor, idx: Tensor, n_vox: int) -> Tensor:
    """(C, n_vox) dense probabilities of one chunk."""
    return probs.new_zeros(len(probs), n_vox).scatter_add_(1, idx, probs)


def _chunk_backward(
    g: Tensor, probs: Tensor, idx: Tensor, vals: Tensor, dense: bool, need_vals: bool
) -> tuple[Tensor | None, Tensor]:
    """For S[v] = sum p[c, w] vals[c] at v = idx[c, w] and upstream grad g (n_vox, K): (dS/dvals, dS/dp) of a chunk."""
    if dense:  # (C, n_vox) work space, two small matmuls
        gv = _densify(probs, idx, g.shape[0]) @ g if need_vals else None
        return gv, (vals @ g.T).gather(1, idx)
    gg = g[idx]  # (C, W, K)
    gv = (probs[:, :, None] * gg).sum(1) if need_vals else None
    return gv, (gg * vals[:, None, :]).sum(2)


def _chunk_len(n_mu: int, width: int, n_cols: int, chunk: int) -> int:
    return max(1, min(n_mu, int(chunk) // max(1, width * n_cols)))


class _SeparableVoxelSums(torch.autograd.Function):
    """Autograd function behind :func:`separable_voxel_sums` (chunked forward, recomputing chunked backward)."""

    @staticmethod
    def forward(
        ctx: Any,
        pz: Tensor,
        px: Tensor,
        py: Tensor,
        a: Tensor,
        b: Tensor,
        iz: Tensor,
        ix: Tensor,
        iy: Tensor,
        shp_zxy: tuple[int, int, int],
        chunk: int,
    ) -> tuple[Tensor, Tensor]:
        n_z, n_x, n_y = shp_zxy
        n_vox = n_z * n_x * n_y
        n_mu, width = len(a), pz.shape[1] * px.shape[1] * py.shape[1]
        n_cols = max(a.shape[1], b.shape[1], 1)
        dense = n_vox <= width * n_cols
        s1 = a.new_zeros(n_vox, a.shape[1])
        s2 = b.new_zeros(n_vox, b.shape[1])
        step = _chunk_len(n_mu, max(n_vox, width) if dense else width, 1 if dense else n_cols, chunk)
        for lo in range(0, n_mu, step):
            sl = slice(lo, lo + step)
            probs, idx = _chunk_probs(pz[sl], px[sl], py[sl], iz[sl], ix[sl], iy[sl], n_x, n_y)
            for out, p, vals in ((s1, probs, a), (s2, probs.square(), b)):
                if not vals.shape[1]:
                    continue
                if dense:
                    out.addmm_(_densify(p, idx, n_vox).T, vals[sl])
                else:
                    out.index_add_(0, idx.reshape(-1), (p[:, :, None] * vals[sl, None, :]).reshape(-1, vals.shape[1]))
        ctx.save_for_backward(pz, px, py, a, b, iz, ix, iy)
        ctx.shp, ctx.step, ctx.dense = (n_z, n_x, n_y), step, dense
        return s1, s2

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, g1: Tensor | None, g2: Tensor | None) -> tuple[Tensor | None, ...]:
        pz, px, py, a, b, iz, ix, iy = ctx.saved_tensors
        _, n_x, n_y = ctx.shp
        need = ctx.needs_input_grad
        gz, gx, gy = (torch.zeros_like(t) if need[k] else None for k, t in enumerate((pz, px, py)))
        ga = torch.zeros_like(a) if need[3] else None
        gb = torch.zeros_like(b) if need[4] else None
        wz, wx, wy = pz.shape[1], px.shape[1], py.shape[1]
        for lo in range(0, len(a), ctx.step):
            sl = slice(lo, lo + ctx.step)
            probs, idx = _chunk_probs(pz[sl], px[sl], py[sl], iz[sl], ix[sl], iy[sl], n_x, n_y)
            gp = torch.zeros_like(probs)
            for g, p, vals, grad, sq in ((g1, probs, a, ga, False), (g2, probs.square(), b, gb, True)):
                if g is None or not vals.shape[1]:
                    continue
                gv, gpv = _chunk_backward(g, p, idx, vals[sl], ctx.dense, need_vals=grad is not None)
                if grad is not None:
                    grad[sl] = cast(Tensor, gv)  # computed because need_vals=True
                gp += 2.0 * probs * gpv if sq else gpv
            if gz is None and gx is None and gy is None:
                continue
            gp = gp.reshape(-1, wz, wx, wy)
            if gz is not None:
                gz[sl] = torch.einsum("czxy,cx,cy->cz", gp, px[sl], py[sl])
            if gx is not None:
                gx[sl] = torch.einsum("czxy,cz,cy->cx", gp, pz[sl], py[sl])
            if gy is not None:
                gy[sl] = torch.einsum("czxy,cz,cx->cy", gp, pz[sl], px[sl])
        return gz, gx, gy, ga, gb, None, None, None, None, None


def separable_voxel_sums(
    axis_probs: Sequence[tuple[Tensor, Tensor]],
    shp_zxy: Sequence[int],
    a: Tensor,
    b: Tensor | None = None,
    *,
    chunk: int = DEFAULT_CHUNK_ELEMENTS,
) -> tuple[Tensor, Tensor]:
    """``(S1 (n_vox, K), S2 (n_vox, K2))`` weighted per-voxel sums (see the module docstring), differentiable.

    Args:
        axis_probs: ``((pz, iz), (px, ix), (py, iy))``, each (N, w_axis) probabilities and long voxel indices along
            the axis (as from :func:`~.voxel_probs.axis_window_probs`).
        shp_zxy: voxel grid shape (n_z, n_x, n_y); the voxel index is flattened in C order.
        a: (N, K) per-muon values weighted by p.
        b: optional (N, K2) per-muon values weighted by p^2 (``None``: K2 = 0).
        chunk: work-space elements per chunk of muons (memory / speed trade-off only).
    """
    (pz, iz), (px, ix), (py, iy) = axis_probs
    if b is None:
        b = a.new_zeros(len(a), 0)
    shp = tuple(int(v) for v in shp_zxy)
    return _SeparableVoxelSums.apply(pz, px, py, a, b, iz, ix, iy, shp, int(chunk))
