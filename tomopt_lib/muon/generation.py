"""Cosmic-muon generators: sample initial ``x, y, p, theta, phi`` from a flux model.

The flux ``f(E, theta)`` of a model is the differential rate per unit energy [GeV^-1] and per unit *zenith angle*
through a *horizontal* generation plane, i.e. the model's intensity per unit solid angle multiplied by
``cos(theta)`` (projection on the plane) and ``sin(theta)`` (dOmega = sin(theta) dtheta dphi).

Sampling (torch only, seedable): the (theta, ln E) rectangle is cut into ``n_bins_theta x n_bins_energy`` bins, the
density ``g(theta, u) = f(e^u, theta) e^u`` is integrated over each bin with a Gauss-Legendre rule, a bin is picked by
inverse CDF on the cumulative sum and the point inside the bin is drawn exactly from the bilinear interpolation of
``g`` between the bin corners (theta first from its linear marginal, then ln E from the linear conditional). The
samples therefore follow the continuous flux (not bin centres) up to second-order interpolation errors.
"""

from __future__ import annotations

import math
from abc import ABCMeta, abstractmethod
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from ..core import MUON_MASS
from ..runtime import DEFAULT_DTYPE, DeviceLike, resolve_device

if TYPE_CHECKING:
    from ..volume.volume import Volume

__all__ = ["AbsMuonGenerator", "MuonGenerator2015", "MuonGenerator2016"]

ArrayLike = float | np.ndarray | Tensor
_GL_ORDER = 4  # Gauss-Legendre points per bin and dimension


def _as_f64(x: ArrayLike) -> Tensor:
    """Tensor view of ``x``: floating tensors are kept, anything else becomes float64."""
    if isinstance(x, Tensor):
        return x if x.is_floating_point() else x.to(torch.float64)
    return torch.as_tensor(np.asarray(x, dtype=np.float64))


def _check_range(
    name: str,
    rng: tuple[float, float],
    low: float = -math.inf,
    high: float = math.inf,
    low_open: bool = False,
    high_open: bool = False,
) -> tuple[float, float]:
    """Validate an ordered, finite ``(lo, hi)`` range inside the allowed interval; ``ValueError`` naming ``name``."""
    try:
        lo, hi = (float(v) for v in rng)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a pair of numbers (lo, hi), got {rng!r}") from None
    lb = "(" if low_open else "["
    hb = ")" if high_open else "]"
    allowed = f"{lb}{low:g}, {high:g}{hb}"
    if not (math.isfinite(lo) and math.isfinite(hi)) or not lo < hi:
        raise ValueError(f"{name} must be finite with lo < hi, got {(lo, hi)}; allowed interval {allowed}")
    bad_lo = lo <= low if low_open else lo < low
    bad_hi = hi >= high if high_open else hi > high
    if bad_lo or bad_hi:
        raise ValueError(f"{name}={(lo, hi)} is outside the allowed interval {allowed}")
    return lo, hi


def _sample_linear(a: Tensor, b: Tensor, r: Tensor) -> Tensor:
    """Inverse CDF on [0, 1] of the density proportional to ``a (1 - t) + b t`` (a, b >= 0) at uniforms ``r``.

    Solves (b - a) t^2 / 2 + a t = r (a + b) / 2 in the cancellation-free form t = r (a + b) / (a + sqrt(a^2 + (b^2 - a^2) r)).
    """
    den = a + torch.sqrt((a * a + (b * b - a * a) * r).clamp_min(0.0))
    t = torch.where(den > 0, r * (a + b) / den.clamp_min(1e-300), r)
    return t.clamp(0.0, 1.0)


