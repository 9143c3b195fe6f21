"""Vectorised, differentiable luminosity of two Gaussian bunches (hourglass, crossing, offsets, alpha, dispersion).

Formula (transverse and time integrals done analytically, one integral over z left), for plane u in {x, y} and
beam b in {1, 2}::

    gamma_b = E_b / m_p,   beta_rb = sqrt(1 - gamma_b^-2)
    beta_ub(z)  = beta*_ub - 2 alpha*_ub z + (1 + alpha*_ub^2) z^2 / beta*_ub                (hourglass)
    D_ub(z)     = beta_rb (D*_ub + D'*_ub z)                  (the reference's beta_r factor on D, kept)
    sigma_ub^2  = beta_ub(z) eps_ub / (beta_rb gamma_b) + (D_ub(z) dpp_b)^2
    Sigma_u^2   = sigma_u1^2 + sigma_u2^2,   Delta_u(z) = sep_u + cross_u z
    K(z) = exp(-1/2 [Delta_x^2/Sigma_x^2 + Delta_y^2/Sigma_y^2 + (br1+br2)^2 z^2 / (br2^2 sz1^2 + br1^2 sz2^2)])
           / sqrt(Sigma_x^2 Sigma_y^2 (sz1^2 + sz2^2))
    L = f_rev n_bunches n1 n2 / (sqrt(2) pi^(3/2)) * int_{-5 sz}^{+5 sz} K(z) dz * 1e-4     [cm^-2 s^-1]

with sz = max(sigma_z1, sigma_z2). Unlike the reference, n2 and energy2 (gamma, beta_r of beam 2) are honoured.

Quadrature: fixed composite Gauss-Legendre, three panels covering [-5 sz, 5 sz] (the reference's range): a core
window z_c +- k sigma_eff around the analytic peak of the exponent at beta(0) (sigma_eff^-2 = theta_x^2/Sigma_x0^2 +
theta_y^2/Sigma_y0^2 + a, z_c = -(sep_x theta_x/Sigma_x0^2 + sep_y theta_y/Sigma_y0^2) sigma_eff^2, a the z term above)
and the two tails, which the hourglass makes non-negligible (offsets in the non-crossing plane: up to 1e-5 of L).
Nodes live in t = asinh((z - zr)/w), where zr +- i w are the complex zeros of Sigma_u^2(z) (the integrand's
singularities, |w| ~ beta*): in t they sit at +- i pi/2, so GL converges geometrically whatever beta*/sigma_z.
Default 48 + 2 x 16 nodes: <= 1e-11 from tight scipy quad on thousands of random configurations in physical ranges
(beta* 0.15-2 m, sigma_z 5-40 cm, offsets up to ~6 sigma, crossing up to 600 urad); head-on with beta* up to 1e5 m
(beta*/sigma_z up to 2e6) <= ~1e-12 (sinh by ``torch.sinh``: a difference of exponentials lost up to 4e-11 there).
Beyond physical ranges the fixed rule can under-resolve the integrand: in a 300-configuration stress set (alpha* up
to +-10, beta* 5 cm - 10 m, sigma_z 1 cm - 1 m unequal between the beams, offsets up to 0.2 mm, crossing up to
1 mrad) the median error is 4e-15, the 99th percentile ~1e-7 and the worst ~2e-4 (very unequal bunch lengths with
large alpha*); where the nearer singularity switches plane (e.g. alpha* ~ 9) L can jump by ~2e-8. The panel edges are
computed without gradient; autograd differentiates the fixed rule. CPU batches are processed in cache-sized blocks.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

from .config import IPConfig, broadcast_shapes
from .constants import DTYPE, M2_TO_CM2, PROTON_MASS_GEV

__all__ = ["luminosity", "gauss_legendre", "QuadratureSpec", "DEFAULT_QUADRATURE", "beam_factors", "sigma_coefficients"]

DeviceLike = str | torch.device | None


class QuadratureSpec:
    """Composite Gauss-Legendre layout: ``n_core`` nodes over ``z_c +- k_core sigma_eff`` and ``n_tail`` per tail."""

    __slots__ = ("n_core", "n_tail", "k_core")

    def __init__(self, *, n_core: int = 48, n_tail: int = 16, k_core: float = 8.0) -> None:
        if n_core < 2 or n_tail < 2:
            raise ValueError(f"n_core and n_tail must be >= 2, got {n_core}, {n_tail}")
        if not (k_core > 0 and math.isfinite(k_core)):
            raise ValueError(f"k_core must be positive and finite, got {k_core}")
        self.n_core, self.n_tail, self.k_core = int(n_core), int(n_tail), float(k_core)

    def __repr__(self) -> str:
        return f"QuadratureSpec(n_core={self.n_core}, n_tail={self.n_tail}, k_core={self.k_core})"


DEFAULT_QUADRATURE = QuadratureSpec()
_CPU_BLOCK_ELEMENTS = 20480  # batch x nodes elements per block on CPU (about 160 kB per float64 temporary)


@lru_cache(maxsize=32)
def _leggauss(n: int) -> tuple[np.ndarray, np.ndarray]:
    x, w = np.polynomial.legendre.leggauss(n)
    x.setflags(write=False)
    w.setflags(write=False)
    return x, w


def gauss_legendre(n: int, *, device: DeviceLike = None, dtype: torch.dtype = DTYPE) -> tuple[torch.Tensor, torch.Tensor]:
    """Gauss-Legendre nodes and weights on [-1, 1] (numpy's ``leggauss``, cached as read-only numpy arrays)."""
    x, w = _leggauss(int(n))
    return torch.tensor(x, dtype=dtype, device=device), torch.tensor(w, dtype=dtype, device=device)


@lru_cache(maxsize=32)
def _panel_matrices(n_tail: int, n_core: int) -> tuple[np.ndarray, np.ndarray]:
    """(4, N) matrices mapping the panel edges (t0, t1, t2, t3) to nodes t and weights dt of the composite rule.

    Panels [t0, t1] and [t2, t3] get ``n_tail`` Gauss-Legendre nodes, [t1, t2] gets ``n_core``:
    node = (1 - x)/2 t_p + (1 + x)/2 t_(p+1), weight = w/2 (t_(p+1) - t_p).
    """
    rules = [_leggauss(n_tail), _leggauss(n_core), _leggauss(n_tail)]
    n_total = 2 * n_tail + n_core
    t_mat, w_mat = np.zeros((4, n_total)), np.zeros((4, n_total))
    start = 0
    for panel, (x, w) in enumerate(rules):
        cols = slice(start, start + len(x))
        t_mat[panel, cols], t_mat[panel + 1, cols] = 0.5 * (1 - x), 0.5 * (1 + x)
        w_mat[panel, cols], w_mat[panel + 1, cols] = -0.5 * w, 0.5 * w
        start += len(x)
    t_mat.setflags(write=False)
    w_mat.setflags(write=False)
    return t_mat, w_mat


def beam_factors(energy: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(beta_r, beta_r gamma) for total energy [GeV]: gamma = E/m_p, beta_r = sqrt(1 - 1/gamma^2)."""
    gamma = energy / PROTON_MASS_GEV
    beta_r = torch.sqrt(1.0 - gamma**-2)
    return beta_r, beta_r * gamma


def sigma_coefficients(p: dict[str, torch.Tensor], eps: torch.Tensor) -> dict[str, torch.Tensor]:
    """Coefficients of Sigma_u^2(z) = c0 + c1 z + c2 z^2 [m^2] per plane, and beam factors.

    ``p``: float64 tensors of the config fields; ``eps``: (..., 4) normalised emittances (x1, y1, x2, y2) [m rad].
    """
    br1, bg1 = beam_factors(p["energy1"])
    br2, bg2 = beam_factors(p["energy2"])
    out: dict[str, torch.Tensor] = {"br1": br1, "br2": br2}
    for k, u in enumerate(("x", "y")):
        c0: torch.Tensor | None = None
        c1: torch.Tensor | None = None
        c2: torch.Tensor | None = None
        for b, (br, bg) in ((1, (br1, bg1)), (2, (br2, bg2))):
            e = eps[..., k + 2 * (b - 1)] / bg
            beta, alpha = p[f"beta_{u}{b}"], p[f"alpha_{u}{b}"]
            dd = (br * p[f"dpp{b}"]) ** 2
            d0, d1 = p[f"disp_{u}{b}"], p[f"disp_p{u}{b}"]
            t0 = e * beta + dd * d0 * d0
            t1 = -2.0 * e * alpha + 2.0 * dd * d0 * d1
            t2 = e * (1.0 + alpha * alpha) / beta + dd * d1 * d1
            c0, c1, c2 = (t0, t1, t2) if c0 is None or c1 is None or c2 is None else (c0 + t0, c1 + t1, c2 + t2)
        assert c0 is not None and c1 is not None and c2 is not None  # two beams summed above
        out[f"{u}0"], out[f"{u}1"], out[f"{u}2"] = c0, c1, c2
    return out


def _check_eps(eps: torch.Tensor) -> None:
    if eps.shape[-1:] != (4,):
        raise ValueError(f"eps: expected shape (..., 4) ordered (eps_x1, eps_y1, eps_x2, eps_y2), got {tuple(eps.shape)}")
    e = eps.detach()
    if not bool(torch.isfinite(e).all()):
        raise ValueError("eps: non-finite emittance; allowed range (0, inf) m rad")
    if bool((e <= 0).any()):
        raise ValueError(f"eps: non-positive emittance (min {e.min().item()!r}); allowed range (0, inf) m rad")


def _window(c: dict[str, torch.Tensor], p: dict[str, torch.Tensor], a: torch.Tensor, spec: QuadratureSpec):
    """Detached map parameters (zr, w) and panel edges in t = asinh((z - zr)/w): (t_min, t_lo, t_hi, t_max).

    zr +- i w are the complex zeros of the Sigma_u^2(z) quadratic nearest to the real axis (smallest w): the
    integrand's singularities. In t they sit at +- i pi/2 whatever beta* is, so Gauss-Legendre converges fast.
    """
    with torch.no_grad():
        roots = []
        for u in ("x", "y"):
            c0, c1, c2 = c[f"{u}0"].detach(), c[f"{u}1"].detach(), c[f"{u}2"].detach()
            zr = -c1 / (2.0 * c2)
            w = torch.sqrt(torch.clamp(4.0 * c0 * c2 - c1 * c1, min=0.0)) / (2.0 * c2)
            roots.append((zr, w))
        use_x = roots[0][1] <= roots[1][1]
        zr = torch.where(use_x, roots[0][0], roots[1][0])
        w = torch.clamp(torch.where(use_x, roots[0][1], roots[1][1]), min=1e-12)
        tx, ty, sx, sy = p["cross_x"], p["cross_y"], p["sep_x"], p["sep_y"]
        ix, iy = 1.0 / c["x0"].detach(), 1.0 / c["y0"].detach()
        big_a = tx * tx * ix + ty * ty * iy + a.detach()
        big_b = sx * tx * ix + sy * ty * iy
        zmax = 5.0 * torch.maximum(p["sigma_z1"], p["sigma_z2"])
        zc = torch.minimum(torch.maximum(-big_b / big_a, -zmax), zmax)
        half = spec.k_core * torch.rsqrt(big_a)
        lo = torch.maximum(zc - half, -zmax)
        hi = torch.minimum(zc + half, zmax)
        t = [torch.asinh((e - zr) / w) for e in (-zmax, lo, hi, zmax)]
        return [x.detach() for x in torch.broadcast_tensors(zr, w, *t)]


def luminosity(
    config: IPConfig,
    eps: torch.Tensor | np.ndarray | list | tuple,
    *,
    n_nodes: int | None = None,
    quadrature: QuadratureSpec = DEFAULT_QUADRATURE,
    device: DeviceLike = None,
) -> torch.Tensor:
    """Luminosity [cm^-2 s^-1] of ``config`` for normalised emittances ``eps`` (..., 4) = (ex1, ey1, ex2, ey2) [m rad].

    Broadcasts the emittance batch ``eps.shape[:-1]`` against ``config.batch_shape``; float64, differentiable in
    ``eps`` and in tensor config fields. ``n_nodes`` (optional) overrides the core panel's node count (tails keep
    ``quadrature.n_tail``); ``quadrature`` sets the full rule. ``device``: default is the device of ``eps`` if it is a tensor, else CPU.
    """
    if device is None:
        device = eps.device if isinstance(eps, torch.Tensor) else torch.device("cpu")
    device = torch.device(device)
    eps_t = torch.as_tensor(eps, dtype=DTYPE, device=device)
    _check_eps(eps_t)
    if n_nodes is not None:
        quadrature = QuadratureSpec(n_core=n_nodes, n_tail=quadrature.n_tail, k_core=quadrature.k_core)
    p = config.to_tensors(device=device)
    c = sigma_coefficients(p, eps_t)
    br1, br2 = c["br1"], c["br2"]
    sz1sq, sz2sq = p["sigma_z1"] ** 2, p["sigma_z2"] ** 2
    a = (br1 + br2) ** 2 / (br2 * br2 * sz1sq + br1 * br1 * sz2sq)

    zr, wr, *edges = _window(c, p, a, quadrature)
    coeffs = [c["x0"], c["x1"], c["x2"], c["y0"], c["y1"], c["y2"], p["sep_x"], p["cross_x"], p["sep_y"], p["cross_y"]]
    coeffs += [-0.5 * a, zr, 0.5 * wr]
    shape = broadcast_shapes(*(t.shape for t in coeffs), edges[0].shape)
    flat = [t.expand(shape).reshape(-1, 1) for t in coeffs]
    flat.append(torch.stack([e.expand(shape) for e in edges], dim=-1).reshape(-1, 4))
    t_mat, w_mat = _panel_matrices(quadrature.n_tail, quadrature.n_core)
    nodes = (torch.tensor(t_mat, dtype=DTYPE, device=device), torch.tensor(w_mat, dtype=DTYPE, device=device))
    n_total = quadrature.n_core + 2 * quadrature.n_tail
    n_flat = flat[0].shape[0]
    # CPU: blocks of configurations small enough to stay in cache (measured 3-4x faster than one big block).
    step = n_flat if device.type != "cpu" else max(1, _CPU_BLOCK_ELEMENTS // n_total)
    if n_flat <= step:
        integral = _integrate(flat, nodes)
    else:
        integral = torch.cat([_integrate([f[i : i + step] for f in flat], nodes) for i in range(0, n_flat, step)])
    integral = integral.reshape(shape)
    pref = p["f_rev"] * p["n_bunches"] * p["n1"] * p["n2"] * (M2_TO_CM2 / (math.sqrt(2.0) * math.pi**1.5))
    return pref * integral * torch.rsqrt(sz1sq + sz2sq)


def _integrate(flat, nodes) -> torch.Tensor:
    """int K(z) dz * sqrt(sz1^2 + sz2^2) for a flat batch (B, 1) of coefficients and panel edges (B, 4); returns (B,).

    Composite Gauss-Legendre in t over three panels, z = zr + w sinh t, dz = w cosh t dt (``torch.sinh``; cosh t = sqrt(1 + sinh^2 t)). The exponent is evaluated
    as (dx^2 Sy^2 + dy^2 Sx^2) / (Sx^2 Sy^2) to share one division with the 1/sqrt(Sx^2 Sy^2) prefactor.
    """
    x0, x1, x2, y0, y1, y2, sx, tx, sy, ty, neg_half_a, zr, half_w, edges = flat
    t_mat, w_mat = nodes
    t = edges @ t_mat
    sh2 = 2.0 * torch.sinh(t)  # not exp(t) - exp(-t): that cancels for |t| << 1 (beta* >> sigma_z), ~1e-11 lost
    z = torch.addcmul(zr, half_w, sh2)
    jac = ((edges * half_w) @ w_mat) * torch.sqrt(4.0 + sh2 * sh2)  # 2 cosh t, cheaper than torch.cosh
    var_x = torch.addcmul(x0, z, torch.addcmul(x1, z, x2))
    var_y = torch.addcmul(y0, z, torch.addcmul(y1, z, y2))
    dx = torch.addcmul(sx, tx, z)
    dy = torch.addcmul(sy, ty, z)
    prod = var_x * var_y
    num = torch.addcmul(dx * dx * var_y, dy * dy, var_x)
    log_k = torch.addcdiv(neg_half_a * (z * z), num, prod, value=-0.5)
    integrand = torch.exp(log_k) * torch.rsqrt(prod)
    return torch.linalg.vecdot(integrand, jac)
