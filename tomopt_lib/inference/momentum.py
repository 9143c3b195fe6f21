"""Momentum models of X0 inference: what the inferrer knows about each muon's momentum.

Highland's width depends on the muon momentum through theta0^2 = A^2 F(x) / (beta p)^2, so every X0 estimate needs
the per-muon factor u = 1 / (beta p)^2 [GeV^-2] averaged over the crossing. With continuous energy loss the
momentum falls from p_in (entry) to p_out (exit) and the crossing's factor is the path average
u = integral ds / (beta p)^2 / L = integral u(E) dE / S(E) / integral dE / S(E) over [E_out, E_in]
(:class:`CrossingMomentum`; S the stopping power, whose shape in E is nearly the same for all materials, so iron's
is used; u = 1 / (beta p)^2 without energy loss). For a constant S it is 1 / (beta_in p_in beta_out p_out); near
the end of the range, where S rises, it is smaller.

Models (``MomentumModel.kind``):

- ``"true"``: an ideal spectrometer above and below the volume: u from the true p_in and p_out (TomOpt's
  assumption of a perfectly known momentum, extended to energy loss).
- ``"smeared"``: the same spectrometers with a relative resolution r on the measured curvature 1/p (what a magnetic
  spectrometer measures): q = (1 / (beta p)) (1 + r eps), eps ~ N(0, 1), independently above and below, seeded;
  u = q_in q_out is then unbiased (E[u] = the true u) and its relative variance is (1 + r^2)^2 - 1.
- ``"unknown"``: no momentum measurement. u is the mean of 1 / (beta p)^2 over the generator's flux spectrum at the
  muon's measured incoming zenith angle (the generator and the reconstructed theta_in, never the hidden truth), and
  the spread of u over the spectrum enters the uncertainties through ``var_factor`` = E[u^2] / E[u]^2. The whole
  prior is also kept as nodes (``SpectrumMomentum.nodes``): the inferrers maximise the mixture likelihood over them
  (EM: a muon's posterior over the nodes given its scatter), so a large scatter is read as a low momentum.

``var_factor`` (per muon, >= 1) is the factor by which the second moment of the squared scatter angle exceeds the
known-momentum value; inferrers use it to weight muons and to fold the momentum spread into their uncertainties.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ..core import MUON_MASS, MUON_MASS2
from ..runtime import make_generator

if TYPE_CHECKING:
    from ..muon.generation import AbsMuonGenerator
    from ..runtime import DeviceLike

__all__ = [
    "MOMENTUM_MODELS",
    "MomentumModel",
    "inv_beta_p2",
    "SpectrumMomentum",
    "CrossingMomentum",
    "muon_momentum_factor",
]

MOMENTUM_MODELS = ("true", "smeared", "unknown")
"""Names of the momentum models (see the module docstring)."""
N_U_NODES = 24
"""Nodes of the discretised prior of u per muon (``SpectrumMomentum.nodes``): bins of ln u ~0.6 wide."""


def inv_beta_p2(p: Tensor) -> Tensor:
    """1 / (beta p)^2 = (p^2 + m_mu^2) / p^4 [GeV^-2] of a muon of momentum ``p`` [GeV]."""
    p2 = p.square()
    return (p2 + MUON_MASS2) / p2.square()


@dataclass(frozen=True)
class MomentumModel:
    """Which momentum information the inference uses (module docstring).

    Args:
        kind: ``"true"``, ``"smeared"`` or ``"unknown"``.
        resolution: relative resolution r of the measured curvature 1/p (``"smeared"`` only), 0 < r <= 1.
        seed: seed of the smearing draws (``"smeared"``); the same seed gives the same measurement errors.
    """

    kind: str = "true"
    resolution: float = 0.1
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in MOMENTUM_MODELS:
            raise ValueError(f"momentum model kind={self.kind!r} is unknown; allowed: {list(MOMENTUM_MODELS)}")
        r = float(self.resolution)
        if not (math.isfinite(r) and 0 < r <= 1):
            raise ValueError(f"momentum resolution={self.resolution!r} must be a relative resolution in (0, 1]")

    @classmethod
    def coerce(cls, spec: MomentumModel | str | None) -> MomentumModel:
        """A ``MomentumModel`` from an instance, a kind name or ``None`` (= ``"true"``)."""
        if spec is None:
            return cls()
        if isinstance(spec, MomentumModel):
            return spec
        if isinstance(spec, str):
            return cls(kind=spec)
        raise ValueError(f"momentum must be a MomentumModel or one of {list(MOMENTUM_MODELS)}, got {spec!r}")


class CrossingMomentum:
    """Path averages over a continuous-slowing-down crossing from p_in to p_out, with iron's stopping-power shape.

    R(T) = integral_{T_cut}^{T} dT' / S(T') (residual range in mass units) and U(T) = integral u dT' / S on a log grid
    of kinetic energy T; u_bar(p_in, p_out) = (U_in - U_out) / (R_in - R_out); the momentum at a fraction f of the
    crossing is the one with R = R_in - f (R_in - R_out). Built once (pure function of the grid, ~5 ms).
    """

    def __init__(self, n: int = 4000, t_min: float = 1e-3, t_max: float = 1e4) -> None:
        from ..volume.energy_loss import stopping_power

        t = torch.logspace(math.log10(t_min), math.log10(t_max), n, dtype=torch.float64)
        p = torch.sqrt(t * (t + 2 * MUON_MASS))
        s = stopping_power(p, "iron", mass=True).to(torch.float64)  # MeV cm^2 / g; the shape is what matters
        u = inv_beta_p2(p)
        dt = t[1:] - t[:-1]
        inv_s = 1.0 / s
        r = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(0.5 * (inv_s[1:] + inv_s[:-1]) * dt, 0)])
        us = u * inv_s
        uu = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(0.5 * (us[1:] + us[:-1]) * dt, 0)])
        self.ln_t, self.r, self.u_cum = torch.log(t), r, uu
        self.s_1gev = float(stopping_power(torch.tensor([1.0], dtype=torch.float64), "iron", mass=True)[0])

    def _interp(self, x: Tensor, xp: Tensor, fp: Tensor) -> Tensor:
        xp, fp = xp.to(x.device), fp.to(x.device)  # the tables live on the CPU; lookups run where the data are
        i = torch.searchsorted(xp, x.contiguous()).clamp(1, len(xp) - 1)
        w = ((x - xp[i - 1]) / (xp[i] - xp[i - 1])).clamp(0.0, 1.0)
        return fp[i - 1] + w * (fp[i] - fp[i - 1])

    def _at(self, p: Tensor) -> tuple[Tensor, Tensor]:
        """R and U at momenta ``p`` [GeV] (any shape): linear in ln T on the uniform ln T grid (direct indexing)."""
        t = (torch.sqrt(p.to(torch.float64).square() + MUON_MASS2) - MUON_MASS).clamp_min(float(self.ln_t[0].exp()))
        pos = (torch.log(t) - float(self.ln_t[0])) / float(self.ln_t[1] - self.ln_t[0])
        i = pos.floor().long().clamp(0, len(self.ln_t) - 2)
        w = (pos - i).clamp(0.0, 1.0)
        r, uc = self.r.to(p.device), self.u_cum.to(p.device)  # CPU tables; no-op on the CPU
        return r[i] + w * (r[i + 1] - r[i]), uc[i] + w * (uc[i + 1] - uc[i])

    def mean_u(self, p_in: Tensor, p_out: Tensor) -> Tensor:
        """Path-averaged 1 / (beta p)^2 [GeV^-2] of crossings from ``p_in`` to ``p_out`` [GeV] (broadcast shapes)."""
        r_in, u_in = self._at(p_in)
        r_out, u_out = self._at(p_out)
        dr = r_in - r_out
        plain = torch.sqrt(inv_beta_p2(p_in.to(torch.float64)) * inv_beta_p2(p_out.to(torch.float64)))
        out = torch.where(dr > 1e-9 * r_in.clamp_min(1e-30), (u_in - u_out) / dr.clamp_min(1e-300), plain)
        return out.to(p_in.dtype)

    def after_loss(self, p_in: Tensor, loss_1gev: Tensor) -> tuple[Tensor, Tensor]:
        """``(p_out, alive)``: the momentum [GeV] after a column of material in which a 1 GeV muon would lose
        ``loss_1gev`` [GeV] (broadcast shapes), following the stopping power's shape along the slowing down, i.e. the
        residual range R_out = R(T_in) - loss_1gev / S(1 GeV), and whether the muon comes out (kinetic energy above
        the table's 1 MeV; p_out = 0 where it does not). A constant loss instead (E_out = E_in - loss) ignores that S
        is below S(1 GeV) over most of a slowing muon's path (the ionisation minimum) and above it only at the end:
        muons near the end of their range came out too slowly (0.5 m of iron from 0.75 GeV: 0.09 instead of 0.13 GeV),
        with too large a 1 / (beta p)^2, and the spectrum's mean u over the crossings of uniform iron was 17 % above
        the true crossings' (now -2 %)."""
        r_in, _ = self._at(p_in)
        r_out = r_in - loss_1gev.to(torch.float64) / self.s_1gev
        alive = r_out > 0
        ln_t = self._interp(r_out.clamp_min(0.0).reshape(-1), self.r, self.ln_t).reshape(r_out.shape)
        t = torch.exp(ln_t)
        p_out = torch.sqrt(t * (t + 2 * MUON_MASS))
        return torch.where(alive, p_out, torch.zeros_like(p_out)).to(p_in.dtype), alive

    def momentum_at(self, p_in: Tensor, p_out: Tensor, frac: Tensor) -> Tensor:
        """Momentum [GeV] after a fraction ``frac`` of each crossing (by residual range): (N, S) for ``frac`` (S,)
        (the same fractions for every muon), or ``frac``'s shape for ``frac`` (N, ...) (per muon)."""
        r_in, _ = self._at(p_in)
        r_out, _ = self._at(p_out)
        f = frac.to(torch.float64)
        f = f[None, :] if f.dim() == 1 else f
        shape = (-1,) + (1,) * (f.dim() - 1)
        r = r_in.reshape(shape) - f * (r_in - r_out).reshape(shape)
        ln_t = self._interp(r.reshape(-1), self.r, self.ln_t).reshape(r.shape)
        t = torch.exp(ln_t)
        return torch.sqrt(t * (t + 2 * MUON_MASS)).to(p_in.dtype)


@lru_cache(maxsize=1)
def crossing_momentum() -> CrossingMomentum:
    """The shared :class:`CrossingMomentum` table (a pure constant, built on first use and memoised)."""
    return CrossingMomentum()


class SpectrumMomentum:
    """E[1 / (beta p)^2 | theta] and E[u^2] / E[u]^2 of a muon generator's flux, as functions of the zenith angle.

    Built from the generator's bin-integrated flux table (``AbsMuonGenerator._bin_prob``, theta x log E bins):
    for every theta bin the energy bins are averaged with their probabilities, u evaluated at each energy bin's
    logarithmic centre (bins are 1-2 % wide in E). Lookup: linear interpolation in theta (clamped to the table).
    """

    def __init__(self, generator: AbsMuonGenerator, device: DeviceLike = None) -> None:
        prob = generator._bin_prob.to(torch.float64)  # (n_theta, n_energy)
        u_edges, t_edges = generator._u_edges.to(torch.float64), generator._t_edges.to(torch.float64)
        energy = torch.exp(0.5 * (u_edges[1:] + u_edges[:-1]))
        fixed_mom = getattr(generator, "fixed_mom", None)
        if fixed_mom is not None:
            mom = torch.full_like(energy, float(fixed_mom))
        else:
            mom = torch.sqrt((energy.square() - MUON_MASS2).clamp_min(1e-12))
        u = inv_beta_p2(mom)
        w = prob / prob.sum(1, keepdim=True).clamp_min(1e-300)
        mean, second = w @ u, w @ u.square()
        dev = device if device is not None else prob.device
        self.theta_centres = (0.5 * (t_edges[1:] + t_edges[:-1])).to(dev)
        self.mean_u = mean.to(dev)
        self.var_factor = (second / mean.square()).to(dev)
        self._w, self._mom = w.to(dev), mom.to(dev)  # (n_theta, n_energy) bin weights, (n_energy,) momenta

    def _theta_bin(self, theta: Tensor) -> Tensor:
        tc = self.theta_centres
        return torch.bucketize(theta.detach().to(tc.dtype).contiguous(), 0.5 * (tc[1:] + tc[:-1]))

    def nodes(self, theta: Tensor, delta_e: Tensor | None = None, n_nodes: int = N_U_NODES) -> tuple[Tensor, Tensor]:
        """The prior of u = 1 / (beta p)^2 [GeV^-2] of each muon as ``n_nodes`` weighted nodes, ``(u_k, P_k)``, both
        (N, n_nodes) in ``theta``'s dtype: the spectrum at the muon's zenith angle ``theta`` (N,) [rad] (nearest
        table bin), after a column worth ``delta_e`` (N,) [GeV] as in :meth:`lookup_after_loss` (muons that would stop
        are left out). The energy bins are grouped into ``n_nodes`` bins equally spaced in ln u over the batch's
        range; node k carries the probability P_k of its bin and the probability-weighted mean u_k of its members, so
        sum_k P_k u_k = E[u] exactly. Empty bins get P_k = 0."""
        return self._group(*self._bins(theta, delta_e), n_nodes, theta.dtype)

    def prior(self, theta: Tensor, delta_e: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(E[u], E[u^2]/E[u]^2, u_k, P_k)`` in one pass: :meth:`lookup_after_loss` (nearest theta bin; no loss
        for ``delta_e=None``) and :meth:`nodes`."""
        w, u = self._bins(theta, delta_e)
        mean, second = (w * u).sum(1), (w * u.square()).sum(1)
        u_k, p_k = self._group(w, u, N_U_NODES, theta.dtype)
        var = second / mean.square().clamp_min(1e-300)
        return mean.to(theta.dtype), var.to(theta.dtype), u_k, p_k

    @staticmethod
    def _group(w: Tensor, u: Tensor, n_nodes: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """Group the (N, n_energy) bins (weights ``w``, values ``u``) into ``n_nodes`` ln-u bins (see :meth:`nodes`)."""
        ln_u = torch.log(u.clamp_min(1e-300))
        live = w > 0
        lo = ln_u.masked_fill(~live, float("inf")).min()
        hi = ln_u.masked_fill(~live, float("-inf")).max()
        if not bool(torch.isfinite(lo)):
            lo = hi = ln_u.new_zeros(())
        edges = torch.linspace(float(lo), float(hi) + 1e-9, n_nodes + 1, dtype=ln_u.dtype, device=ln_u.device)
        k = torch.bucketize(ln_u.contiguous(), edges[1:-1])  # (N, n_energy) node index
        prob = w.new_zeros(w.shape[0], n_nodes).scatter_add_(1, k, w)
        wu = w.new_zeros(w.shape[0], n_nodes).scatter_add_(1, k, w * u)
        centre = torch.exp(0.5 * (edges[1:] + edges[:-1])).expand_as(prob)
        u_k = torch.where(prob > 0, wu / prob.clamp_min(1e-300), centre)
        prob = prob / prob.sum(1, keepdim=True).clamp_min(1e-300)
        return u_k.to(dtype), prob.to(dtype)

    def _bins(self, theta: Tensor, delta_e: Tensor | None) -> tuple[Tensor, Tensor]:
        """``(w, u)``, both (N, n_energy): the normalised weights of the energy bins at ``theta`` (0 for muons that
        would stop in a column worth ``delta_e`` [GeV] at 1 GeV) and each bin's u (path-averaged over the crossing)."""
        w = self._w[self._theta_bin(theta)]  # (N, n_energy)
        p = self._mom[None, :]  # (1, n_energy)
        if delta_e is None:
            return w, inv_beta_p2(p).expand_as(w)
        cross = crossing_momentum()
        p_out, alive = cross.after_loss(p, delta_e.detach().to(p.dtype)[:, None].clamp_min(0.0))
        u = cross.mean_u(p.expand_as(p_out), torch.where(alive, p_out, p))  # (N, n_energy)
        w = w * alive.to(w.dtype)
        return w / w.sum(1, keepdim=True).clamp_min(1e-300), u

    def lookup_after_loss(self, theta: Tensor, delta_e: Tensor) -> tuple[Tensor, Tensor]:
        """``(E[u], E[u^2]/E[u]^2)`` of crossings at zenith angles ``theta`` (N,) through a column of material in
        which a 1 GeV muon loses ``delta_e`` [GeV] (N,): u is each energy bin's path-averaged 1/(beta p)^2 from p to
        the exit momentum along the stopping power's shape (:meth:`CrossingMomentum.after_loss`), and
        muons that would stop (kinetic energy below 1 MeV at the exit) are left out: they are never observed."""
        w, u = self._bins(theta, delta_e)
        mean = (w * u).sum(1)
        second = (w * u.square()).sum(1)
        return mean.to(theta.dtype), (second / mean.square().clamp_min(1e-300)).to(theta.dtype)

    def lookup(self, theta: Tensor) -> tuple[Tensor, Tensor]:
        """``(E[u], E[u^2]/E[u]^2)`` at zenith angles ``theta`` [rad] (same shape, dtype of ``theta``)."""
        tc = self.theta_centres
        t = theta.detach().to(tc.dtype).clamp(float(tc[0]), float(tc[-1]))
        i = torch.searchsorted(tc, t.contiguous(), right=True).clamp(1, len(tc) - 1)
        f = (t - tc[i - 1]) / (tc[i] - tc[i - 1])
        mean = self.mean_u[i - 1] + f * (self.mean_u[i] - self.mean_u[i - 1])
        var = self.var_factor[i - 1] + f * (self.var_factor[i] - self.var_factor[i - 1])
        return mean.to(theta.dtype), var.to(theta.dtype)


def muon_momentum_factor(
    model: MomentumModel,
    *,
    mom_in: Tensor,
    mom_out: Tensor,
    theta_in: Tensor,
    spectrum: SpectrumMomentum | None = None,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``(u, var_factor, p_in, p_out)``, all (N,): the crossing's 1 / (beta p)^2 [GeV^-2] under ``model``,
    E[u^2]/E[u]^2, and the entry / exit momenta [GeV] the model knows (measured; NaN for ``"unknown"``).

    Args:
        mom_in, mom_out: (N,) true momenta [GeV] at entry and exit (equal without energy loss).
        theta_in: (N,) reconstructed incoming zenith angle [rad] (``"unknown"``).
        spectrum: the generator's :class:`SpectrumMomentum` (required for ``"unknown"``).
        generator: draws of the smearing (``"smeared"``); default: a generator seeded with ``model.seed``.
    """
    if model.kind == "unknown":
        if spectrum is None:
            raise ValueError("momentum model 'unknown' needs the muon generator's spectrum (SpectrumMomentum)")
        mean, var = spectrum.lookup(theta_in)
        nan = torch.full_like(mean, float("nan"))
        return mean, var, nan, nan
    inv_in = torch.sqrt(inv_beta_p2(mom_in))  # 1 / (beta p) at entry [GeV^-1]
    inv_out = torch.sqrt(inv_beta_p2(mom_out))
    cross = crossing_momentum()
    if model.kind == "true":
        return cross.mean_u(mom_in, mom_out), torch.ones_like(inv_in), mom_in, mom_out
    gen = generator if generator is not None else make_generator(model.seed, mom_in.device)
    eps = torch.randn((2, len(mom_in)), generator=gen, device=mom_in.device, dtype=mom_in.dtype)
    r = float(model.resolution)
    q_in = inv_in * (1 + r * eps[0])
    q_out = inv_out * (1 + r * eps[1])
    u = (q_in * q_out).clamp_min(1e-6 * inv_in * inv_out)
    p_in_meas = mom_in / (1 + r * eps[0]).clamp_min(1e-3)  # the measured curvature, as a momentum
    p_out_meas = mom_out / (1 + r * eps[1]).clamp_min(1e-3)
    p_out_meas = torch.minimum(p_out_meas, p_in_meas)  # a crossing only loses energy
    # the end-of-range correction of the path average, evaluated at the measured momenta
    corr = cross.mean_u(p_in_meas, p_out_meas) / torch.sqrt(inv_beta_p2(p_in_meas) * inv_beta_p2(p_out_meas))
    return u * corr, torch.full_like(u, (1 + r * r) ** 2), p_in_meas, p_out_meas