class AbsMuonGenerator(metaclass=ABCMeta):
    """Base muon generator: uniform x, y, phi; (theta, E) from the model's ``flux``.

    Args:
        x_range, y_range: generation region [m] in the volume frame.
        fixed_mom: if a float, every muon gets this momentum [GeV] (theta still follows the flux); ``None`` (default)
            samples the momentum from the flux spectrum, p = sqrt(E^2 - m_mu^2).
        energy_range: (E_min, E_max) [GeV] of the total energy, E_min > m_mu.
        theta_range: (theta_min, theta_max) [rad] within [0, pi/2).
        n_bins_energy, n_bins_theta: table granularity (log-spaced in E, linear in theta).
        device: device of the tables and of the generated muons.
    """

    def __init__(
        self,
        x_range: tuple[float, float],
        y_range: tuple[float, float],
        fixed_mom: float | None = None,
        energy_range: tuple[float, float] = (0.5, 500.0),
        theta_range: tuple[float, float] = (0.0, 70 * math.pi / 180),
        n_bins_energy: int = 200,
        n_bins_theta: int = 200,
        device: DeviceLike = None,
    ) -> None:
        self.device = resolve_device(device)
        self.x_range = _check_range("x_range", x_range)
        self.y_range = _check_range("y_range", y_range)
        self.energy_range = _check_range("energy_range", energy_range, low=MUON_MASS, low_open=True)
        self.theta_range = _check_range("theta_range", theta_range, low=0.0, high=math.pi / 2, high_open=True)
        if fixed_mom is not None:
            fixed_mom = float(fixed_mom)
            if not (math.isfinite(fixed_mom) and fixed_mom > 0):
                raise ValueError(f"fixed_mom must be None or a finite momentum > 0 GeV, got {fixed_mom}")
        self.fixed_mom = fixed_mom
        for name, nb in (("n_bins_energy", n_bins_energy), ("n_bins_theta", n_bins_theta)):
            if int(nb) != nb or nb < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {nb!r}")
        self.n_bins_energy, self.n_bins_theta = int(n_bins_energy), int(n_bins_theta)
        self._build_tables()

    # ------------------------------------------------------------------ model
    @abstractmethod
    def flux(self, energy: ArrayLike, theta: ArrayLike) -> Tensor:
        """Flux per GeV and per unit zenith angle through a horizontal plane at (E [GeV], theta [rad]) pairs."""

    def _density(self, u: Tensor, theta: Tensor) -> Tensor:
        """g(theta, u) = f(e^u, theta) e^u: the flux density in (theta, ln E)."""
        e = torch.exp(u)
        return self.flux(e, theta) * e

    # ------------------------------------------------------------------ tables
    def _build_tables(self) -> None:
        """Bin edges, bin-integrated probabilities (Gauss-Legendre) and corner densities, all float64 on ``device``."""
        f64: dict[str, Any] = dict(dtype=torch.float64, device=self.device)
        u_edges = torch.linspace(math.log(self.energy_range[0]), math.log(self.energy_range[1]), self.n_bins_energy + 1, **f64)
        t_edges = torch.linspace(self.theta_range[0], self.theta_range[1], self.n_bins_theta + 1, **f64)
        nodes, weights = np.polynomial.legendre.leggauss(_GL_ORDER)
        nodes_t, weights_t = torch.tensor(nodes, **f64), torch.tensor(weights, **f64)

        def _points(edges: Tensor) -> tuple[Tensor, Tensor]:
            lo, hi = edges[:-1, None], edges[1:, None]
            pts = 0.5 * (lo + hi) + 0.5 * (hi - lo) * nodes_t  # (n_bins, order)
            return pts, 0.5 * (hi - lo) * weights_t

        t_pts, t_w = _points(t_edges)
        u_pts, u_w = _points(u_edges)
        g = self._density(u_pts.reshape(1, 1, -1, _GL_ORDER), t_pts.reshape(-1, _GL_ORDER, 1, 1))
        g = torch.nan_to_num(g.to(torch.float64), nan=0.0, posinf=0.0, neginf=0.0).clamp_min(0.0)
        prob = torch.einsum("iajb,ia,jb->ij", g, t_w, u_w)  # (n_theta, n_energy) integrals over each bin
        total = float(prob.sum())
        if not (math.isfinite(total) and total > 0):
            raise ValueError("the flux integrates to zero or a non-finite value over energy_range x theta_range")
        corners = self._density(u_edges[None, :], t_edges[:, None]).to(torch.float64)
        self._u_edges, self._t_edges = u_edges, t_edges
        self._bin_prob = prob / total
        self._cdf = torch.cumsum(self._bin_prob.reshape(-1), 0)
        self._corners = torch.nan_to_num(corners, nan=0.0, posinf=0.0, neginf=0.0).clamp_min(0.0)
        self.total_flux = total  # integral of ``flux`` over the energy and theta ranges (per unit phi)

    # ------------------------------------------------------------------ sampling
    def _rand(self, n: int, generator: torch.Generator | None) -> Tensor:
        return torch.rand(n, dtype=torch.float64, device=self.device, generator=generator)

    def sample_theta_energy(self, n_muons: int, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Draw ``n_muons`` (theta [rad], E [GeV]) pairs (float64) from the continuous flux."""
        r = self._rand(n_muons, generator) * float(self._cdf[-1])
        idx = torch.searchsorted(self._cdf, r, right=True).clamp(max=self._cdf.numel() - 1)
        it, iu = idx // self.n_bins_energy, idx % self.n_bins_energy
        c = self._corners
        g00, g10, g01, g11 = c[it, iu], c[it + 1, iu], c[it, iu + 1], c[it + 1, iu + 1]  # (theta, u) corners
        ft = _sample_linear(g00 + g01, g10 + g11, self._rand(n_muons, generator))
        fu = _sample_linear(g00 * (1 - ft) + g10 * ft, g01 * (1 - ft) + g11 * ft, self._rand(n_muons, generator))
        theta = self._t_edges[it] + ft * (self._t_edges[it + 1] - self._t_edges[it])
        u = self._u_edges[iu] + fu * (self._u_edges[iu + 1] - self._u_edges[iu])
        return theta, torch.exp(u)

    def generate_set(self, n_muons: int, generator: torch.Generator | None = None) -> Tensor:
        """(n_muons, 5) tensor of ``x, y`` [m], ``p`` [GeV], ``theta``, ``phi`` [rad] on ``device`` (DEFAULT_DTYPE).

        ``generator`` must live on ``device``; ``None`` uses torch's global generator.
        """
        if int(n_muons) != n_muons or n_muons < 0:
            raise ValueError(f"n_muons must be an integer >= 0, got {n_muons!r}")
        n_muons = int(n_muons)
        theta, energy = self.sample_theta_energy(n_muons, generator)
        if self.fixed_mom is None:
            mom = torch.sqrt((energy * energy - MUON_MASS**2).clamp_min(0.0))
        else:
            mom = torch.full_like(energy, self.fixed_mom)
        x = self.x_range[0] + (self.x_range[1] - self.x_range[0]) * self._rand(n_muons, generator)
        y = self.y_range[0] + (self.y_range[1] - self.y_range[0]) * self._rand(n_muons, generator)
        phi = 2 * math.pi * self._rand(n_muons, generator)
        return torch.stack([x, y, mom, theta, phi], dim=1).to(DEFAULT_DTYPE)

    def __call__(self, n_muons: int, generator: torch.Generator | None = None) -> Tensor:
        return self.generate_set(n_muons, generator=generator)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(x_range={self.x_range}, y_range={self.y_range}, fixed_mom={self.fixed_mom}, "
            f"energy_range={self.energy_range}, theta_range={self.theta_range}, device={self.device})"
        )

    # ------------------------------------------------------------------ construction from a volume
    @classmethod
    def from_volume(cls, volume: Volume, min_angle: float = math.pi / 12, **kwargs: Any) -> AbsMuonGenerator:
        """Generator whose x/y range is the passive footprint widened by d on every side.

        d = tan(min_angle) (h - z_passive_bottom + voxel size): a muon starting at the top ``h`` [m] of the volume
        a distance d outside the footprint needs theta >~ ``min_angle`` to reach the bottom passive layer.
        ``kwargs`` go to the constructor (``fixed_mom``, ``energy_range``, ``theta_range``, ``device``, ...).
        """
        if not (0 <= min_angle < math.pi / 2):
            raise ValueError(f"min_angle must be in [0, pi/2) rad, got {min_angle}")
        h = float(torch.as_tensor(volume.h).reshape(-1)[0])
        z_bottom = float(torch.as_tensor(volume.get_passive_z_range()[0]).reshape(-1)[0])
        d = math.tan(min_angle) * (h - z_bottom + float(volume.passive_size))
        lw = torch.as_tensor(volume.lw).reshape(-1).tolist()
        return cls(x_range=(-d, lw[0] + d), y_range=(-d, lw[1] + d), **kwargs)


class MuonGenerator2015(AbsMuonGenerator):
    """Modified Gaisser flux of Guan et al. 2015 (arXiv:1509.06176), valid down to low energies and large angles.

    cos* = sqrt((c^2 + P1^2 + P2 c^P3 + P4 c^P5) / (1 + P1^2 + P2 + P4)), c = cos(theta);
    I = 0.14 [E (1 + 3.64 / (E cos*^1.29))]^-2.7 [1 / (1 + 1.1 E cos* / 115) + 0.054 / (1 + 1.1 E cos* / 850)]
    [cm^-2 s^-1 sr^-1 GeV^-1]; ``flux`` = I cos(theta) sin(theta).
    """

    P1 = 0.102573
    P2 = -0.068287
    P3 = 0.958633
    P4 = 0.0407253
    P5 = 0.817285

    def flux(self, energy: ArrayLike, theta: ArrayLike) -> Tensor:
        e, t = _as_f64(energy), _as_f64(theta)
        c = torch.cos(t)
        num = c**2 + self.P1**2 + self.P2 * c**self.P3 + self.P4 * c**self.P5
        cos_star = torch.sqrt(num / (1 + self.P1**2 + self.P2 + self.P4))
        gaisser = (e * (1 + 3.64 / (e * cos_star**1.29))) ** -2.7
        mesons = 1 / (1 + 1.1 * e * cos_star / 115) + 0.054 / (1 + 1.1 * e * cos_star / 850)
        return 0.14 * gaisser * mesons * c * torch.sin(t)


class MuonGenerator2016(AbsMuonGenerator):
    """Flux of Shukla & Sankrith 2016 (arXiv:1606.06907), with the Earth's curvature through D(theta).

    D = sqrt(R^2 cos^2 theta + 2 R + 1) - R cos theta, R = R_earth / d = 174;
    I = I0 N (E0 + E)^-n (1 + E / eps)^-1 D^-(n-1) [m^-2 s^-1 sr^-1 GeV^-1], N = (n - 1)(E0 + Ec)^(n-1);
    I0 = 88, n = 3, E0 = 3.87 GeV, Ec = 0.5 GeV, eps = 854 GeV; ``flux`` = I cos(theta) sin(theta).
    """

    I_0 = 88.0
    n = 3.0
    E_0 = 3.87
    E_c = 0.5
    epinv = 1 / 854.0
    Rod = 174.0
    N = (n - 1) * (E_0 + E_c) ** (n - 1)

    def flux(self, energy: ArrayLike, theta: ArrayLike) -> Tensor:
        e, t = _as_f64(energy), _as_f64(theta)
        c = torch.cos(t)
        d = torch.sqrt(self.Rod**2 * c**2 + 2 * self.Rod + 1) - self.Rod * c
        spectrum = self.I_0 * self.N * (self.E_0 + e) ** -self.n / (1 + e * self.epinv)
        return spectrum * d ** -(self.n - 1) * c * torch.sin(t)
