"""Physical constants and unit factors used by the luminosity model."""

from __future__ import annotations

__all__ = ["PROTON_MASS_GEV", "SPEED_OF_LIGHT", "M2_TO_CM2", "DTYPE"]

import torch

PROTON_MASS_GEV: float = 0.93827231
"""Proton rest energy m_p c^2 [GeV], the (older, PDG 1992) value the reference code uses; kept for bit-compatibility."""

SPEED_OF_LIGHT: float = 299792458.0
"""c [m/s]; informative only (the Moller factor is taken as exactly 1, as in the reference)."""

M2_TO_CM2: float = 1.0e-4
"""Converts a luminosity in m^-2 s^-1 to cm^-2 s^-1."""

DTYPE: torch.dtype = torch.float64
"""The model always computes in double precision."""
