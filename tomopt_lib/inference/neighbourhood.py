"""Means over each voxel's 3 x 3 x 3 neighbourhood (itself included, only voxels inside the grid counted), for voxel
grids of any size: ``F.avg_pool3d`` with ``padding=1`` refuses grids thinner than 3 voxels along an axis (a passive
block of 1 or 2 layers), so the grid is zero-padded first and the sums are divided by the in-grid counts."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

__all__ = ["neighbourhood_mean"]


def neighbourhood_mean(values: Tensor) -> Tensor:
    """m_v = (1 / |N_v|) sum_{u in N_v} x_u, N_v the voxels of the grid within one step of v along every axis.

    ``values``: (..., Z, X, Y) with at most two leading dimensions (e.g. (1, Z, X, Y) or (C, Z, X, Y)); returns the
    same shape and dtype. Differentiable; O(voxels) memory."""
    if values.dim() < 3 or values.dim() > 5:
        raise ValueError(f"values must have shape (..., Z, X, Y) with 3 to 5 dimensions, got {tuple(values.shape)}")
    shape = values.shape
    grid = values.reshape(-1, 1, *shape[-3:])  # (B, 1, Z, X, Y)
    sums = F.avg_pool3d(F.pad(grid, (1, 1, 1, 1, 1, 1)), 3, stride=1, divisor_override=1)
    counts = F.avg_pool3d(F.pad(grid.new_ones((1, 1, *shape[-3:])), (1, 1, 1, 1, 1, 1)), 3, stride=1, divisor_override=1)
    return (sums / counts).reshape(shape)
