"""``IPConfig``: a typed, keyword-only description of one interaction point (or a batch of them).

All fields are SI (energies in GeV). A field is a Python float or a float64 torch tensor; tensor fields broadcast
against each other, so one ``IPConfig`` can describe a whole batch of interaction-point configurations.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal

import numpy as np
import torch

from .constants import DTYPE, PROTON_MASS_GEV

__all__ = ["IPConfig", "Scalar", "field_names", "broadcast_shapes"]

Scalar = float | torch.Tensor

# (lower bound, lower bound inclusive?) per constrained field; every field must be finite.
_POSITIVE = ("f_rev", "n_bunches", "n1", "n2", "beta_x1", "beta_y1", "beta_x2", "beta_y2", "sigma_z1", "sigma_z2")
_NON_NEGATIVE = ("dpp1", "dpp2")
_ABOVE_MASS = ("energy1", "energy2")


def broadcast_shapes(*shapes: Iterable[int]) -> torch.Size:
    """Broadcast shape of ``shapes`` (NumPy's rule, as torch's): ``torch.broadcast_shapes`` imports sympy (for symbolic
    shapes) on its first call, ~0.3 s of every fresh process's first luminosity evaluation."""
    return torch.Size(np.broadcast_shapes(*(tuple(s) for s in shapes)))


@dataclass(frozen=True, kw_only=True, eq=False)
class IPConfig:
    """One interaction point: machine, beam and optics parameters at the IP.

    Units: ``f_rev`` [Hz]; ``n_bunches`` colliding bunch pairs; ``n1``, ``n2`` protons per bunch; ``energy1/2`` total
    beam energy [GeV] (must exceed the proton mass 0.93827231 GeV); ``sep_x/y`` beam-1 minus beam-2 offset [m];
    ``cross_x/y`` full crossing angle (beam-1 minus beam-2 slope) [rad]; ``beta_*`` beta* [m]; ``alpha_*`` alpha* [-];
    ``sigma_z1/2`` rms bunch length [m]; ``dpp1/2`` rms momentum spread [-]; ``disp_*`` dispersion D* [m];
    ``disp_p*`` dispersion slope D'* [-]. Beam index 1 or 2 is the last character of the name.
    """

    f_rev: Scalar
    n_bunches: Scalar
    n1: Scalar
    n2: Scalar
    energy1: Scalar
    energy2: Scalar
    sep_x: Scalar = 0.0
    sep_y: Scalar = 0.0
    cross_x: Scalar = 0.0
    cross_y: Scalar = 0.0
    beta_x1: Scalar
    beta_y1: Scalar
    beta_x2: Scalar
    beta_y2: Scalar
    alpha_x1: Scalar = 0.0
    alpha_y1: Scalar = 0.0
    alpha_x2: Scalar = 0.0
    alpha_y2: Scalar = 0.0
    sigma_z1: Scalar
    sigma_z2: Scalar
    dpp1: Scalar = 0.0
    dpp2: Scalar = 0.0
    disp_x1: Scalar = 0.0
    disp_y1: Scalar = 0.0
    disp_x2: Scalar = 0.0
    disp_y2: Scalar = 0.0
    disp_px1: Scalar = 0.0
    disp_py1: Scalar = 0.0
    disp_px2: Scalar = 0.0
    disp_py2: Scalar = 0.0

    def __post_init__(self) -> None:
        for name in field_names():
            value = getattr(self, name)
            if isinstance(value, torch.Tensor):
                if not (value.is_floating_point() or value.dtype in (torch.int32, torch.int64)):
                    raise ValueError(f"IPConfig.{name}: tensor dtype {value.dtype} not allowed; use a real float tensor")
                if not value.is_floating_point():
                    object.__setattr__(self, name, value.to(DTYPE))
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                object.__setattr__(self, name, float(value))
            else:
                raise ValueError(f"IPConfig.{name}: expected a float or a torch tensor, got {type(value).__name__}")
            _check_field(name, getattr(self, name))

    # ----------------------------------------------------------------------------------------------- constructors
    @classmethod
    def lhc_default(cls, crossing_plane: Literal["x", "y"] = "y", **changes: Any) -> IPConfig:
        """The reference's LHC-like default set, with the 320 urad full crossing angle in ``crossing_plane``.

        f_rev 11245 Hz, 2736 bunches, 1.4e11 protons, 6800 GeV, beta* 0.30 m, alpha 0, sigma_z 0.35 m, offsets,
        momentum spread and dispersion 0. Extra keyword arguments are applied with :meth:`replace`.
        """
        if crossing_plane not in ("x", "y"):
            raise ValueError(f"crossing_plane must be 'x' or 'y', got {crossing_plane!r}")
        base = cls(
            f_rev=11245.0,
            n_bunches=2736.0,
            n1=1.4e11,
            n2=1.4e11,
            energy1=6800.0,
            energy2=6800.0,
            cross_x=320e-6 if crossing_plane == "x" else 0.0,
            cross_y=320e-6 if crossing_plane == "y" else 0.0,
            beta_x1=0.30,
            beta_y1=0.30,
            beta_x2=0.30,
            beta_y2=0.30,
            sigma_z1=0.35,
            sigma_z2=0.35,
        )
        return base.replace(**changes) if changes else base

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> IPConfig:
        """Build from a mapping of field names (unknown names raise ``ValueError`` listing the valid ones)."""
        _check_names(values.keys())
        return cls(**dict(values))

    @staticmethod
    def stack(configs: Iterable[IPConfig], *, device: str | torch.device | None = None) -> IPConfig:
        """Batch configurations along a new leading dimension: every field becomes a float64 tensor (N, *batch)."""
        configs = list(configs)
        if not configs:
            raise ValueError("IPConfig.stack: need at least one configuration")
        shapes = [c.batch_shape for c in configs]
        shape = broadcast_shapes(*shapes)
        out = {}
        for name in field_names():
            vals = [torch.as_tensor(getattr(c, name), dtype=DTYPE, device=device).expand(shape) for c in configs]
            out[name] = torch.stack(vals, dim=0)
        return IPConfig(**out)

    # ----------------------------------------------------------------------------------------------- helpers
    @staticmethod
    def field_names() -> tuple[str, ...]:
        """The 30 field names, in declaration order."""
        return field_names()

    def replace(self, **changes: Any) -> IPConfig:
        """A copy with some fields changed (validated); unknown names raise ``ValueError`` listing the valid ones."""
        _check_names(changes.keys())
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Scalar]:
        """Field name -> value (floats or tensors, not copied)."""
        return {name: getattr(self, name) for name in field_names()}

    @property
    def batch_shape(self) -> torch.Size:
        """Broadcast shape of the tensor fields (``torch.Size([])`` for an all-float configuration)."""
        shapes = [v.shape for v in self.as_dict().values() if isinstance(v, torch.Tensor)]
        return broadcast_shapes(*shapes) if shapes else torch.Size([])

    def to_tensors(self, *, device: str | torch.device | None = None) -> dict[str, torch.Tensor]:
        """Field name -> float64 tensor on ``device`` (floats become 0-d tensors; tensors keep their graph)."""
        return {name: torch.as_tensor(v, dtype=DTYPE, device=device) for name, v in self.as_dict().items()}

    def to(self, device: str | torch.device) -> IPConfig:
        """A copy whose tensor fields live on ``device`` (float fields stay floats)."""
        return dataclasses.replace(self, **{n: v.to(device) for n, v in self.as_dict().items() if isinstance(v, torch.Tensor)})

    def __repr__(self) -> str:
        def fmt(v: Scalar) -> str:
            if isinstance(v, torch.Tensor):
                return f"tensor{tuple(v.shape)}" if v.numel() != 1 else f"{v.item():.6g}"
            return f"{v:.6g}"

        body = ", ".join(f"{n}={fmt(v)}" for n, v in self.as_dict().items())
        return f"IPConfig({body})"


