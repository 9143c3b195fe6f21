"""``AbsLayer``: geometry shared by passive and detector layers, with input validation.

A layer spans x in [0, lw[0]] and y in [0, lw[1]] [m]; ``z`` is the *top* of the layer [m] and ``size`` its
thickness [m] (also the voxel edge of passive layers).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..runtime import DEFAULT_DTYPE, DeviceLike, resolve_device

__all__ = ["AbsLayer"]


class AbsLayer(nn.Module):
    """Base of every layer: ``lw`` (2,) footprint [m], ``z`` top [m], ``size`` thickness [m], ``device``."""

    def __init__(self, lw: Tensor | Sequence[float], z: float, size: float, device: DeviceLike = None) -> None:
        super().__init__()
        self.device = resolve_device(device)
        lw_t = torch.as_tensor(lw, dtype=DEFAULT_DTYPE).detach().clone().reshape(-1)
        if lw_t.numel() != 2 or not bool(torch.isfinite(lw_t).all()) or bool((lw_t <= 0).any()):
            raise ValueError(f"lw must be two finite lengths > 0 m, got {lw_t.tolist()}")
        size = float(size)
        if not size > 0 or size != size or size == float("inf"):
            raise ValueError(f"size must be a finite thickness > 0 m, got {size}")
        z = float(z)
        if z != z or abs(z) == float("inf"):
            raise ValueError(f"z must be finite, got {z}")
        self.lw = lw_t.to(self.device)
        self.z = torch.tensor([z], dtype=DEFAULT_DTYPE, device=self.device)
        self.size = size

    def get_lw_z_size(self) -> tuple[Tensor, Tensor, float]:
        """``(lw, z, size)`` of the layer."""
        return self.lw, self.z, self.size

    @property
    def z_top(self) -> float:
        return float(self.z.item())

    @property
    def z_bottom(self) -> float:
        return float(self.z.item()) - self.size

    def extra_repr(self) -> str:
        return f"lw={self.lw.tolist()}, z={self.z_top:.4g}, size={self.size:.4g}"
