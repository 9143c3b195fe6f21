"""Stateless track-fit, PoCA and error-propagation maths used by ``ScatterBatch``.

Tracks are straight lines parametrised by z (z up, muons travel down):

    x(z) = x_r + a_x (z - z_r),   y(z) = y_r + a_y (z - z_r)

with ``z_r`` a reference height (the middle of the passive block). A track is the 4-vector
``(x_r, y_r, a_x, a_y)`` [m, m, -, -]; a muon's in- and out-track together form the 8-vector ``P``.

Fit: per axis, weighted least squares with weights ``w_i = (eff_i / sigma_i)^2`` (hit uncertainty ``sigma_i`` [m]
divided by the hit efficiency, so that low-efficiency hits count less). Hits with a non-finite position or
uncertainty, ``sigma_i <= 0`` or ``eff_i <= 0`` get ``w_i = 0``. The fit is linear in the hit coordinates,

    x_r = sum_i c_i x_i,   a_x = sum_i g_i x_i,
    c_i = w_i / S + (z_r - z_m) w_i (z_i - z_m) / S_zz,   g_i = w_i (z_i - z_m) / S_zz,
    S = sum w_i,  z_m = sum w_i z_i / S,  S_zz = sum w_i (z_i - z_m)^2,

(evaluated in the centred form a_x = sum_i g_i (x_i - x_m), x_r = x_m + (z_r - z_m) a_x, x_m = sum w_i x_i / S),
so the covariance of ``(x_r, a_x)`` from the hit uncertainties is ``sum_i sigma_i^2 (c_i, g_i)^T (c_i, g_i)`` and the
uncertainty of any scatter variable ``v(P)`` is ``sigma_v^2 = sum_blocks J_b Cov_b J_b^T`` with ``J = dv/dP``
(forward-mode dual numbers, ``dual.py``). This equals ``sum_hits (dv/dhit)^2 sigma_hit^2`` exactly, costs O(N) and
stays differentiable (autograd) w.r.t. hits, uncertainties and efficiencies.
"""

from __future__ import annotations

import math
from typing import NamedTuple, cast

import torch
from torch import Tensor

from .dual import Dual, d_abs, d_atan, d_atan2, d_safe_sqrt, d_where, d_wrap, safe_sqrt

__all__ = ["VAR_SIZES", "LineFit", "valid_hit_mask", "fit_lines", "scatter_vars", "split_vars", "propagate_unc"]

VAR_SIZES: dict[str, int] = {
    "poca_xyz": 3,
    "dxy": 2,
    "theta_in": 1,
    "theta_out": 1,
    "phi_in": 1,
    "phi_out": 1,
    "theta_xy_in": 2,
    "theta_xy_out": 2,
    "dtheta_xy": 2,
    "dtheta": 1,
    "dphi": 1,
    "theta_msc": 1,
    "xyz_in": 3,
    "xyz_out": 3,
}
"""Scatter variables computed by ``scatter_vars`` and their widths (columns), in output order."""

MIN_Z_SPREAD: float = 1e-6
"""A fit needs a weighted RMS spread of hit z of at least this [m] (otherwise the slope is undefined)."""


class LineFit(NamedTuple):
    """Result of ``fit_lines`` for N muons with n hits.

    params: (N, 4) ``x_r, y_r, a_x, a_y`` (NaN where ``ok`` is False).
    cov: (N, 2, 2, 2) per axis (x, y) the covariance of ``(position at z_r, slope)`` from the hit uncertainties.
    valid: (N, n, 2) hits used per axis.  n_valid: (N, 2).  ok: (N,) both axes well defined (>= 2 valid hits, spread).
    """

    params: Tensor
    cov: Tensor
    valid: Tensor
    n_valid: Tensor
    ok: Tensor


def valid_hit_mask(xyz: Tensor, unc: Tensor, eff: Tensor) -> Tensor:
    """(N, n, 2) True where hit coordinate x / y can be used: finite position and uncertainty, unc > 0, eff > 0."""
    good = torch.isfinite(xyz[..., :2]) & torch.isfinite(xyz[..., 2:3])
    good &= torch.isfinite(unc[..., :2]) & (unc[..., :2] > 0)
    return good & torch.isfinite(eff) & (eff > 0)


