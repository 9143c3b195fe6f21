"""Fused NumPy step of ``PassiveLayer`` for the PDG scatter model on the CPU (a speed path, same results).

A passive layer is crossed in ``n_steps`` small steps per muon batch; at ``mu_bs`` ~ 250 the ~100 tensor operations
of one eager torch step are dominated by the per-operation dispatch overhead (~6 us each, ~0.5 ms per step, about
half of an optimisation epoch). :func:`pdg_step_numpy` performs the same operations in the same order as
``PassiveLayer`` + ``PDGScatterModel.compute_scattering`` + ``MuonBatch.add_x0_traversed`` / ``scatter_dxyz`` /
``deflect`` on NumPy views of the (CPU, no-grad) muon state, where an element-wise operation on a few hundred values
costs ~1 us. The Gaussian draws are made by the caller with ``torch.randn`` (same generator, shape and order as the
eager path), so a seeded run draws the same random numbers; results agree with the eager path to float rounding
(NumPy's and torch's float32 transcendental functions may differ in the last bit).
"""

from __future__ import annotations

import math

import numpy as np

from ..core import MUON_MASS, MUON_MASS2, SCATTER_COEF_A, SCATTER_COEF_B
from .energy_loss import STOP_KINETIC_ENERGY

__all__ = ["pdg_step_numpy"]

_LOG_FLOOR = 1e-30


def _big_f(x: np.ndarray) -> np.ndarray:
    """F(x) = x (1 + B ln x)^2 with the log factor clamped at 0 (``PDGScatterModel.theta0_increment``)."""
    return x * np.maximum(1.0 + SCATTER_COEF_B * np.log(np.maximum(x, _LOG_FLOOR)), 0.0) ** 2


def _dedx(table: np.ndarray, rows: np.ndarray, p: np.ndarray, ln_p_min: float, dln_p: float) -> np.ndarray:
    """-dE/dx [GeV/m] from an ``EnergyLossTable``'s (n_rows, n_p) table, linear in ln p (``EnergyLossTable.dedx``)."""
    n_p = table.shape[1]
    x = (np.log(np.maximum(p, math.exp(ln_p_min))) - ln_p_min) / dln_p
    i0 = np.clip(np.floor(x), 0, n_p - 2)
    frac = np.clip(x - i0, 0.0, 1.0)
    base = rows * n_p + i0.astype(np.int64)
    flat = table.reshape(-1)
    lo = flat[base]
    return lo + frac * (flat[base + 1] - lo)


def _eloss_step(p: np.ndarray, rows: np.ndarray, length: np.ndarray, eloss: tuple) -> tuple[np.ndarray, np.ndarray]:
    """``(p_new, stopped)``: ``EnergyLossTable.step`` (midpoint rule on the kinetic energy) in float64 NumPy."""
    table, _, ln_p_min, dln_p = eloss
    p64, l64 = p.astype(np.float64), length.astype(np.float64)
    t = np.sqrt(p64 * p64 + MUON_MASS2) - MUON_MASS
    t_half = t - 0.5 * l64 * _dedx(table, rows, p64, ln_p_min, dln_p)
    p_half = np.sqrt(np.maximum(t_half * (t_half + 2 * MUON_MASS), 0.0))
    t_new = t - l64 * _dedx(table, rows, p_half, ln_p_min, dln_p)
    stopped = (t_new < STOP_KINETIC_ENERGY) | (t_half < STOP_KINETIC_ENERGY)
    p_new = np.where(stopped, 0.0, np.sqrt(np.maximum(t_new * (t_new + 2 * MUON_MASS), 0.0)))
    return p_new, stopped


