"""The path inferrer's final empirical-Bayes shrinkage (:mod:`.x0_path`, module docstring "Final shrinkage"): in
ln rho, each voxel is pulled towards the information-weighted mean of its 3x3x3 neighbourhood, itself blended with the
block's typical density, with a weight worth a number of crossings of the voxel."""

from __future__ import annotations

import torch
from torch import Tensor

from .neighbourhood import neighbourhood_mean

__all__ = ["shrink_to_neighbourhood"]

_TINY = 1e-30


def shrink_to_neighbourhood(
    rho: Tensor,
    info: Tensor,
    crossings: Tensor,
    shp_zxy: tuple[int, int, int],
    *,
    rho_bounds: tuple[float, float],
    shrink_crossings: float,
    min_data_fraction: float,
    extent: tuple[int, int] = (3, 3),
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Shrink the (n_vox,) densities ``rho`` [1/m] in ln rho:

        ln rho_j <- (I'_j ln rho_j + P ln rho_nb) / (I'_j + P),   I'_j = rho_j^2 I_j,

    I_j = ``info`` the voxel's angle-only Fisher information, P = ``shrink_crossings`` x the median I' per crossing
    (``crossings``: the voxels' path lengths in units of the voxel size), ln rho_nb = the I'-weighted mean of ln rho over
    the voxel's 3x3x3 neighbourhood blended, with weight P, with the median of ln rho over the measured voxels (the
    block's typical material: a data-poor neighbourhood falls back to it; the block's mean density, set by a dense
    minority, made the beryllium around a lead corner fall back to lead-dominated densities, 0.51x its X0 at 1k muons
    over 20 seeds). A voxel whose density ran into a bound of ``rho_bounds`` (within a factor 2) has no interior maximum
    of its likelihood: I' = 0, so the neighbourhood sets it. Voxels with I' < ``min_data_fraction`` P are ``low``
    (set by the prior).

    Returns ``(ln_post, info_log, p_log, low)``: the shrunk ln rho (n_vox,), I' (n_vox,, 0 at a bound), P (0-d) and the
    (n_vox,) bool low-data flags."""
    rho_lo, rho_hi = rho_bounds
    info_log = rho.square() * info
    per_cross = (info_log / crossings.clamp_min(_TINY))[crossings > 0]
    at_bound = ((rho <= 2 * rho_lo) | (rho >= rho_hi / 2)).detach()
    info_log = torch.where(at_bound, torch.zeros_like(info_log), info_log)
    p_log = shrink_crossings * (per_cross.median() if len(per_cross) else info_log.new_ones(()))
    shp = (1, *shp_zxy)
    ln_rho = torch.log(rho)
    w = info_log.detach()
    w_nb = neighbourhood_mean(w.reshape(shp), extent).reshape(-1)
    ln_nb = neighbourhood_mean((w * ln_rho).reshape(shp), extent).reshape(-1) / w_nb.clamp_min(_TINY)
    ln_nb = torch.where(w_nb > 0, ln_nb, ln_rho)
    low = w < min_data_fraction * p_log
    measured = ~low
    ln_glob = ln_rho.detach()[measured].median() if bool(measured.any()) else ln_rho.detach().median()
    ln_nb = (w_nb * ln_nb + p_log * ln_glob) / (w_nb + p_log).clamp_min(_TINY)
    ln_post = (info_log * ln_rho + p_log * ln_nb) / (info_log + p_log).clamp_min(_TINY)
    return ln_post, info_log, p_log, low
