"""The inversion's penalty on a 2-D grid of two unknowns (the others held fixed): what the fit minimises, for plots of
its valleys and degeneracies (:func:`penalty_landscape`)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from .design import NOMINAL_EPS, Design
from .inversion import mode_matrix
from .measure import DEFAULT_REL_NOISE, check_measurements, measurement_sigma
from .model import luminosity

__all__ = ["penalty_landscape"]


def penalty_landscape(
    mode: str,
    measured: Tensor,
    *,
    design: Design,
    grid_a: Tensor,
    grid_b: Tensor,
    rel_noise: float = DEFAULT_REL_NOISE,
    axes: Sequence[int] = (0, 1),
    fixed: Tensor | None = None,
    chunk_size: int = 20_000,
    device: str | torch.device | None = None,
) -> Tensor:
    """Penalty sqrt(sum_m ((L_m(x) - C_m) / sigma_m)^2) on a grid, shape (len(grid_b), len(grid_a)).

    Unknown ``axes[0]`` runs over ``grid_a``, ``axes[1]`` over ``grid_b`` [m rad]; the other unknowns (xy12) are
    held at ``fixed`` (K,) (default nominal). ``measured``: (M,) one measurement vector.
    """
    names, pmat = mode_matrix(mode, device=device)
    dev = pmat.device
    meas = check_measurements(torch.as_tensor(measured, device=dev), name="measured").reshape(-1)
    if meas.shape[0] != design.n_configs:
        raise ValueError(f"measured: expected {design.n_configs} values, got {meas.shape[0]}")
    ia, ib = (int(a) for a in axes)
    if ia == ib or not (0 <= ia < len(names) and 0 <= ib < len(names)):
        raise ValueError(f"axes: two different indices into {names}, got {tuple(axes)}")
    ga = torch.as_tensor(grid_a, dtype=torch.float64, device=dev).reshape(-1)
    gb = torch.as_tensor(grid_b, dtype=torch.float64, device=dev).reshape(-1)
    base = (
        torch.full((len(names),), NOMINAL_EPS, dtype=torch.float64, device=dev)
        if fixed is None
        else torch.as_tensor(fixed, dtype=torch.float64, device=dev).reshape(len(names))
    )
    sigma = measurement_sigma(meas, rel_noise=rel_noise)
    cfg = design.config.to(dev)
    pts = base.expand(gb.numel(), ga.numel(), len(names)).clone()
    pts[..., ia] = ga[None, :]
    pts[..., ib] = gb[:, None]
    flat = pts.reshape(-1, len(names))
    out = torch.empty(flat.shape[0], dtype=torch.float64, device=dev)
    with torch.no_grad():
        for s in range(0, flat.shape[0], chunk_size):  # memory chunks
            eps = flat[s : s + chunk_size, None, :] @ pmat
            r = (luminosity(cfg, eps, device=dev) - meas) / sigma
            out[s : s + chunk_size] = (r * r).sum(-1).sqrt()
    return out.reshape(gb.numel(), ga.numel())