def pdg_step_numpy(
    muons: np.ndarray,
    x0_traversed: np.ndarray,
    padded: np.ndarray,
    z: np.ndarray,
    *,
    z_target: float,
    size: float,
    n_xy: tuple[int, int],
    log_term: bool,
    max_angle: float,
    use_beta: bool = False,
    eloss: tuple | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray | None]:
    """``(new state (N, 6), new x0_traversed (N,), keep (N,) bool, stopped (N,) bool or None)`` after one vertical
    step down to ``z_target``.

    ``keep`` is False for muons turned upwards or with a non-finite direction (``MuonBatch.remove_upwards_muons``).
    ``use_beta``: Highland's 1 / (beta p) instead of 1 / p. ``eloss``: ``(table, padded rows (flat, like
    ``padded``), ln p_min, d ln p)`` of an ``EnergyLossTable`` to apply continuous energy loss (``PassiveLayer``):
    the momentum becomes p_new, the step scatters with sqrt(p p_new), ``stopped`` flags muons that stopped.

    Args:
        muons: (N, 6) state (x, y, z, p, theta, phi); not modified.
        x0_traversed: (N,) radiation lengths crossed so far.
        padded: flat (n_x + 2) (n_y + 2) X0 map with an inf border (``PassiveLayer._x0_lookup``).
        z: (2, 2, N) standard normal draws, z[k][axis] (``PDGScatterModel.compute_scattering``).
        z_target, size, n_xy: step end [m], voxel size [m] and (n_x, n_y) of the layer.
        log_term, max_angle: the PDG model's settings.
    """
    dt = muons.dtype
    x, y, zz, mom, theta, phi = np.ascontiguousarray(muons.T)  # contiguous columns: faster element-wise ops
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        ct, st, cp, sp = np.cos(theta), np.sin(theta), np.cos(phi), np.sin(phi)
        inv_ct = dt.type(1.0) / ct
        dz = zz - dt.type(z_target)
        tan_dz = st * inv_ct * dz
        hx, hy = tan_dz * cp, tan_dz * sp
        nx, ny = n_xy
        inv_size = dt.type(1.0 / size)
        ix = np.minimum(np.maximum(np.floor((x + dt.type(0.5) * hx) * inv_size).astype(np.int64), -1), nx) + 1
        iy = np.minimum(np.maximum(np.floor((y + dt.type(0.5) * hy) * inv_size).astype(np.int64), -1), ny) + 1
        cell = ix * (ny + 2) + iy
        x0 = padded[cell]
        step_length = dz * inv_ct
        dx_x0 = step_length / x0
        stopped = None
        mom_new = mom
        if eloss is not None:
            p_new, stopped = _eloss_step(mom, eloss[1][cell], step_length, eloss)
            mom_new = p_new.astype(dt)
            mom = np.where(stopped, mom, np.sqrt(mom * p_new).astype(dt))  # the step's effective momentum
        inv_bp = dt.type(1.0) / mom
        if use_beta:
            inv_bp = (np.sqrt(mom.astype(np.float64) ** 2 + MUON_MASS2) / mom.astype(np.float64) ** 2).astype(dt)
        if log_term:
            xb = x0_traversed.astype(np.float64)
            var = np.maximum(_big_f(xb + dx_x0.astype(np.float64)) - _big_f(xb), 0.0)
            theta0 = (SCATTER_COEF_A * np.sqrt(var)).astype(dt) * inv_bp
        else:
            theta0 = dt.type(SCATTER_COEF_A) * np.sqrt(dx_x0) * inv_bp
        z1, z2 = z[0], z[1]
        a = np.minimum(np.maximum(z2 * theta0, dt.type(-max_angle)), dt.type(max_angle))
        d = (z1 * dt.type(1.0 / math.sqrt(12.0)) + dt.type(0.5) * z2) * (step_length * theta0)
        new_x0_trav = x0_traversed + dx_x0
        d1, d2 = d[0] * inv_ct, d[1]
        out = np.empty((6, len(muons)), dtype=dt)
        out[0] = x + (hx + d1 * cp - d2 * sp)
        out[1] = y + (hy + d1 * sp + d2 * cp)
        out[2] = zz + (-dz)
        out[3] = mom_new
        # deflection (MuonBatch.deflect), only inside the footprint (finite X0)
        t1, t2 = a[0], a[1]
        ang = np.hypot(t1, t2)
        ca = np.cos(ang)
        sinc = np.where(ang > 0, np.sin(ang) / np.maximum(ang, dt.type(1e-30)), dt.type(1.0))
        h1 = ca * st + sinc * t1 * ct
        h2 = sinc * t2
        cz = ca * ct - sinc * t1 * st
        new_theta = np.arctan2(np.hypot(h1, h2), cz)
        new_phi = np.mod(phi + np.arctan2(h2, h1), dt.type(2 * math.pi))
        inside = np.isfinite(x0)
        out[4] = np.where(inside, new_theta, theta)
        out[5] = np.where(inside, new_phi, phi)
        keep = (out[4] < math.pi / 2) & np.isfinite(out[5])  # MuonBatch.remove_upwards_muons
    return out.T, new_x0_trav, keep, stopped