def fit_lines(xyz: Tensor, unc: Tensor, eff: Tensor, z_ref: float) -> LineFit:
    """Weighted least-squares straight-line fit per muon and axis (see module docstring).

    Args:
        xyz: (N, n, 3) hit positions [m]; unc: (N, n, 3) hit uncertainties [m] (z column ignored);
        eff: (N, n, 1) hit efficiencies; z_ref: reference height [m] at which positions are quoted.
    """
    valid = valid_hit_mask(xyz, unc, eff)
    zero = xyz.new_zeros(())
    one = xyz.new_ones(())
    sig = torch.where(valid, unc[..., :2], one)
    w = torch.where(valid, (eff / sig) ** 2, zero)  # (N, n, 2)
    z = torch.where(valid, xyz[..., 2:3], zero)
    x = torch.where(valid, xyz[..., :2], zero)
    s = w.sum(1)  # (N, 2)
    n_valid = valid.sum(1)
    s_safe = torch.where(s > 0, s, one)
    z_m = (w * z).sum(1) / s_safe
    dz = torch.where(valid, z - z_m[:, None], zero)
    s_zz = (w * dz**2).sum(1)
    ok_ax = (n_valid >= 2) & (s > 0) & (s_zz > (MIN_Z_SPREAD**2) * s)
    s_zz_safe = torch.where(ok_ax, s_zz, one)
    g = w * dz / s_zz_safe[:, None]  # d slope / d x_i
    c = w / s_safe[:, None] + (z_ref - z_m)[:, None] * g  # d position(z_ref) / d x_i
    x_m = (w * x).sum(1) / s_safe
    slope = (g * torch.where(valid, x - x_m[:, None], zero)).sum(1)  # centred: no cancellation of large x
    pos = x_m + (z_ref - z_m) * slope
    nan = xyz.new_full((), float("nan"))
    params = torch.where(ok_ax.repeat(1, 2), torch.cat([pos, slope], dim=1), nan)
    sig2 = torch.where(valid, sig**2, zero)
    cg = torch.stack([c, g], dim=-1)  # (N, n, 2 axes, 2)
    cov = torch.einsum("nha,nhai,nhaj->naij", sig2, cg, cg)
    return LineFit(params=params, cov=cov, valid=valid, n_valid=n_valid, ok=ok_ax.all(1))


def _angles(ax: Dual, ay: Dual) -> tuple[Dual, Dual]:
    """theta (from -z) and phi (anticlockwise from +x, in [0, 2 pi)) of the flight direction (-a_x, -a_y, -1)."""
    r2 = ax**2 + ay**2
    theta = d_atan(d_safe_sqrt(r2))
    vertical = cast(Tensor, r2.v) <= 0  # phi undefined: use 0 with zero derivative
    phi = d_atan2(d_where(vertical, 0.0, -ay), d_where(vertical, 1.0, -ax))
    return theta, Dual(torch.remainder(cast(Tensor, phi.v), 2 * math.pi), phi.d)


