"""Simulated luminosity measurements: C_bm = L(config_m, eps_b) (1 + rel_noise * n_bm), n ~ N(0, 1) seeded."""

from __future__ import annotations

import torch
from torch import Tensor

from .config import IPConfig
from .model import luminosity

__all__ = ["DEFAULT_REL_NOISE", "measure", "check_measurements", "measurement_sigma"]

DEFAULT_REL_NOISE: float = 1e-3
"""Default relative rms measurement noise (0.1 %), also the nominal weighting scale for noise-free data."""


def check_measurements(measured: Tensor, *, name: str = "measured") -> Tensor:
    """Return ``measured`` as float64 if all values are finite and > 0, else ``ValueError`` naming ``name``."""
    m = torch.as_tensor(measured, dtype=torch.float64)
    if m.ndim < 1:
        raise ValueError(f"{name}: expected at least one dimension (..., M), got a scalar")
    bad_nan = torch.isnan(m)
    if bool(bad_nan.any()):
        raise ValueError(
            f"{name}: {int(bad_nan.sum())} NaN luminosity value(s) (first at index {tuple(bad_nan.nonzero()[0].tolist())})"
        )
    if not bool(torch.isfinite(m).all()):
        raise ValueError(f"{name}: infinite luminosity value(s)")
    if not bool((m > 0).all()):
        raise ValueError(f"{name}: luminosities must be > 0 cm^-2 s^-1 (min {m.min().item()!r})")
    return m


def measurement_sigma(measured: Tensor, *, rel_noise: float = DEFAULT_REL_NOISE) -> Tensor:
    """Absolute uncertainty sigma = rel_noise * C; ``rel_noise`` <= 0 (noise-free data) uses 0.1 % as a nominal scale."""
    r = float(rel_noise)
    if r != r:
        raise ValueError("rel_noise: must be a number, got NaN")
    return (r if r > 0 else DEFAULT_REL_NOISE) * measured


def measure(
    config: IPConfig,
    eps: Tensor,
    *,
    rel_noise: float = DEFAULT_REL_NOISE,
    generator: torch.Generator | None = None,
    device: str | torch.device | None = None,
) -> Tensor:
    """Measured luminosities (B, M) [cm^-2 s^-1] for true emittances ``eps`` (B, 4) and a design ``config`` (M,).

    ``rel_noise`` = 0 gives noise-free values; otherwise Gaussian relative noise of rms ``rel_noise`` drawn from
    ``generator`` (a CPU ``torch.Generator``; the draw is the same on every device). Noise is redrawn (vectorised)
    for any value that would be <= 0.
    """
    rel = float(rel_noise)
    if not (rel >= 0 and rel < float("inf")):
        raise ValueError(f"rel_noise: must be finite and >= 0, got {rel_noise!r}")
    eps = torch.as_tensor(eps, dtype=torch.float64, device=device)
    if eps.ndim != 2 or eps.shape[-1] != 4:
        raise ValueError(f"eps: expected shape (B, 4) = (eps_x1, eps_y1, eps_x2, eps_y2), got {tuple(eps.shape)}")
    with torch.no_grad():
        lum = luminosity(config, eps[:, None, :], device=eps.device)
    if lum.ndim != 2:
        raise ValueError(f"config: expected a batch of M configurations (fields of shape (M,)), got L {tuple(lum.shape)}")
    check_measurements(lum, name="noise-free luminosity")
    if rel == 0.0:
        return lum
    noise = torch.randn(lum.shape, dtype=torch.float64, generator=generator).to(lum.device)
    for _ in range(100):  # practically never taken: a draw below -1/rel_noise
        bad = noise * rel <= -1.0
        if not bool(bad.any()):
            break
        noise = torch.where(bad, torch.randn(lum.shape, dtype=torch.float64, generator=generator).to(lum.device), noise)
    return lum * (1.0 + rel * noise)
