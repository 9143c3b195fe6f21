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

# --- inversion (design, measurements, batched solver, modes) ---
from .design import NOMINAL_EPS, SHIFT_PARAMETERS, Design, apply_shifts, design_scan, solve_shifts  # noqa: E402
from .inversion import (  # noqa: E402
    MODES,
    PRESETS,
    InversionResult,
    invert,
    invert_measured,
    mode_matrix,
    preset_design,
)
from .landscape import penalty_landscape  # noqa: E402
from .measure import DEFAULT_REL_NOISE, check_measurements, measure, measurement_sigma  # noqa: E402
from .solver import STATUS, LSQResult, identifiability_message, solve_lm, uncertainty_message  # noqa: E402

__all__ += [
    "NOMINAL_EPS",
    "SHIFT_PARAMETERS",
    "Design",
    "apply_shifts",
    "design_scan",
    "solve_shifts",
    "MODES",
    "PRESETS",
    "InversionResult",
    "invert",
    "invert_measured",
    "mode_matrix",
    "penalty_landscape",
    "preset_design",
    "DEFAULT_REL_NOISE",
    "check_measurements",
    "measure",
    "measurement_sigma",
    "LSQResult",
    "identifiability_message",
    "uncertainty_message",
    "STATUS",
    "solve_lm",
]
