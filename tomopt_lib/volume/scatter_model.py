"""Multiple-scattering models: per-step angular deflection and lateral displacement of muons.

Every model maps a step (radiation length ``x0`` [m], path length ``step_length`` [m], momentum ``mom`` [GeV]) to
four (N,) tensors in the muon frame, i.e. along the two transverse axes e_theta (index 1) and e_phi (index 2):
``dtheta_1``, ``dtheta_2`` [rad] (deflection angles) and ``dx_1``, ``dx_2`` [m] (displacement perpendicular to the
incoming direction, at the end of the step). ``x0 = inf`` or ``step_length = 0`` gives exactly zero scattering.

The tabulated (parameterised-GEANT) model and its table files: :mod:`.scatter_table`.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
from torch import Tensor

from ..core import MUON_MASS2, SCATTER_COEF_A, SCATTER_COEF_B
from ..runtime import DEFAULT_DTYPE, DeviceLike

__all__ = [
    "AbsScatterModel",
    "PDGScatterModel",
    "highland_theta0",
    "beta_p",
    "get_scatter_model",
    "SCATTER_MODEL_NAMES",
]

SCATTER_MODEL_NAMES = ("pdg", "tabulated:<path to hdf5>", "pgeant:<path to hdf5>")
PDG_CORRELATION = math.sqrt(3.0) / 2.0
"""Correlation between projected angle and lateral displacement of a Gaussian random walk (PDG review)."""
_LOG_FLOOR = 1e-30


def highland_theta0(x_over_x0: Tensor, mom: Tensor, *, log_term: bool = True) -> Tensor:
    """Highland width [rad] of the projected angle: theta0 = (A/p) sqrt(x) (1 + B ln x), x = L/X0, beta = 1.

    A = 0.0136 GeV, B = 0.038 (PDG review, eq. 34.15). The log factor becomes negative for x < exp(-1/B) ~ 4e-12
    (and is -inf at x = 0), so it is clamped at 0: theta0 >= 0 always, and theta0 = 0 for x = 0.
    """
    x = torch.as_tensor(x_over_x0)
    theta0 = SCATTER_COEF_A * torch.sqrt(x) / mom
    if log_term:
        theta0 = theta0 * (1.0 + SCATTER_COEF_B * torch.log(x.clamp_min(_LOG_FLOOR))).clamp_min(0.0)
    return theta0


def beta_p(mom: Tensor) -> Tensor:
    """beta p = p^2 / sqrt(p^2 + m_mu^2) [GeV] of a muon of momentum ``mom`` [GeV] (Highland's momentum factor)."""
    return mom * mom / torch.sqrt(mom * mom + MUON_MASS2)


def _broadcast(x0: Tensor, step_length: Tensor, mom: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Common shape, dtype and device (those of ``mom``) for the three step inputs."""
    mom = torch.as_tensor(mom)
    dtype = mom.dtype if mom.is_floating_point() else DEFAULT_DTYPE
    x0_t, l_t, p_t = (torch.as_tensor(t, dtype=dtype, device=mom.device) for t in (x0, step_length, mom))
    return torch.broadcast_tensors(x0_t, l_t, p_t)


def _randn(shape: tuple, like: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.randn(shape, generator=generator, device=like.device, dtype=like.dtype)


class AbsScatterModel(ABC):
    """Interface of a scattering model (stateless apart from lookup tables)."""

    @abstractmethod
    def compute_scattering(
        self,
        *,
        x0: Tensor,
        step_length: Tensor,
        mom: Tensor,
        theta: Tensor | None = None,
        x_traversed: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, Tensor]:
        """(N,) ``dtheta_1``, ``dtheta_2`` [rad] and ``dx_1``, ``dx_2`` [m] for one step of path length ``step_length``.

        ``theta`` (incoming polar angle) is informational; models work with the path length. ``x_traversed`` (N,)
        is the material already crossed by each muon in radiation lengths (``MuonBatch.x0_traversed``); models
        with a non-additive width (Highland's log term) use it so that the steps compose to the full crossing.
        """

    def to(self, device: DeviceLike) -> AbsScatterModel:
        """Move any tables to ``device`` (no-op for table-free models)."""
        return self


class PDGScatterModel(AbsScatterModel):
    """Gaussian multiple scattering (PDG review, eqs. 34.15-34.19) with the muon's velocity beta = p / E.

    Per transverse axis, with z1, z2 independent N(0, 1) and theta0 from :func:`highland_theta0` for x = L/X0 and
    momentum beta p (``use_beta``; ``False`` = TomOpt's beta = 1): angle = z2 theta0 and displacement =
    L theta0 (z1/sqrt(12) + z2/2), so RMS(disp) = L theta0/sqrt(3) and corr(angle, disp) = sqrt(3)/2. Angles are
    clamped to +-``max_angle`` [rad] (only matters for p of a few MeV). beta matters below ~1 GeV: theta0 is 1.1 %
    larger at 0.5 GeV and 6 % at 0.3 GeV.
    """

    def __init__(self, log_term: bool = True, max_angle: float = math.pi / 2.2, use_beta: bool = True) -> None:
        self.log_term = bool(log_term)
        self.max_angle = float(max_angle)
        self.use_beta = bool(use_beta)

    def theta0(self, x0: Tensor, step_length: Tensor, mom: Tensor) -> Tensor:
        """Highland theta0 [rad] for path length ``step_length`` [m] in material ``x0`` [m] at ``mom`` [GeV]."""
        return highland_theta0(step_length / x0, mom, log_term=self.log_term)

    @staticmethod
    def theta0_increment(x_before: Tensor, dx: Tensor, mom: Tensor) -> Tensor:
        """Width [rad] of one step that makes the steps of a crossing add up to Highland for the whole crossing.

        With F(x) = x (1 + B ln x)^2 (the log factor clamped at 0, so F is non-decreasing), Highland gives
        theta0(x)^2 = (A/p)^2 F(x); a step from x_before to x_before + dx (radiation lengths) gets
        theta0_step = (A/p) sqrt(F(x_before + dx) - F(x_before)), so independent Gaussian steps have total variance
        (A/p)^2 F(x_total): the log term is applied to the full crossing (PDG review) instead of once per step,
        which otherwise underestimates the RMS by 8-15 % for 10-50 steps.
        """

        def big_f(x: Tensor) -> Tensor:
            return x * (1.0 + SCATTER_COEF_B * torch.log(x.clamp_min(_LOG_FLOOR))).clamp_min(0.0) ** 2

        x_before64, dx64 = x_before.double(), dx.double()  # a small difference of large F: use float64
        var = (big_f(x_before64 + dx64) - big_f(x_before64)).clamp_min(0.0)
        return (SCATTER_COEF_A * torch.sqrt(var)).to(dx.dtype) / mom

    def compute_scattering(
        self,
        *,
        x0: Tensor,
        step_length: Tensor,
        mom: Tensor,
        theta: Tensor | None = None,
        x_traversed: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, Tensor]:
        x0, step_length, mom = _broadcast(x0, step_length, mom)
        if self.use_beta:
            mom = beta_p(mom)
        if x_traversed is None or not self.log_term:
            theta0 = self.theta0(x0, step_length, mom)
        else:
            theta0 = self.theta0_increment(torch.as_tensor(x_traversed, dtype=x0.dtype), step_length / x0, mom)
        z1, z2 = _randn((2, 2) + tuple(theta0.shape), theta0, generator)  # z[k][axis], axes (e_theta, e_phi)
        a = (z2 * theta0).clamp_(-self.max_angle, self.max_angle)
        d = (z1 * (1.0 / math.sqrt(12.0)) + 0.5 * z2) * (step_length * theta0)
        return {"dtheta_1": a[0], "dtheta_2": a[1], "dx_1": d[0], "dx_2": d[1]}

    def __repr__(self) -> str:
        return f"PDGScatterModel(log_term={self.log_term}, use_beta={self.use_beta})"


def get_scatter_model(name_or_model: str | AbsScatterModel, device: DeviceLike = None) -> AbsScatterModel:
    """Resolve ``"pdg"``, ``"tabulated:<path>"`` or an :class:`AbsScatterModel` instance (moved to ``device``)."""
    if isinstance(name_or_model, AbsScatterModel):
        return name_or_model.to(device) if device is not None else name_or_model
    if isinstance(name_or_model, str):
        if name_or_model.lower() == "pdg":
            return PDGScatterModel()
        low = name_or_model.lower()
        for prefix in ("tabulated:", "pgeant:"):
            if low.startswith(prefix) and len(name_or_model) > len(prefix):
                from .scatter_table import TabulatedScatterModel  # the table module builds on this one

                return TabulatedScatterModel(name_or_model[len(prefix) :], device=device)
        if low in ("pgeant", "tabulated") or low in ("pgeant:", "tabulated:"):
            raise ValueError(
                f"scatter_model={name_or_model!r} is the tabulated (parameterised-GEANT) model and needs "
                f"its table file: use 'pgeant:<path to hdf5>' (or 'tabulated:<path>'); build one with "
                f"build_scatter_table or build_pdg_scatter_table"
            )
    raise ValueError(f"scatter_model={name_or_model!r} is unknown; allowed: {list(SCATTER_MODEL_NAMES)} or an AbsScatterModel")
