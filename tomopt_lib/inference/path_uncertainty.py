"""Pieces of the path inferrer's uncertainty (:mod:`.x0_path`): each voxel's Fisher information from angle and
displacement, and the linear response of the neighbourhood smoothing in a locally homogeneous (Fourier)
approximation, the variance factor by which the smoothness prior and the final shrinkage reduce a voxel's
maximum-likelihood variance."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["voxel_information", "stencil_spectrum", "smoothing_factor"]

_Q_PER_AXIS = 8  # wave numbers per axis of the smoothing factor's average over the stencils' spectra


def _box_spectrum(q: Tensor, k: int) -> Tensor:
    """Eigenvalues (1 + 2 sum_{m=1}^{(k-1)/2} cos(m q)) / k of the k-point box mean along one axis."""
    m = torch.arange(1, (k - 1) // 2 + 1, dtype=q.dtype)
    return (1 + 2 * torch.cos(q[:, None] * m[None, :]).sum(1)) / k


def stencil_spectrum(dtype: torch.dtype, device: torch.device, extent: tuple[int, int] = (3, 3)) -> Tensor:
    """(Q,) eigenvalues a(q) = a_z(q_z) a_xy(q_x) a_xy(q_y) of the neighbourhood mean over a box of ``extent`` =
    (n_z, n_xy) voxels on a periodic lattice (3 x 3 x 3: prod_d (1 + 2 cos q_d) / 3), at ``_Q_PER_AXIS`` midpoint wave
    numbers per axis in (0, pi) (the spectrum is even in every q_d), ordered (q_z, q_x, q_y)."""
    q = (torch.arange(_Q_PER_AXIS, dtype=torch.float64) + 0.5) * torch.pi / _Q_PER_AXIS
    a_z, a_xy = _box_spectrum(q, extent[0]), _box_spectrum(q, extent[1])
    return (a_z[:, None, None] * a_xy[None, :, None] * a_xy[None, None, :]).reshape(-1).to(device=device, dtype=dtype)


def smoothing_factor(
    r: Tensor, p: Tensor, prior_extent: tuple[int, int] = (3, 3), shrink_extent: tuple[int, int] = (3, 3)
) -> Tensor:
    """Variance factor phi = mean_q [T(q) / (1 + r (1 - a(q)))]^2 of a voxel's ln rho estimate relative to its own
    maximum-likelihood variance, in a locally homogeneous linear-response approximation: the smoothness prior's
    fixed point (h + b (1 - A)) x = h x_ML with r = b / h, then the final shrinkage x <- (x + p (h A' x + P g) /
    (h + P)) / (1 + p) with p = P / h, T(q) = (1 + p a'(q) / (1 + p)) / (1 + p); a(q), a'(q) the spectra of the
    prior's neighbourhood mean A (box of ``prior_extent``) and of the shrinkage's A' (``shrink_extent``). (n,) in,
    (n,) out; chunked over the wave numbers so memory stays O(n)."""
    a = stencil_spectrum(r.dtype, r.device, prior_extent)
    a_s = stencil_spectrum(r.dtype, r.device, shrink_extent)
    r, p = r.clamp(0.0, 1e6)[:, None], p.clamp(0.0, 1e6)[:, None]
    tot = r.new_zeros(len(r))
    for a_c, s_c in zip(a.split(64), a_s.split(64)):
        tr = (1 + p * s_c / (1 + p)) / (1 + p) / (1 + r * (1 - a_c))
        tot = tot + tr.square().sum(1)
    return tot / len(a)


def voxel_information(
    idx: Tensor, lw: Tensor, t: Tensor, inv: Tensor, kf: Tensor, eff: Tensor, mom_var: Tensor, n_vox: int
) -> tuple[Tensor, Tensor]:
    """(n_vox,) ``(h, j)``: the diagonal of the likelihood's Fisher information of rho_j from angle and displacement,
    h_j = sum_i e_i I_i,jj, and of its score's variance, j_j = sum_i e_i^2 c_i I_i,jj: per muon and projection
    I_i,jj = 1/2 tr(S W_ij S W_ij) k^2 f^2 (S = Cov_i^-1, W_ij the voxel's 2x2 path weight of the module docstring),
    c_i = E[u^2] / E[u]^2 of the momentum model (the likelihood uses E[u]; the spread of u inflates the score's
    variance). A muon's samples in one voxel are contiguous along its path; each run of them is one segment
    (O(N S) memory). ``idx`` (N, S) voxel of each path sample (``n_vox`` = outside), ``lw`` / ``t`` its length and lever
    arm [m], ``inv`` (N, 2, 3) and ``kf`` (N, 2) per projection, ``eff`` / ``mom_var`` (N,)."""
    n_mu, n_s = idx.shape
    new = torch.ones_like(idx, dtype=torch.bool)
    new[:, 1:] = idx[:, 1:] != idx[:, :-1]
    new = new.reshape(-1)
    seg_id = new.long().cumsum(0) - 1
    n_seg = int(new.sum())
    w = lw.new_zeros(n_seg, 3).index_add(0, seg_id, torch.stack([lw, lw * t, lw * t.square()], -1).reshape(-1, 3))
    mu = torch.arange(n_mu, device=idx.device).repeat_interleave(n_s)[new]
    s0, s1, s2 = inv[mu, :, 0], inv[mu, :, 1], inv[mu, :, 2]  # (n_seg, 2) per projection
    w0, w1, w2 = w[:, 0, None], w[:, 1, None], w[:, 2, None]
    m00, m01, m10, m11 = s0 * w0 + s1 * w1, s0 * w1 + s1 * w2, s1 * w0 + s2 * w1, s1 * w1 + s2 * w2
    per_seg = (0.5 * kf[mu].square() * (m00.square() + 2 * m01 * m10 + m11.square())).sum(1)
    vox = idx.reshape(-1)[new]
    n_tot = n_vox + 1
    h = lw.new_zeros(n_tot).index_add(0, vox, eff[mu] * per_seg)[:n_vox]
    j = lw.new_zeros(n_tot).index_add(0, vox, eff[mu].square() * mom_var[mu] * per_seg)[:n_vox]
    return h, j