def field_names() -> tuple[str, ...]:
    """The 30 field names of :class:`IPConfig`, in declaration order."""
    return _FIELD_NAMES


_FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in fields(IPConfig))


def _check_names(names: Iterable[str]) -> None:
    unknown = sorted(set(names) - set(_FIELD_NAMES))
    if unknown:
        raise ValueError(f"unknown IPConfig field(s) {unknown}; valid names: {', '.join(_FIELD_NAMES)}")


def _allowed(name: str) -> tuple[float, bool, str]:
    """(lower bound, strict?, description) for ``name``."""
    if name in _POSITIVE:
        return 0.0, True, "(0, inf)"
    if name in _NON_NEGATIVE:
        return 0.0, False, "[0, inf)"
    if name in _ABOVE_MASS:
        return PROTON_MASS_GEV, True, f"({PROTON_MASS_GEV}, inf) GeV (above the proton mass)"
    return -math.inf, False, "finite real numbers"


def _check_field(name: str, value: Scalar) -> None:
    """Vectorised check: finite and inside the allowed range, else ``ValueError`` naming field and range."""
    low, strict, desc = _allowed(name)
    if isinstance(value, torch.Tensor):
        v = value.detach()
        if v.is_complex():
            raise ValueError(f"IPConfig.{name}: complex values not allowed; allowed range {desc}")
        bad_finite = ~torch.isfinite(v)
        bad_range = (v <= low) if strict else (v < low)
        bad = bad_finite | bad_range
        if bool(bad.any()):
            first = v[bad].flatten()[0].item()
            count = int(bad.sum().item())
            raise ValueError(
                f"IPConfig.{name}: {count} value(s) outside the allowed range {desc} (first offending value {first!r})"
            )
    else:
        ok = math.isfinite(value) and (value > low if strict else value >= low)
        if not ok:
            raise ValueError(f"IPConfig.{name} = {value!r} is outside the allowed range {desc}")
