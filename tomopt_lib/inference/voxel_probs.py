"""Separable, windowed voxel probabilities of the PoCA and the per-muon detection efficiency.

The PoCA of muon i is modelled as three independent Gaussians N(c_a, sigma_a) (a = x, y, z). The probability that it
lies in voxel (k_x, k_y, k_z) factorises,

    p_i(k) = prod_a [Phi((e_a(k_a + 1) - c_a) / sigma_a) - Phi((e_a(k_a) - c_a) / sigma_a)],

with e_a(k) the k-th voxel edge along axis a. Per axis only a window of ``w_a = min(window, n_a)`` consecutive voxels
around the (clamped) PoCA is evaluated, and the three windows are combined by outer products into ``w_x w_y w_z``
sparse (muon, voxel) pairs per muon: time and memory O(N window^3), independent of the number of voxels. Mass outside
a window is dropped (negligible when ``window`` >~ 2 * 3 sigma / size + 1); ``window=None`` gives the exact full axis.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = [
    "gauss_interval_prob",
    "axis_window_probs",
    "voxel_axis_probs",
    "voxel_pair_probs",
    "dense_voxel_probs",
    "prob_at_least_two",
]

_SQRT2 = math.sqrt(2.0)


def gauss_interval_prob(lo: Tensor, hi: Tensor) -> Tensor:
    """P(lo <= Z < hi) for Z ~ N(0, 1), accurate in both tails (erfc of the side away from the mean)."""
    upper = 0.5 * (torch.erfc(lo / _SQRT2) - torch.erfc(hi / _SQRT2))  # good when lo >= 0
    lower = 0.5 * (torch.erfc(-hi / _SQRT2) - torch.erfc(-lo / _SQRT2))  # good when hi <= 0
    return torch.where(lo >= 0, upper, lower).clamp_min(0.0)


def axis_window_probs(
    centre: Tensor, sigma: Tensor, *, low: float, size: float, n: int, window: int | None
) -> tuple[Tensor, Tensor]:
    """Per-axis voxel probabilities in a window: ``(probs (N, w), idx (N, w) long)``, w = min(window, n).

    The window starts at ``floor((centre - low) / size) - (w - 1) // 2`` clamped to [0, n - w] (detached choice).
    """
    w = n if window is None else max(1, min(int(window), n))
    pos = ((centre.detach() - low) / size).nan_to_num(0.0, posinf=n, neginf=-1.0).clamp(-1.0, float(n))
    start = (torch.floor(pos).long() - (w - 1) // 2).clamp(0, n - w)
    idx = start[:, None] + torch.arange(w, device=centre.device)
    edges = low + size * torch.cat([idx, idx[:, -1:] + 1], dim=1).to(centre.dtype)
    u = (edges - centre[:, None]) / sigma[:, None]
    return gauss_interval_prob(u[:, :-1], u[:, 1:]), idx


def voxel_axis_probs(
    poca: Tensor,
    poca_unc: Tensor,
    *,
    low_xyz: Sequence[float],
    size: float,
    shp_zxy: Sequence[int],
    window: int | None = None,
    min_sigma: float = 1e-7,
) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """Per-axis window factors ``((pz, iz), (px, ix), (py, iy))`` of :func:`voxel_pair_probs` (each (N, w_axis))."""
    n_z, n_x, n_y = (int(v) for v in shp_zxy)
    sig = poca_unc + min_sigma
    px = axis_window_probs(poca[:, 0], sig[:, 0], low=float(low_xyz[0]), size=size, n=n_x, window=window)
    py = axis_window_probs(poca[:, 1], sig[:, 1], low=float(low_xyz[1]), size=size, n=n_y, window=window)
    pz = axis_window_probs(poca[:, 2], sig[:, 2], low=float(low_xyz[2]), size=size, n=n_z, window=window)
    return pz, px, py


def voxel_pair_probs(
    poca: Tensor,
    poca_unc: Tensor,
    *,
    low_xyz: Sequence[float],
    size: float,
    shp_zxy: Sequence[int],
    window: int | None = None,
    min_sigma: float = 1e-7,
) -> tuple[Tensor, Tensor]:
    """Sparse PoCA-in-voxel probabilities: ``(probs (N, W), flat_idx (N, W))`` with W = w_z w_x w_y.

    ``flat_idx`` indexes the (z, x, y) voxel grid flattened in C order (z from the bottom); sigma = unc + ``min_sigma``.
    """
    n_z, n_x, n_y = (int(v) for v in shp_zxy)
    (pz, iz), (px, ix), (py, iy) = voxel_axis_probs(
        poca, poca_unc, low_xyz=low_xyz, size=size, shp_zxy=shp_zxy, window=window, min_sigma=min_sigma
    )
    probs = pz[:, :, None, None] * px[:, None, :, None] * py[:, None, None, :]
    idx = (iz[:, :, None, None] * n_x + ix[:, None, :, None]) * n_y + iy[:, None, None, :]
    return probs.reshape(len(poca), -1), idx.reshape(len(poca), -1)


def dense_voxel_probs(
    poca: Tensor, poca_unc: Tensor, *, low_xyz: Sequence[float], size: float, shp_zxy: Sequence[int], min_sigma: float = 1e-7
) -> Tensor:
    """Brute-force (N, z, x, y) probabilities from the voxel edges of every voxel (reference for tests; O(N n_vox))."""
    n_z, n_x, n_y = (int(v) for v in shp_zxy)
    sig = poca_unc + min_sigma
    out = []
    for a, n in ((0, n_x), (1, n_y), (2, n_z)):
        edges = float(low_xyz[a]) + size * torch.arange(n + 1, dtype=poca.dtype, device=poca.device)
        cdf = 0.5 * (1 + torch.erf((edges[None] - poca[:, a : a + 1]) / (sig[:, a : a + 1] * _SQRT2)))
        out.append(cdf[:, 1:] - cdf[:, :-1])
    px, py, pz = out
    return pz[:, :, None, None] * px[:, None, :, None] * py[:, None, None, :]


def prob_at_least_two(effs: Tensor) -> Tensor:
    """(N,) probability of >= 2 recorded hits from (N, n) independent hit efficiencies: 1 - P(0) - P(1).

    P(0) = prod_k q_k, P(1) = sum_k e_k prod_{l != k} q_l (q = 1 - e), the products over l != k from exclusive
    prefix and suffix cumulative products (no division, exact for e = 0 or 1). Non-finite efficiencies count as 0.
    """
    e = torch.nan_to_num(effs, nan=0.0, posinf=0.0, neginf=0.0).clamp(0.0, 1.0)
    if e.shape[1] < 2:
        return e.new_zeros(len(e))
    q = 1.0 - e
    ones = torch.ones_like(q[:, :1])
    prefix = torch.cumprod(torch.cat([ones, q[:, :-1]], dim=1), dim=1)
    suffix = torch.cumprod(torch.cat([ones, q.flip(1)[:, :-1]], dim=1), dim=1).flip(1)
    p0 = prefix[:, -1] * q[:, -1]
    p1 = (e * prefix * suffix).sum(1)
    return (1.0 - p0 - p1).clamp(0.0, 1.0)
