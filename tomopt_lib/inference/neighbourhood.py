"""Means over each voxel's neighbourhood (by default 3 x 3 x 3; itself included, only voxels inside the grid counted),
for voxel grids of any size: ``F.avg_pool3d`` with ``padding=1`` refuses grids thinner than 3 voxels along an axis (a
passive block of 1 or 2 layers), so the grid is zero-padded first and the sums are divided by the in-grid counts."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["neighbourhood_mean", "bilateral_neighbourhood_mean", "check_extent"]


def check_extent(extent: tuple[int, int], name: str = "extent") -> tuple[int, int]:
    """``(n_z, n_xy)`` as ints; ``ValueError`` naming ``name`` unless both are odd integers >= 1."""
    msg = f"{name} must be a pair (n_z, n_xy) of odd integers >= 1 (voxels along z and along x, y), got {extent!r}"
    try:
        k_z, k_xy = (int(k) for k in extent)
    except (TypeError, ValueError):
        raise ValueError(msg) from None
    if tuple(extent) != (k_z, k_xy) or min(k_z, k_xy) < 1 or k_z % 2 == 0 or k_xy % 2 == 0:
        raise ValueError(msg)
    return k_z, k_xy


def neighbourhood_mean(values: Tensor, extent: tuple[int, int] = (3, 3)) -> Tensor:
    """m_v = (1 / |N_v|) sum_{u in N_v} x_u, N_v the voxels of the grid in the box of ``extent`` = (n_z, n_xy) voxels
    centred on v (odd numbers: (3, 3), the default, is one step along every axis; (1, 5) is the 5 x 5 box within v's
    own layer).

    ``values``: (..., Z, X, Y) with at most two leading dimensions (e.g. (1, Z, X, Y) or (C, Z, X, Y)); returns the
    same shape and dtype. Differentiable; O(voxels) memory."""
    if values.dim() < 3 or values.dim() > 5:
        raise ValueError(f"values must have shape (..., Z, X, Y) with 3 to 5 dimensions, got {tuple(values.shape)}")
    k_z, k_xy = check_extent(extent)
    shape = values.shape
    grid = values.reshape(-1, 1, *shape[-3:])  # (B, 1, Z, X, Y)
    pad = (k_xy // 2, k_xy // 2, k_xy // 2, k_xy // 2, k_z // 2, k_z // 2)
    kernel = (k_z, k_xy, k_xy)
    sums = F.avg_pool3d(F.pad(grid, pad), kernel, stride=1, divisor_override=1)
    counts = F.avg_pool3d(F.pad(grid.new_ones((1, 1, *shape[-3:])), pad), kernel, stride=1, divisor_override=1)
    return (sums / counts).reshape(shape)


def bilateral_neighbourhood_mean(values: Tensor, widths: Tensor) -> Tensor:
    """Edge-aware 3 x 3 x 3 mean: m_v = sum_u w_vu x_u / sum_u w_vu over the in-grid neighbourhood N_v (v included), with
    w_vu = exp(-(x_u - x_v)^2 / (t_v^2 + t_u^2)) (a Gaussian in the difference with variance (t_v^2 + t_u^2) / 2).

    Neighbours within a few ``widths`` of the voxel's value count fully (-> :func:`neighbourhood_mean` for large widths);
    a neighbour across a step much larger than the widths does not count. ``values``, ``widths``: (Z, X, Y), widths > 0;
    the weights are detached (the mean is linear in the values for its gradient). The 27 stencil offsets are a fixed
    loop of whole-grid operations."""
    if values.dim() != 3 or widths.shape != values.shape:
        raise ValueError(f"values and widths must both have shape (Z, X, Y), got {tuple(values.shape)}, {tuple(widths.shape)}")
    nz, nx, ny = values.shape
    pad = (1, 1, 1, 1, 1, 1)
    x_pad = F.pad(values[None, None], pad)[0, 0]
    t2_pad = F.pad(widths.detach().square()[None, None], pad)[0, 0]
    in_grid = F.pad(torch.ones_like(values)[None, None], pad)[0, 0]
    x_d, t2 = values.detach(), widths.detach().square()
    num, den = torch.zeros_like(values), torch.zeros_like(values)
    for dz in range(3):
        for dx in range(3):
            for dy in range(3):
                sl = (slice(dz, dz + nz), slice(dx, dx + nx), slice(dy, dy + ny))
                nb = x_pad[sl]
                var = (t2 + t2_pad[sl]).clamp_min(1e-30)
                w = in_grid[sl] * torch.exp(-(nb.detach() - x_d).square() / var)
                num, den = num + w * nb, den + w
    return num / den
