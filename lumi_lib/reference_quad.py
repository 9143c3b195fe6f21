"""Scalar ``scipy.integrate.quad`` luminosity (test oracle and benchmark baseline) and analytic limits.

This is the reference's scalar path re-implemented in plain float64 Python: one adaptive ``quad`` over z per
luminosity, same formula as :mod:`lumi_lib.model`. ``reference_quirks=True`` reproduces the reference's silent
override n2 := n1, energy2 := energy1. Not vectorised on purpose; do not use it in production code.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.integrate import quad

from .config import IPConfig
from .constants import M2_TO_CM2, PROTON_MASS_GEV

__all__ = [
    "luminosity_quad",
    "luminosity_quad_many",
    "luminosity_no_hourglass",
    "luminosity_head_on_no_hourglass",
    "piwinski_factor",
    "scalar_fields",
]

_PREF = M2_TO_CM2 / (math.sqrt(2.0) * math.pi**1.5)


def scalar_fields(config: IPConfig, *, reference_quirks: bool = False) -> dict[str, float]:
    """Field name -> Python float (tensor fields must hold one element)."""
    out: dict[str, float] = {}
    for name, v in config.as_dict().items():
        if not isinstance(v, float):
            if v.numel() != 1:
                raise ValueError(f"IPConfig.{name}: scalar path needs one configuration, got shape {tuple(v.shape)}")
            v = float(v.detach().cpu().reshape(()).item())
        out[name] = v
    if reference_quirks:
        out["n2"], out["energy2"] = out["n1"], out["energy1"]
    return out


def _beam(energy: float) -> tuple:
    gamma = energy / PROTON_MASS_GEV
    br = math.sqrt(1.0 - gamma**-2)
    return br, br * gamma


def _sigma2_factory(p: dict[str, float], eps: Sequence[float]):
    """Sigma_x^2(z), Sigma_y^2(z) as scalar closures, and beam factors."""
    br1, bg1 = _beam(p["energy1"])
    br2, bg2 = _beam(p["energy2"])
    terms = []
    for k, u in enumerate("xy"):
        plane = []
        for b, br, bg in ((1, br1, bg1), (2, br2, bg2)):
            plane.append(
                (
                    eps[k + 2 * (b - 1)] / bg,
                    p[f"beta_{u}{b}"],
                    p[f"alpha_{u}{b}"],
                    p[f"dpp{b}"],
                    br * p[f"disp_{u}{b}"],
                    br * p[f"disp_p{u}{b}"],
                )
            )
        terms.append(plane)

    def var(plane, z: float) -> float:
        s = 0.0
        for e, beta, alpha, dpp, d0, d1 in plane:
            bz = beta - 2.0 * alpha * z + (1.0 + alpha * alpha) * z * z / beta
            dz = (d0 + d1 * z) * dpp  # D(z) = beta_r (D* + D'* z), already scaled
            s += bz * e + dz * dz
        return s

    return (lambda z: var(terms[0], z)), (lambda z: var(terms[1], z)), br1, br2


def luminosity_quad(
    config: IPConfig,
    eps: Sequence[float],
    *,
    reference_quirks: bool = False,
    epsabs: float = 1.49e-8,
    epsrel: float = 1.49e-8,
    limit: int = 50,
    points: Sequence[float] | None = None,
) -> float:
    """L [cm^-2 s^-1] by adaptive quad over [-5 sz, 5 sz], sz = max(sigma_z1, sigma_z2).

    Defaults are scipy's (as in the reference); pass e.g. ``epsabs=0, epsrel=1e-14, limit=500`` for an oracle.
    ``points``: optional break points inside the interval (e.g. the luminous centre).
    """
    p = scalar_fields(config, reference_quirks=reference_quirks)
    eps = [float(e) for e in np.asarray(eps, dtype=np.float64).reshape(4)]
    var_x, var_y, br1, br2 = _sigma2_factory(p, eps)
    a = (br1 + br2) ** 2 / (br2**2 * p["sigma_z1"] ** 2 + br1**2 * p["sigma_z2"] ** 2)
    sx, sy, tx, ty = p["sep_x"], p["sep_y"], p["cross_x"], p["cross_y"]

    def kernel(z: float) -> float:
        vx, vy = var_x(z), var_y(z)
        dx, dy = sx + tx * z, sy + ty * z
        return math.exp(-0.5 * (dx * dx / vx + dy * dy / vy + a * z * z)) / math.sqrt(vx * vy)

    zmax = 5.0 * max(p["sigma_z1"], p["sigma_z2"])
    kwargs: dict[str, Any] = dict(epsabs=epsabs, epsrel=epsrel, limit=limit)
    if points is not None:
        kwargs["points"] = [z for z in points if -zmax < z < zmax] or None
    integral = quad(kernel, -zmax, zmax, **kwargs)[0]
    szq = math.sqrt(p["sigma_z1"] ** 2 + p["sigma_z2"] ** 2)
    return p["f_rev"] * p["n_bunches"] * p["n1"] * p["n2"] * _PREF * integral / szq


def luminosity_quad_many(configs: Sequence[IPConfig], eps: np.ndarray, **kwargs: Any) -> np.ndarray:
    """Loop :func:`luminosity_quad` over configurations; ``eps`` is (4,) or (len(configs), 4)."""
    eps = np.broadcast_to(np.asarray(eps, dtype=np.float64), (len(configs), 4))
    return np.array([luminosity_quad(c, e, **kwargs) for c, e in zip(configs, eps)])


def _no_hourglass_terms(config: IPConfig, eps: Sequence[float], reference_quirks: bool):
    p = scalar_fields(config, reference_quirks=reference_quirks)
    eps = [float(e) for e in np.asarray(eps, dtype=np.float64).reshape(4)]
    var_x, var_y, br1, br2 = _sigma2_factory(p, eps)
    a = (br1 + br2) ** 2 / (br2**2 * p["sigma_z1"] ** 2 + br1**2 * p["sigma_z2"] ** 2)
    return p, var_x(0.0), var_y(0.0), a


def luminosity_no_hourglass(config: IPConfig, eps: Sequence[float], *, reference_quirks: bool = False) -> float:
    """Closed form with Sigma frozen at z = 0 (no hourglass, no dispersion slope), integrated over all z.

    Exponent A z^2 + 2 B z + C with A = tx^2/Sx^2 + ty^2/Sy^2 + a, B = sx tx/Sx^2 + sy ty/Sy^2,
    C = sx^2/Sx^2 + sy^2/Sy^2, a = (br1+br2)^2/(br2^2 sz1^2 + br1^2 sz2^2):
    L = f nb n1 n2 1e-4 / (sqrt(2) pi^1.5) * sqrt(2 pi / A) exp(-(C - B^2/A)/2) / (Sx Sy sqrt(sz1^2 + sz2^2)).
    """
    p, vx, vy, a = _no_hourglass_terms(config, eps, reference_quirks)
    sx, sy, tx, ty = p["sep_x"], p["sep_y"], p["cross_x"], p["cross_y"]
    big_a = tx * tx / vx + ty * ty / vy + a
    big_b = sx * tx / vx + sy * ty / vy
    big_c = sx * sx / vx + sy * sy / vy
    integral = math.sqrt(2.0 * math.pi / big_a) * math.exp(-0.5 * (big_c - big_b * big_b / big_a)) / math.sqrt(vx * vy)
    szq = math.sqrt(p["sigma_z1"] ** 2 + p["sigma_z2"] ** 2)
    return p["f_rev"] * p["n_bunches"] * p["n1"] * p["n2"] * _PREF * integral / szq


def luminosity_head_on_no_hourglass(config: IPConfig, eps: Sequence[float], *, reference_quirks: bool = False) -> float:
    """L0 = f nb n1 n2 / (2 pi Sx Sy) * 2 R / (br1 + br2) * 1e-4, R = sqrt(br2^2 sz1^2 + br1^2 sz2^2)/sqrt(sz1^2+sz2^2).

    Sx^2 = sigma_x1^2 + sigma_x2^2 at the IP (sigma^2 = beta* eps / (beta_r gamma) + (beta_r D* dpp)^2), likewise y;
    crossing angles and offsets ignored. For equal beams 2 R / (br1 + br2) = 1 and L0 = f nb N^2 / (4 pi sigma_x sigma_y).
    """
    p, vx, vy, _ = _no_hourglass_terms(config, eps, reference_quirks)
    br1, _ = _beam(p["energy1"])
    br2, _ = _beam(p["energy2"])
    s1, s2 = p["sigma_z1"] ** 2, p["sigma_z2"] ** 2
    r = math.sqrt(br2**2 * s1 + br1**2 * s2) / math.sqrt(s1 + s2)
    return (
        p["f_rev"]
        * p["n_bunches"]
        * p["n1"]
        * p["n2"]
        * M2_TO_CM2
        / (2.0 * math.pi * math.sqrt(vx * vy))
        * (2.0 * r / (br1 + br2))
    )


def piwinski_factor(config: IPConfig, eps: Sequence[float], *, reference_quirks: bool = False) -> float:
    """Crossing-angle reduction 1/sqrt(1 + phi^2), phi^2 = (tx^2/Sx^2 + ty^2/Sy^2) / a (no offsets, no hourglass).

    For equal beams crossing in one plane this is the Piwinski angle phi = (theta/2) sigma_z / sigma*.
    """
    p, vx, vy, a = _no_hourglass_terms(config, eps, reference_quirks)
    phi2 = (p["cross_x"] ** 2 / vx + p["cross_y"] ** 2 / vy) / a
    return 1.0 / math.sqrt(1.0 + phi2)
