"""Vectorised luminosity model and batched emittance inversion for LHC-like colliders.

Model API: :class:`IPConfig` (one interaction point, SI fields, float or tensor batches) and
:func:`luminosity` (L [cm^-2 s^-1] for normalised emittances (..., 4) = (eps_x1, eps_y1, eps_x2, eps_y2) [m rad]).
"""

from .config import IPConfig, field_names
from .constants import PROTON_MASS_GEV, SPEED_OF_LIGHT
from .model import DEFAULT_QUADRATURE, QuadratureSpec, gauss_legendre, luminosity

__all__ = [
    "IPConfig",
    "field_names",
    "luminosity",
    "QuadratureSpec",
    "DEFAULT_QUADRATURE",
    "gauss_legendre",
    "PROTON_MASS_GEV",
    "SPEED_OF_LIGHT",
]
