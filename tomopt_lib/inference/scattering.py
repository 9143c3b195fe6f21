"""``ScatterBatch`` / ``GenScatterBatch``: incoming and outgoing track fits, PoCA and scatter variables per muon.

The in-track is fitted to the hits of the detector groups above the passive block, the out-track to those below
(``volume.get_detector_groups()``, default ``["above"]`` / ``["below"]``; any group names work). The
``MuonBatch`` is never modified: muons that cannot be reconstructed are left out of the batch and ``keep_mask`` says
which muons of ``mu`` were kept (use ``sb.mom`` for their momenta).

Muons are left out when (thresholds):
- a track has < 2 usable hits per axis or a weighted z spread < 1 um (usable: finite position and uncertainty,
  uncertainty > 0, efficiency > 0; unusable hits get weight 0, so a missed panel does not discard the muon);
- a track is near horizontal: theta >= pi/2 - 1e-5;
- the scatter angle ``theta_msc`` is 0 or not finite;
- the in-track at the passive top or the out-track at the passive bottom lies more than 10 lw outside the block
  in x or y.

The track fits and all variables are computed together on construction (the cuts need them; the variables without
autograd graph), the differentiable variables and all ``<var>_unc`` together on the first request of any of them
(error propagation of the hit xy uncertainties through per-muon forward-mode Jacobians, see ``track_fit``; one pass,
one autograd graph); everything is memoised. Time and memory are O(N); values and
uncertainties are differentiable w.r.t. hit positions, uncertainties and efficiencies (hence detector parameters).
Shapes: (N, 1) scalars, (N, 2) xy, (N, 3) xyz; an empty batch gives (0, k) tensors.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, cast

import torch
from torch import Tensor

from ..muon.muon_batch import MuonBatch
from ..runtime import DeviceLike, resolve_device
from .track_fit import VAR_SIZES, LineFit, fit_lines, propagate_unc, scatter_vars, split_vars

if TYPE_CHECKING:
    from ..volume.volume import Volume

__all__ = ["ScatterBatch", "GenScatterBatch"]

MAX_THETA: float = math.pi / 2 - 1e-5
"""Tracks with theta at or above this [rad] are near horizontal and left out."""
MAX_LW_OUTSIDE: float = 10.0
"""Tracks crossing the passive top/bottom more than this many lw outside the block are left out."""


def _value(name: str, doc: str) -> property:
    return property(lambda self: self._get_values()[name], doc=doc)


def _unc(name: str) -> property:
    return property(lambda self: self._get_uncs()[name], doc=f"Uncertainty on ``{name}`` (same shape) [same units].")


FitInputs = tuple[Tensor, Tensor, Tensor]
"""(positions, uncertainties, efficiencies) of the hits a track is fitted to."""


class ScatterBatch:
    """Scatter information of one ``MuonBatch`` that went through ``volume``.

    Args:
        mu: muons with hits (not modified).
        volume: object with ``lw`` (2,) [m], ``get_passive_z_range()`` -> (bottom, top) [m] and optionally
            ``get_detector_groups()`` -> ``{"above": [...], "below": [...]}``.
        in_groups / out_groups: override the group names used for the in-/out-track.
        device: device of the computation (default: that of ``mu``).
    """

    _pos_key = "reco_xyz"

    def __init__(
        self,
        mu: MuonBatch,
        volume: Volume,
        *,
        in_groups: Sequence[str] | None = None,
        out_groups: Sequence[str] | None = None,
        device: DeviceLike = None,
    ) -> None:
        self.mu = mu
        self.volume = volume
        self.device = resolve_device(device) if device is not None else mu.device
        self.in_groups, self.out_groups = self._resolve_groups(volume, in_groups, out_groups)
        self.lw = torch.as_tensor(volume.lw).detach().to(self.device).reshape(2)
        bottom, top = (float(torch.as_tensor(v).reshape(-1)[0]) for v in volume.get_passive_z_range())
        self.z_bottom, self.z_top, self.z_ref = bottom, top, (bottom + top) / 2
        self._all_hits = {g: {k: v.to(self.device) for k, v in d.items()} for g, d in mu.get_hits().items()}
        raw_in, raw_out = self._stack(self.in_groups), self._stack(self.out_groups)
        fit_in, fit_out = self._fit_inputs(raw_in), self._fit_inputs(raw_out)
        self._lines: tuple[LineFit, LineFit] | None = (fit_lines(*fit_in, self.z_ref), fit_lines(*fit_out, self.z_ref))
        self._uncs: dict[str, Tensor] | None = None
        with torch.no_grad():  # the cuts only need detached values; differentiable ones are computed lazily
            self._vals: dict[str, Tensor] | None = self._split(
                scatter_vars(self._params(), self.z_ref, self.z_top, self.z_bottom)[0]
            )
        self.keep_mask = self._keep()
        keep = self.keep_mask
        self._vals = None
        if not bool(keep.all()):  # refit the kept muons so that no filtered muon enters the autograd graph
            fit_in, fit_out = cast(FitInputs, tuple(v[keep] for v in fit_in)), cast(FitInputs, tuple(v[keep] for v in fit_out))
            raw_in, raw_out = {k: v[keep] for k, v in raw_in.items()}, {k: v[keep] for k, v in raw_out.items()}
            self._lines = None
        self._raw_in, self._raw_out, self._fit_in, self._fit_out = raw_in, raw_out, fit_in, fit_out

    # ------------------------------------------------------------------ construction helpers
    @staticmethod
    def _resolve_groups(
        volume: Volume, in_groups: Sequence[str] | None, out_groups: Sequence[str] | None
    ) -> tuple[list[str], list[str]]:
        groups = {"above": ["above"], "below": ["below"]}
        if hasattr(volume, "get_passives") and not volume.get_passives():
            raise ValueError("the volume has no passive layers: there is no block to reconstruct scatters in")
        if hasattr(volume, "get_detector_groups"):
            groups = {k: list(v) for k, v in volume.get_detector_groups().items()}
        ins = list(in_groups) if in_groups is not None else groups.get("above", [])
        outs = list(out_groups) if out_groups is not None else groups.get("below", [])
        if not ins or not outs:
            raise ValueError(f"need at least one detector group above and below the passive block, got {ins} / {outs}")
        return ins, outs

    def _stack(self, groups: list[str]) -> dict[str, Tensor]:
        """Concatenate the hits of ``groups`` along the hit axis: reco/gen (N, n, 3), unc (N, n, 3), eff (N, n, 1)."""
        present = [g for g in groups if g in self._all_hits]
        if not present:
            raise ValueError(f"none of the detector groups {groups} recorded hits; recorded: {list(self._all_hits)}")
        out: dict[str, list[Tensor]] = {"reco_xyz": [], "gen_xyz": [], "unc_xyz": [], "eff": []}
        for g in present:
            d = self._all_hits[g]
            reco = d["reco_xyz"]
            unc = d.get("unc_xyz")
            if unc is None:
                unc = torch.cat([torch.ones_like(reco[..., :2]), torch.zeros_like(reco[..., 2:])], dim=-1)
            out["reco_xyz"].append(reco)
            out["gen_xyz"].append(d.get("gen_xyz", reco))
            out["unc_xyz"].append(unc)
            out["eff"].append(d.get("eff", torch.ones_like(reco[..., :1])))
        return {k: torch.cat(v, dim=1) for k, v in out.items()}

    def _fit_inputs(self, raw: dict[str, Tensor]) -> FitInputs:
        """(positions, uncertainties, efficiencies) the tracks are fitted to."""
        return raw[self._pos_key], raw["unc_xyz"], raw["eff"]

    def _keep(self) -> Tensor:
        """(N,) muons that pass the quality cuts of the module docstring."""
        l_in, l_out = self._get_lines()
        v = {k: t.detach() for k, t in self._get_values().items()}
        keep = l_in.ok & l_out.ok
        keep &= torch.isfinite(l_in.params.detach()).all(1) & torch.isfinite(l_out.params.detach()).all(1)
        keep &= (v["theta_in"][:, 0] < MAX_THETA) & (v["theta_out"][:, 0] < MAX_THETA)
        msc = v["theta_msc"][:, 0]
        keep &= torch.isfinite(msc) & (msc > 0)
        low, high = -MAX_LW_OUTSIDE * self.lw, (1 + MAX_LW_OUTSIDE) * self.lw
        for xyz in (v["xyz_in"], v["xyz_out"]):
            keep &= ((xyz[:, :2] >= low) & (xyz[:, :2] <= high)).all(1)
        return keep

    @staticmethod
    def _split(values: Tensor) -> dict[str, Tensor]:
        out = split_vars(values)
        out["total_scatter"] = out["theta_msc"]
        return out

    # ------------------------------------------------------------------ lazy computation
    def _get_lines(self) -> tuple[LineFit, LineFit]:
        if self._lines is None:
            self._lines = (fit_lines(*self._fit_in, self.z_ref), fit_lines(*self._fit_out, self.z_ref))
        return self._lines

    def _params(self) -> Tensor:
        l_in, l_out = self._get_lines()
        return torch.cat([l_in.params, l_out.params], dim=1)

    def _get_values(self) -> dict[str, Tensor]:
        if self._vals is None:
            self._compute_vars()
        return self._vals  # type: ignore[return-value]

    def _get_uncs(self) -> dict[str, Tensor]:
        if self._uncs is None:
            self._compute_vars()
        return self._uncs  # type: ignore[return-value]

    def _compute_vars(self) -> None:
        """Values and uncertainties in one forward-mode pass (the values of a Jacobian pass are the plain values, and
        one shared autograd graph costs much less to back-propagate than separate value and Jacobian graphs)."""
        l_in, l_out = self._get_lines()
        values, jac = scatter_vars(self._params(), self.z_ref, self.z_top, self.z_bottom, with_jac=True)
        self._vals = self._split(values)
        self._uncs = self._split(propagate_unc(cast(Tensor, jac), l_in.cov, l_out.cov))  # with_jac=True

    # ------------------------------------------------------------------ scatter variables
    poca_xyz = _value("poca_xyz", "(N, 3) point of closest approach of the in- and out-track [m].")
    dxy = _value("dxy", "(N, 2) out-track minus in-track xy at the PoCA z [m].")
    theta_in = _value("theta_in", "(N, 1) theta of the incoming track [rad].")
    theta_out = _value("theta_out", "(N, 1) theta of the outgoing track [rad].")
    phi_in = _value("phi_in", "(N, 1) phi of the incoming track in [0, 2 pi) [rad].")
    phi_out = _value("phi_out", "(N, 1) phi of the outgoing track in [0, 2 pi) [rad].")
    theta_xy_in = _value("theta_xy_in", "(N, 2) theta_x, theta_y of the incoming track [rad].")
    theta_xy_out = _value("theta_xy_out", "(N, 2) theta_x, theta_y of the outgoing track [rad].")
    dtheta_xy = _value("dtheta_xy", "(N, 2) theta_xy_out - theta_xy_in (signed) [rad].")
    dtheta = _value("dtheta", "(N, 1) |delta theta| (smaller-scatter hypothesis) [rad].")
    dphi = _value("dphi", "(N, 1) |delta phi| (smaller-scatter hypothesis) [rad].")
    theta_msc = _value("theta_msc", "(N, 1) 3-D angle between the in- and out-track [rad].")
    total_scatter = _value("total_scatter", "(N, 1) alias of ``theta_msc`` [rad].")
    xyz_in = _value("xyz_in", "(N, 3) in-track at the top of the passive block [m].")
    xyz_out = _value("xyz_out", "(N, 3) out-track at the bottom of the passive block [m].")
    poca_xyz_unc = _unc("poca_xyz")
    dxy_unc = _unc("dxy")
    theta_in_unc = _unc("theta_in")
    theta_out_unc = _unc("theta_out")
    phi_in_unc = _unc("phi_in")
    phi_out_unc = _unc("phi_out")
    theta_xy_in_unc = _unc("theta_xy_in")
    theta_xy_out_unc = _unc("theta_xy_out")
    dtheta_xy_unc = _unc("dtheta_xy")
    dtheta_unc = _unc("dtheta")
    dphi_unc = _unc("dphi")
    theta_msc_unc = _unc("theta_msc")
    total_scatter_unc = _unc("total_scatter")
    xyz_in_unc = _unc("xyz_in")
    xyz_out_unc = _unc("xyz_out")

    @property
    def variables(self) -> list[str]:
        """Names of all scatter variables (each has a ``<name>_unc``)."""
        return [*VAR_SIZES, "total_scatter"]

    # ------------------------------------------------------------------ tracks
    def _track_start(self, line: LineFit, fit: tuple[Tensor, Tensor, Tensor]) -> Tensor:
        """Track at the z of its highest usable hit [m]."""
        valid = line.valid.any(-1)
        z = torch.where(valid, fit[0][..., 2], torch.full_like(fit[0][..., 2], -float("inf"))).amax(1)
        return self._line_at(line.params, z)

    def _line_at(self, params: Tensor, z: Tensor) -> Tensor:
        dz = z - self.z_ref
        return torch.stack([params[:, 0] + params[:, 2] * dz, params[:, 1] + params[:, 3] * dz, z], dim=1)

    @staticmethod
    def _direction(params: Tensor) -> Tensor:
        v = torch.stack([-params[:, 2], -params[:, 3], -torch.ones_like(params[:, 2])], dim=1)
        return v / v.norm(dim=1, keepdim=True)

    @property
    def track_in(self) -> Tensor:
        """(N, 3) unit flight direction of the incoming track."""
        return self._direction(self._get_lines()[0].params)

    @property
    def track_out(self) -> Tensor:
        """(N, 3) unit flight direction of the outgoing track."""
        return self._direction(self._get_lines()[1].params)

    @property
    def track_start_in(self) -> Tensor:
        """(N, 3) incoming track at the z of its highest usable hit [m]."""
        return self._track_start(self._get_lines()[0], self._fit_in)

    @property
    def track_start_out(self) -> Tensor:
        """(N, 3) outgoing track at the z of its highest usable hit [m]."""
        return self._track_start(self._get_lines()[1], self._fit_out)

    @staticmethod
    def get_muon_trajectory(
        hits: Tensor, uncs: Tensor, lw: Tensor | None = None, effs: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Fit one straight track per muon to (N, n, 3) hits with (N, n, 3) xy uncertainties (optional (N, n, 1) effs).

        Returns ``(direction, start)``: (N, 3) unit flight direction and (N, 3) track point at the z of the highest
        usable hit. Muons with < 2 usable hits get NaN. ``lw`` is accepted for API compatibility and not used.
        """
        effs = torch.ones_like(hits[..., :1]) if effs is None else effs
        line = fit_lines(hits, uncs, effs, 0.0)
        valid = line.valid.any(-1)
        z = torch.where(valid, hits[..., 2], torch.full_like(hits[..., 2], -math.inf))
        z = z.amax(1) if hits.shape[1] else hits.new_zeros(len(hits))
        p = line.params
        start = torch.stack([p[:, 0] + p[:, 2] * z, p[:, 1] + p[:, 3] * z, z], dim=1)
        return ScatterBatch._direction(p), start

    # ------------------------------------------------------------------ hits and bookkeeping
    @property
    def n_mu(self) -> int:
        """Number of muons kept."""
        return int(self.keep_mask.sum())

    def __len__(self) -> int:
        return self.n_mu

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}(n_mu={self.n_mu}/{len(self.keep_mask)}, in={self.in_groups}, out={self.out_groups})"

    @property
    def mom(self) -> Tensor:
        """(N,) momenta [GeV] of the kept muons (``mu.reco_mom[keep_mask]``)."""
        return self.mu.reco_mom.to(self.device)[self.keep_mask]

    reco_mom = mom

    @property
    def mom_in(self) -> Tensor:
        """(N,) momenta [GeV] of the kept muons when they were generated, i.e. before any energy loss (``mom`` is
        their momentum after the volume)."""
        return self.mu.mom_in.to(self.device)[self.keep_mask]

    @property
    def hits(self) -> dict[str, dict[str, Tensor]]:
        """``{group: {var: (N, n, k)}}`` of all groups, kept muons only."""
        return {g: {k: v[self.keep_mask] for k, v in d.items()} for g, d in self._all_hits.items()}

    def _both(self, key: str) -> Tensor:
        return torch.cat([self._raw_in[key], self._raw_out[key]], dim=1)

    above_hits = property(lambda self: self._raw_in["reco_xyz"], doc="(N, n_in, 3) recorded in-group hits [m].")
    below_hits = property(lambda self: self._raw_out["reco_xyz"], doc="(N, n_out, 3) recorded out-group hits [m].")
    above_gen_hits = property(lambda self: self._raw_in["gen_xyz"], doc="(N, n_in, 3) true in-group hits [m].")
    below_gen_hits = property(lambda self: self._raw_out["gen_xyz"], doc="(N, n_out, 3) true out-group hits [m].")
    above_hit_uncs = property(lambda self: self._fit_in[1], doc="(N, n_in, 3) uncertainties used for the in-track [m].")
    below_hit_uncs = property(lambda self: self._fit_out[1], doc="(N, n_out, 3) uncertainties used for the out-track [m].")
    above_hit_effs = property(lambda self: self._fit_in[2], doc="(N, n_in, 1) efficiencies used for the in-track.")
    below_hit_effs = property(lambda self: self._fit_out[2], doc="(N, n_out, 1) efficiencies used for the out-track.")
    reco_hits = property(lambda self: self._both("reco_xyz"), doc="(N, n_in + n_out, 3) recorded hits, in then out [m].")
    gen_hits = property(lambda self: self._both("gen_xyz"), doc="(N, n_in + n_out, 3) true hits, in then out [m].")
    hit_uncs = property(lambda self: torch.cat([self._fit_in[1], self._fit_out[1]], 1), doc="(N, n, 3) uncertainties [m].")
    hit_effs = property(lambda self: torch.cat([self._fit_in[2], self._fit_out[2]], 1), doc="(N, n, 1) efficiencies.")
    n_hits_above = property(lambda self: self._raw_in["reco_xyz"].shape[1], doc="Hits per muon in the in-groups.")
    n_hits_below = property(lambda self: self._raw_out["reco_xyz"].shape[1], doc="Hits per muon in the out-groups.")

    def get_scatter_mask(self) -> Tensor:
        """(N,) True where the PoCA lies inside the passive block (0 <= x < lw0, 0 <= y < lw1, bottom <= z < top)."""
        p = self.poca_xyz.detach()
        inside = (p[:, :2] >= 0).all(1) & (p[:, :2] < self.lw).all(1)
        return inside & (p[:, 2] >= self.z_bottom) & (p[:, 2] < self.z_top)

    def plot_scatter(self, idx: int, savename: Path | None = None):
        """Plot the hits (with xy uncertainties), fitted tracks and PoCA of muon ``idx`` in the xz and yz planes."""
        import matplotlib.pyplot as plt

        fit_in, fit_out = self._fit_in, self._fit_out
        l_in, l_out = self._get_lines()
        poca = self.poca_xyz[idx].detach().cpu()
        fig, axes = plt.subplots(1, 2, figsize=(10, 5))
        for ax, k, name in ((axes[0], 0, "x"), (axes[1], 1, "y")):
            ax.axhspan(self.z_bottom, self.z_top, color="grey", alpha=0.2, label="passive")
            for fit, line, col, lab in ((fit_in, l_in, "tab:blue", "in"), (fit_out, l_out, "tab:red", "out")):
                h = fit[0][idx].detach().cpu()
                u = fit[1][idx, :, k].detach().cpu()
                ok = torch.isfinite(h).all(1) & torch.isfinite(u)
                ax.errorbar(h[ok, k], h[ok, 2], xerr=u[ok], fmt="o", color=col, label=f"{lab} hits")
                z = torch.linspace(
                    min(float(h[ok, 2].min()) if ok.any() else self.z_top, self.z_bottom),
                    max(float(h[ok, 2].max()) if ok.any() else self.z_bottom, self.z_top),
                    50,
                )
                p = line.params[idx].detach().cpu()
                ax.plot(p[k] + p[k + 2] * (z - self.z_ref), z, color=col, label=f"{lab} track")
            ax.plot([float(poca[k])], [float(poca[2])], "k*", markersize=12, label="PoCA")
            ax.set_xlabel(f"{name} [m]")
            ax.set_ylabel("z [m]")
        axes[0].legend(fontsize=8)
        fig.tight_layout()
        if savename is not None:
            fig.savefig(savename)
        return fig


class GenScatterBatch(ScatterBatch):
    """``ScatterBatch`` on the true hits (``gen_xyz``) with unit xy uncertainties and unit efficiencies (diagnostics).

    Variables carry no gradient w.r.t. detector resolution or efficiency (only through the hit z, if any).
    """

    _pos_key = "gen_xyz"

    def _fit_inputs(self, raw: dict[str, Tensor]) -> FitInputs:
        gen = raw["gen_xyz"]
        unc = torch.cat([torch.ones_like(gen[..., :2]), torch.zeros_like(gen[..., 2:])], dim=-1).detach()
        return gen, unc, torch.ones_like(gen[..., :1]).detach()
