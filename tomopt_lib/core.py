"""Physical constants, material tables and the default device (SI units: metres, kg/m^3, GeV).

X0 values are radiation lengths in metres; densities in kg/m^3. The material order matters: passive generators
index ``list(X0)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = [
    "DEVICE",
    "X0",
    "DENSITIES",
    "SCATTER_COEF_A",
    "SCATTER_COEF_B",
    "MUON_MASS",
    "MUON_MASS2",
    "x0_from_mixture",
    "material_x0",
    "class_to_x0preds",
    "x0targs_to_classtargs",
]

DEVICE: torch.device = torch.device("cpu")
"""Default device (TomOpt's ``core.DEVICE``): what ``device=None`` means everywhere (:func:`tomopt_lib.runtime.resolve_device`).

A documented constant, not a switch: to run elsewhere pass ``device=`` (e.g. ``"cuda"`` or ``"auto"``) to the layers,
panels, generators and wrappers; rebinding this name changes nothing.
"""

SCATTER_COEF_A: float = 0.0136
"""Highland constant [GeV]: theta0 = A / (beta p) sqrt(x/X0) (1 + B ln(x/X0))."""
SCATTER_COEF_B: float = 0.038
"""Highland log-term coefficient (dimensionless)."""
MUON_MASS: float = 0.1056583755
"""Muon mass [GeV] (PDG)."""
MUON_MASS2: float = MUON_MASS**2
"""Muon mass squared [GeV^2]."""

X0: dict[str, float] = {
    "beryllium": 0.3528,
    "graphite": 0.1932,
    "silicon": 0.0937,
    "aluminium": 0.08897,
    "iron": 0.01757,
    "copper": 0.01436,
    "lead": 0.005612,
    "uranium": 3.166e-3,
    "air": 303.9,
    "water": 0.3608,
    "SiO2": 0.1229,
    "Al2O3": 0.07038,
    "Fe2O3": 0.03242,
    "MgO": 0.07828,
    "CaO": 0.05760,
    "toluene": 0.5068,
    "benzene": 0.4984,
    "K2O": 0.08147,
    "Na2O": 0.1285,
    "soft tissue": 0.3763,
    "steel": 0.01782,
    "hot liquid steel": 0.01991,
    "slag": 0.08211,
}

DENSITIES: dict[str, float] = {
    "beryllium": 1848.0,
    "graphite": 2210.0,
    "silicon": 2329.0,
    "aluminium": 2699.0,
    "iron": 7874.0,
    "copper": 8960.0,
    "lead": 11350.0,
    "uranium": 18950.0,
    "air": 1.205,
    "water": 1000.0,
    "SiO2": 2200.0,
    "Al2O3": 3970.0,
    "Fe2O3": 5200.0,
    "MgO": 3580.0,
    "CaO": 3300.0,
    "toluene": 866.9,
    "benzene": 878.7,
    "K2O": 2320.0,
    "Na2O": 2270.0,
    "soft tissue": 1000.0,
    "steel": 7818.0,
    "hot liquid steel": 7000.0,
    "slag": 2700.0,
}


def material_x0(material: str) -> float:
    """X0 [m] of a named material; ``ValueError`` listing the known names otherwise."""
    try:
        return X0[material]
    except KeyError:
        raise ValueError(f"material={material!r} is unknown; allowed: {sorted(X0)}") from None


def x0_from_mixture(
    x0s: Sequence[float],
    densities: Sequence[float],
    weight_fracs: Sequence[float] | None = None,
    volume_fracs: Sequence[float] | None = None,
) -> dict[str, float]:
    """X0 [m] and density [kg/m^3] of a mixture (CERN PH-EP-Tech-Note-2010-013).

    1/(X0 rho)_mix = sum_i w_i / (X0_i rho_i) and 1/rho_mix = sum_i w_i / rho_i, with mass fractions w_i
    (normalised to sum 1). Volume fractions v_i are converted with w_i = v_i rho_i / sum_j v_j rho_j.
    The fractions may be given by position, as in TomOpt: ``x0_from_mixture(x0s, densities, weight_fracs)``.
    """
    x0 = np.asarray(x0s, dtype=float)
    rho = np.asarray(densities, dtype=float)
    if x0.shape != rho.shape or x0.ndim != 1 or len(x0) == 0:
        raise ValueError("x0s and densities must be non-empty sequences of equal length")
    if (x0 <= 0).any() or (rho <= 0).any():
        raise ValueError("x0s and densities must be > 0")
    if (weight_fracs is None) == (volume_fracs is None):
        raise ValueError("give exactly one of weight_fracs or volume_fracs")
    if weight_fracs is not None:
        w = np.asarray(weight_fracs, dtype=float)
    else:
        v = np.asarray(volume_fracs, dtype=float)
        w = v * rho
    if w.shape != x0.shape or (w < 0).any() or w.sum() <= 0:
        raise ValueError("fractions must be >= 0, not all zero, one per material")
    w = w / w.sum()
    rho_mix = 1.0 / float(np.sum(w / rho))
    x0rho_mix = 1.0 / float(np.sum(w / (x0 * rho)))
    return {"X0": x0rho_mix / rho_mix, "density": rho_mix}


def class_to_x0preds(array: np.ndarray, id2x0: dict[int, float]) -> np.ndarray:
    """Map integer class IDs to X0 values [m]."""
    out = np.empty(np.shape(array), dtype=float)
    arr = np.asarray(array)
    for i, x0 in id2x0.items():
        out[arr == i] = x0
    return out


def x0targs_to_classtargs(array: np.ndarray, x02id: dict[float, int]) -> np.ndarray:
    """Map X0 values to the class ID of the nearest known X0 (in log space, so that air and lead are both resolved)."""
    keys = np.array(list(x02id.keys()), dtype=float)
    ids = np.array(list(x02id.values()))
    arr = np.asarray(array, dtype=float)
    idx = np.abs(np.log(arr[..., None]) - np.log(keys)).argmin(-1)
    return ids[idx]


assert len(X0) == 23 and set(X0) == set(DENSITIES)