def scatter_vars(
    params: Tensor, z_ref: float, z_top: float, z_bottom: float, with_jac: bool = False
) -> tuple[Tensor, Tensor | None]:
    """All scatter variables from (N, 8) in/out track parameters: ``(values (N, K), jacobian (K, 8, N) or None)``.

    Columns follow ``VAR_SIZES``; the Jacobian (forward-mode duals) is w.r.t. ``x_in, y_in, a_x_in, a_y_in, x_out, ...``.
    - PoCA: closest points ``q1 = p1 + s v1``, ``q2 = p2 + t v2`` of the lines ``p + s v`` with ``v = (a_x, a_y, 1)``
      through ``p = (x, y, z_ref)``; ``n = v1 x v2``, ``u = p2 - p1``: ``s = (u x v2).n / |n|^2``,
      ``t = (u x v1).n / |n|^2``; ``poca = (q1 + q2) / 2``. Parallel lines (``|n|^2 <= eps^2``, eps the dtype's
      machine epsilon) use ``s = t = 0`` (midpoint of the tracks at ``z_ref``).
    - ``dxy``: out-track xy minus in-track xy, both at the PoCA z [m].
    - ``theta`` = atan(|a|), ``phi`` = atan2(-a_y, -a_x) mod 2 pi, ``theta_xy`` = (atan(-a_x), atan(-a_y)) [rad].
    - ``dtheta_xy`` = theta_xy_out - theta_xy_in (signed). ``dtheta``, ``dphi``: |theta_out - theta_in| and
      |wrap(phi_out - phi_in)|, or, if smaller in quadrature, the same for the hypothesis (-theta_out, phi_out + pi).
    - ``theta_msc`` = atan2(|v1 x v2|, v1 . v2): the 3-D angle between the tracks [rad].
    - ``xyz_in`` / ``xyz_out``: in-track at ``z_top`` / out-track at ``z_bottom`` [m].
    """
    x1, y1, ax1, ay1, x2, y2, ax2, ay2 = Dual.inputs(params, with_jac)
    ux, uy = x2 - x1, y2 - y1
    nx, ny, nz = ay1 - ay2, ax2 - ax1, ax1 * ay2 - ay1 * ax2
    den = nx**2 + ny**2 + nz**2
    par = den.v <= torch.finfo(params.dtype).eps ** 2
    den_safe = d_where(par, 1.0, den)
    # (u x v) . n for u = (ux, uy, 0), v = (vx, vy, 1): u x v = (uy, -ux, ux vy - uy vx)
    common = uy * nx - ux * ny
    s = d_where(par, 0.0, (common + (ux * ay2 - uy * ax2) * nz) / den_safe)
    t = d_where(par, 0.0, (common + (ux * ay1 - uy * ax1) * nz) / den_safe)
    m = (s + t) * 0.5
    poca = [(x1 + s * ax1 + x2 + t * ax2) * 0.5, (y1 + s * ay1 + y2 + t * ay2) * 0.5, m + z_ref]
    dxy = [ux + (ax2 - ax1) * m, uy + (ay2 - ay1) * m]
    th1, ph1 = _angles(ax1, ay1)
    th2, ph2 = _angles(ax2, ay2)
    txy1, txy2 = [d_atan(-ax1), d_atan(-ay1)], [d_atan(-ax2), d_atan(-ay2)]
    dth_a, dph_a = th2 - th1, d_wrap(ph2 - ph1)
    dth_b, dph_b = -th2 - th1, d_wrap(ph2 + math.pi - ph1)
    use_b = cast(Tensor, dth_b.v**2 + dph_b.v**2 < dth_a.v**2 + dph_a.v**2)
    dtheta, dphi = d_abs(d_where(use_b, dth_b, dth_a)), d_abs(d_where(use_b, dph_b, dph_a))
    msc = d_atan2(d_safe_sqrt(den), ax1 * ax2 + ay1 * ay2 + 1.0)
    zero = params.new_zeros(len(params))
    xyz_in = [x1 + ax1 * (z_top - z_ref), y1 + ay1 * (z_top - z_ref), Dual(zero + z_top)]
    xyz_out = [x2 + ax2 * (z_bottom - z_ref), y2 + ay2 * (z_bottom - z_ref), Dual(zero + z_bottom)]
    dtxy = [txy2[0] - txy1[0], txy2[1] - txy1[1]]
    cols = [*poca, *dxy, th1, th2, ph1, ph2, *txy1, *txy2, *dtxy, dtheta, dphi, msc, *xyz_in, *xyz_out]
    values = torch.stack([c.v for c in cols], dim=-1)
    if not with_jac:
        return values, None
    tzero = params.new_zeros((params.shape[1], len(params)))
    return values, torch.stack([tzero if c.d is None else c.d for c in cols], dim=0)


def split_vars(flat: Tensor) -> dict[str, Tensor]:
    """Split the (..., K) output of ``scatter_vars`` (or its uncertainties) into named (..., k) views."""
    return dict(zip(VAR_SIZES, torch.split(flat, list(VAR_SIZES.values()), dim=-1)))


def propagate_unc(jac: Tensor, cov_in: Tensor, cov_out: Tensor) -> Tensor:
    """(N, K) uncertainties sqrt(sum_b J_b Cov_b J_b^T) from a (K, 8, N) Jacobian and (N, 2, 2, 2) fit covariances.

    Blocks b = (track, axis) with J_b = (d v / d position, d v / d slope) and Cov_b the 2x2 fit covariance.
    """
    j = jac.reshape(jac.shape[0], 2, 2, 2, jac.shape[-1])  # (K, track, pos|slope, axis, N)
    jp, js = j[:, :, 0], j[:, :, 1]  # (K, track, axis, N)
    cov = torch.stack([cov_in, cov_out], dim=0).permute(0, 2, 3, 4, 1)  # (track, axis, 2, 2, N)
    var = jp**2 * cov[:, :, 0, 0] + 2 * jp * js * cov[:, :, 0, 1] + js**2 * cov[:, :, 1, 1]
    return safe_sqrt(var.sum((1, 2))).T
