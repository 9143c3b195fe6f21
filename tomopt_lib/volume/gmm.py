"""The sensitivity map of a heat-map detector: a mixture of axis-aligned Gaussian bumps (``GMM``), and the Fibonacci
lattice that spreads its initial centres (see :mod:`.heatmap`)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from ..checks import check_number, check_vector
from ..runtime import DEFAULT_DTYPE, DeviceLike, resolve_device

__all__ = ["GMM", "fibonacci_centres"]

INIT_NORM: float = 1.0
"""Initial amplitude of every component (mean coverage ~ 1 - exp(-pi / 2) = 0.79 over the initial area)."""
INIT_SIG_FRAC: float = 0.5
"""Initial width per axis = ``INIT_SIG_FRAC * span / sqrt(K)`` (half the side of one component's share of the area)."""

Number = float | int | Tensor


def _positive(name: str, value: Number, *, unit: str, high: float | None = None) -> float:
    return check_number(name, value, low=0.0, low_open=True, high=high, unit=unit)


def _vec(name: str, value: Sequence[float] | Tensor, n: int, *, positive: bool = False) -> Tensor:
    """:func:`~tomopt_lib.checks.check_vector` in the default dtype."""
    return check_vector(name, value, n, positive=positive, dtype=DEFAULT_DTYPE)


_GOLDEN: float = (math.sqrt(5.0) - 1.0) / 2.0


def fibonacci_centres(n: int, centre: Tensor, span: Tensor) -> Tensor:
    """(n, 2) points spread evenly over the rectangle ``centre +- span / 2``: a Fibonacci lattice,
    u_k = (k + 1/2) / n, v_k = frac((k + 1/2) * (sqrt(5) - 1) / 2), point = centre + span * ((u, v) - 1/2)."""
    k = torch.arange(n, dtype=DEFAULT_DTYPE) + 0.5
    uv = torch.stack([k / n, torch.frac(k * _GOLDEN)], dim=1)
    return centre + span * (uv - 0.5)


class GMM(nn.Module):
    """The sensitivity map: a mixture of K axis-aligned Gaussian bumps (not normalised to one).

    ``S(xy) = sum_k n_k exp(-sum_a (xy_a - mu_ka)^2 / (2 sig_ka^2))``; its integral over the plane is
    ``sum_k 2 pi n_k sig_kx sig_ky`` [m^2].

    Args:
        n_cluster: number of components K (>= 1).
        init_xy: (2,) centre [m] of the initial area.
        init_xy_span: (2,) full widths [m] of the initial area; the centres start on a Fibonacci lattice over it and the
            widths at ``INIT_SIG_FRAC * span / sqrt(K)``.
        init_norm: initial amplitude of every component (> 0).
        device: device of the parameters.
    """

    def __init__(
        self,
        *,
        n_cluster: int = 30,
        init_xy: Sequence[float] | Tensor,
        init_xy_span: Sequence[float] | Tensor,
        init_norm: float = INIT_NORM,
        device: DeviceLike = None,
    ) -> None:
        super().__init__()
        k = int(check_number("n_cluster", n_cluster, low=1, integer=True, unit="(number of Gaussian components)"))
        norm0 = _positive("init_norm", init_norm, unit="(component amplitude)")
        dev = resolve_device(device)
        centre = _vec("init_xy", init_xy, 2)
        span = _vec("init_xy_span", init_xy_span, 2, positive=True)
        self.n_cluster = k
        self.mu = nn.Parameter(fibonacci_centres(k, centre, span).to(dev))
        self.sig = nn.Parameter((INIT_SIG_FRAC * span / math.sqrt(k)).expand(k, 2).clone().to(dev))
        self.norm = nn.Parameter(torch.full((k,), norm0, dtype=DEFAULT_DTYPE, device=dev))

    def forward(self, xy: Tensor, norm_scale: Tensor | float = 1.0) -> Tensor:
        """(N,) sensitivity S at ``xy`` (N, 2) [m], with every amplitude multiplied by ``norm_scale``."""
        d = (xy.reshape(-1, 1, 2) - self.mu.unsqueeze(0)) / self.sig.unsqueeze(0)  # (N, K, 2)
        return (torch.exp(-0.5 * (d**2).sum(-1)) * (self.norm * norm_scale).unsqueeze(0)).sum(-1)

    def component_areas(self) -> Tensor:
        """(K,) integral of each unit-amplitude bump, 2 pi sig_x sig_y [m^2]."""
        return 2 * math.pi * self.sig.prod(dim=-1)

    def integral(self) -> Tensor:
        """Integral of S over the plane [m^2] (0-d): sum_k 2 pi n_k sig_kx sig_ky."""
        return (self.norm * self.component_areas()).sum()

    def extra_repr(self) -> str:
        return f"n_cluster={self.n_cluster}"
