"""Volume inferrer bases and helpers: ``AbsVolumeInferrer``, ``AbsX0Inferrer``, PDG inversion, per-muon efficiency.

An inferrer is fed any number of ``ScatterBatch`` es of one volume (``add_scatters``) and predicts from all of them
(``get_prediction``). Per-muon inputs are concatenated lazily on first use and memoised; ``add_scatters`` resets
every memoised quantity. Muons with a non-finite input are dropped. With no muons at all (nothing added, only empty
batches, or everything dropped) every prediction raises :class:`NoMuonsError` (a ``ValueError``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ..core import SCATTER_COEF_A, SCATTER_COEF_B
from .merged_batch import merge_scatter_batches
from .momentum import MomentumModel, SpectrumMomentum, muon_momentum_factor
from .voxel_probs import prob_at_least_two

if TYPE_CHECKING:
    from ..muon.generation import AbsMuonGenerator
    from ..volume.volume import Volume
    from .scattering import ScatterBatch

_PATH_SAMPLES = 24  # samples along a straight track for the in-block path length

__all__ = [
    "NoMuonsError",
    "AbsVolumeInferrer",
    "AbsX0Inferrer",
    "panel_muon_efficiency",
    "x0_from_scatters",
    "solve_highland_x",
]


class NoMuonsError(ValueError):
    """Raised when a prediction is requested but no (finite) muon has been added to the inferrer."""


def panel_muon_efficiency(scatters: ScatterBatch) -> Tensor:
    """(N,) P(>= 2 hits in the in-groups) * P(>= 2 hits in the out-groups) from the per-hit efficiencies.

    The in-/out-groups are all detector groups above / below the passive block (``ScatterBatch.above_hit_effs`` /
    ``below_hit_effs``, (N, n, 1)); see :func:`prob_at_least_two`.
    """
    return prob_at_least_two(scatters.above_hit_effs[..., 0]) * prob_at_least_two(scatters.below_hit_effs[..., 0])


def solve_highland_x(y: Tensor, n_iter: int = 6) -> Tensor:
    """x (in radiation lengths) with F(x) = x (1 + B ln x)^2 = y, B = 0.038, by ``n_iter`` fixed Newton steps on ln x.

    h(u) = u + 2 ln(1 + B u) - ln y, u = ln x, starting from u = ln y (the no-log solution); 1 + B u >= 0.05.
    Converges to float precision in ~4 steps for 1e-6 < y < 1e4.
    """
    ln_y = torch.log(y.clamp_min(1e-30))
    u = ln_y
    for _ in range(n_iter):
        g = (1.0 + SCATTER_COEF_B * u).clamp_min(0.05)
        u = u - (u + 2.0 * torch.log(g) - ln_y) / (1.0 + 2.0 * SCATTER_COEF_B / g)
    return torch.exp(u)


def x0_from_scatters(
    delta_z: float, total_scatter: Tensor, theta_in: Tensor, theta_out: Tensor, mom: Tensor, *, log_term: bool = False
) -> Tensor:
    """X0 [m] from (RMS) scatter variables by inverting the PDG model for a vertical path ``delta_z`` [m].

    theta0 = total_scatter / sqrt(2) (projected width), cos_bar = (cos theta_in + cos theta_out) / 2, x = path / X0 with
    path = delta_z / cos_bar. Without the log term (TomOpt): X0 = (A / p)^2 delta_z / (theta0^2 cos_bar), A = 0.0136 GeV.
    With it: solve (A/p)^2 x (1 + B ln x)^2 = theta0^2 for x (:func:`solve_highland_x`), X0 = path / x.
    """
    cos_bar = (torch.cos(theta_in) + torch.cos(theta_out)) / 2
    theta0_sq = total_scatter.square() / 2
    if not log_term:
        return (SCATTER_COEF_A / mom) ** 2 * delta_z / (theta0_sq * cos_bar)
    x = solve_highland_x(theta0_sq * (mom / SCATTER_COEF_A) ** 2)
    return delta_z / (cos_bar * x)


class AbsVolumeInferrer(ABC):
    """Base of volume inference: collects ``ScatterBatch`` es of one ``volume`` and predicts from all of them.

    Attributes: ``volume``, ``device``, ``size`` (voxel edge [m]), ``shp_xyz`` / ``shp_zxy`` (voxel grid shapes),
    ``scatter_batches`` (list of added batches).
    """

    def __init__(
        self, volume: Volume, *, momentum: MomentumModel | str | None = None, mu_generator: AbsMuonGenerator | None = None
    ) -> None:
        self.momentum = MomentumModel.coerce(momentum)
        self.mu_generator = mu_generator
        self._spectrum: SpectrumMomentum | None = None
        self.volume = volume
        self.device = volume.device
        self.size = float(volume.passive_size)
        lw = torch.as_tensor(volume.lw).detach().cpu().double()
        bottom, top = (float(torch.as_tensor(v).reshape(-1)[0]) for v in volume.get_passive_z_range())
        n_x, n_y = (int(v) for v in (lw / self.size).round().long().tolist())
        n_z = int(round((top - bottom) / self.size))
        self.z_bottom, self.z_top = bottom, top
        self.shp_xyz: tuple[int, int, int] = (n_x, n_y, n_z)
        self.shp_zxy: tuple[int, int, int] = (n_z, n_x, n_y)
        self.scatter_batches: list[ScatterBatch] = []
        self._reset_vars()

    @property
    def n_vox(self) -> int:
        """Number of passive voxels."""
        n_z, n_x, n_y = self.shp_zxy
        return n_z * n_x * n_y

    def momentum_spectrum(self) -> SpectrumMomentum:
        """The flux spectrum of ``mu_generator`` (default: ``MuonGenerator2016.from_volume(volume)``, the wrappers'
        default) used by the ``"unknown"`` momentum model (memoised)."""
        if self._spectrum is None:
            gen = self.mu_generator
            if gen is None:
                from ..muon.generation import MuonGenerator2016

                gen = MuonGenerator2016.from_volume(self.volume, device=self.device)
            self._spectrum = SpectrumMomentum(gen, device=self.device)
        return self._spectrum

    def add_scatters(self, scatters: ScatterBatch) -> None:
        """Append a ``ScatterBatch``; later predictions use every batch added so far (memoised values are reset)."""
        self.scatter_batches.append(scatters)
        self._reset_vars()

    def _reset_vars(self) -> None:  # noqa: B027 (optional hook: subclasses without memoised values keep the no-op)
        """Forget every memoised quantity (called on construction and by ``add_scatters``)."""

    @abstractmethod
    def compute_efficiency(self, scatters: ScatterBatch) -> Tensor:
        """(N,) per-muon efficiencies of ``scatters`` from its per-hit efficiencies."""

    @abstractmethod
    def get_prediction(self) -> Tensor | None:
        """Prediction from all added batches."""


class AbsX0Inferrer(AbsVolumeInferrer):
    """Base of voxelwise X0 inference: concatenated per-muon variables, memoised (z, x, y) X0 predictions.

    Subclasses implement ``_compute_x0()`` -> ``(pred, unc)``, both (n_z, n_x, n_y) [m]. ``_muon_vars`` lists the
    ``ScatterBatch`` variables collected (each with its ``<name>_unc``); a muon is dropped if any value is not finite
    or if ``_keep_muons`` rejects it. Compatible batches are merged first (``merge_batches``).

    Momentum (``momentum``, see :mod:`.momentum`): ``"true"`` (default), ``"smeared"`` or ``"unknown"`` (a name or a
    ``MomentumModel``); per muon the data hold ``mom`` (true momentum after the volume, TomOpt's ``reco_mom``),
    ``mom_in`` (before the volume), ``inv_p2`` = u = 1 / (beta p)^2 of the crossing under the model [GeV^-2] and
    ``mom_var`` = E[u^2] / E[u]^2. ``mu_generator``: the generator whose spectrum the ``"unknown"`` model uses.
    """

    _muon_vars: tuple[str, ...] = ("poca_xyz", "total_scatter", "theta_in", "theta_out")
    merge_batches: bool = True
    """Compute the per-muon data of compatible batches once on their concatenation (:mod:`.merged_batch`; same
    values, one autograd graph instead of one per muon batch); False: batch by batch."""

    def _reset_vars(self) -> None:
        self._muon_data: dict[str, Tensor] | None = None
        self._vox_zxy_x0_preds: Tensor | None = None
        self._vox_zxy_x0_pred_uncs: Tensor | None = None

    def compute_efficiency(self, scatters: ScatterBatch) -> Tensor:
        """(N,) probability that the muon leaves >= 2 hits above and >= 2 hits below (:func:`panel_muon_efficiency`)."""
        return panel_muon_efficiency(scatters)

    # ------------------------------------------------------------------ per-muon data
    def _batch_data(self, sb: ScatterBatch) -> dict[str, Tensor]:
        d: dict[str, Tensor] = {}
        for name in self._muon_vars:
            d[name] = getattr(sb, name).to(self.device)
            d[f"{name}_unc"] = getattr(sb, f"{name}_unc").to(self.device)
        mom = sb.mom.to(self.device).reshape(-1, 1)
        d["mom"], d["mom_unc"] = mom, torch.zeros_like(mom)
        d["mom_in"] = getattr(sb, "mom_in", sb.mom).to(self.device).reshape(-1, 1)
        d["efficiency"] = self.compute_efficiency(sb).to(self.device).reshape(-1, 1)
        return d

    def _get_muon_data(self) -> dict[str, Tensor]:
        if self._muon_data is None:
            batches = [sb for sb in self.scatter_batches if sb.n_mu > 0]
            merged = merge_scatter_batches(batches) if self.merge_batches and len(batches) > 1 else None
            parts = [self._batch_data(sb) for sb in ([merged] if merged is not None else batches)]
            if not parts:
                raise NoMuonsError(
                    f"{type(self).__name__}: no muons to infer from; add_scatters() with a non-empty ScatterBatch first"
                )
            data = {k: torch.cat([p[k] for p in parts], dim=0) for k in parts[0]}
            spec = self.momentum_spectrum() if self.momentum.kind == "unknown" else None
            u, var, p_in, p_out = muon_momentum_factor(
                self.momentum,
                mom_in=data["mom_in"][:, 0].detach(),
                mom_out=data["mom"][:, 0].detach(),
                theta_in=data["theta_in"][:, 0].detach(),
                spectrum=spec,
            )
            if spec is not None:  # the prior of u per muon, as nodes for the inferrers' posterior (E-) steps
                theta_in = data["theta_in"][:, 0].detach()
                delta_e = self._unknown_energy_loss(data, u) if self._volume_has_energy_loss() else None
                mean, var_loss, data["u_nodes"], data["u_prob"] = spec.prior(theta_in, delta_e)
                if delta_e is not None:
                    u, var = mean, var_loss
                    data["delta_e"] = delta_e[:, None]  # the shape of the fall of p along the path (path_model)
            data["inv_p2"], data["mom_var"] = u[:, None], var[:, None]
            data["p_in_known"], data["p_out_known"] = p_in[:, None], p_out[:, None]
            ok = self._keep_muons(data)
            for k, v in data.items():
                if not k.endswith("_known"):  # NaN = unknown momentum, by design
                    ok &= torch.isfinite(v.detach()).all(1)
            ok &= (data["mom"][:, 0].detach() > 0) & (data["inv_p2"][:, 0] > 0)
            if not bool(ok.any()):
                raise NoMuonsError(f"{type(self).__name__}: all {len(ok)} muons have non-finite scatter variables")
            self._muon_data = data if bool(ok.all()) else {k: v[ok] for k, v in data.items()}
        return self._muon_data

    def _volume_has_energy_loss(self) -> bool:
        get = getattr(self.volume, "get_passives", None)
        return bool(callable(get) and any(getattr(layer, "energy_loss", False) for layer in get()))

    def _block_path_length(self, data: dict[str, Tensor]) -> Tensor:
        """(N,) straight-line path length [m] of each muon inside the passive block: from the in-track's point at the
        top to the out-track's point at the bottom (``xyz_in`` / ``xyz_out`` when collected; else straight down the
        in-track), counting only the part above the footprint (muons that leave through a side cross less)."""
        theta_in = data["theta_in"][:, 0].detach()
        height = self.z_top - self.z_bottom
        if "xyz_in" not in data or "xyz_out" not in data:
            return height / torch.cos(theta_in).clamp_min(0.2)
        xy_in, xy_out = data["xyz_in"][:, :2].detach(), data["xyz_out"][:, :2].detach()
        frac = (torch.arange(_PATH_SAMPLES, device=xy_in.device, dtype=xy_in.dtype) + 0.5) / _PATH_SAMPLES
        xy = xy_in[:, None, :] + frac[None, :, None] * (xy_out - xy_in)[:, None, :]  # (N, S, 2) along the line
        extent = xy.new_tensor([self.shp_zxy[1] * self.size, self.shp_zxy[2] * self.size])
        inside = ((xy >= 0) & (xy <= extent)).all(-1).to(xy.dtype).mean(1)
        length = torch.sqrt(height**2 + (xy_out - xy_in).square().sum(1))
        return torch.nan_to_num(inside * length, nan=0.0)

    def _unknown_energy_loss(self, data: dict[str, Tensor], u: Tensor) -> Tensor:
        """(N,) energy loss [GeV] of each muon for the ``"unknown"`` momentum model with energy loss: a first
        homogeneous X0 of the block names the material (:class:`~..volume.energy_loss.EnergyLossTable`), whose
        stopping power at 1 GeV times each muon's path L_i in the block (:meth:`_block_path_length`) gives its loss;
        the spectrum's averages then run over crossings of a column worth that much at 1 GeV that survive, slowing
        down along the stopping power's shape (``SpectrumMomentum.lookup_after_loss`` / ``nodes``). The homogeneous
        X0: inverse-variance weighted least squares of y_i = theta_i^2 / 2 ~ n_i + a_i rho (a_i = A^2 u_i L_i (1 + B ln(L_i rho))^2,
        Highland with its log term; n_i the measurement noise; Var y_i ~ (n_i + a_i rho)^2), so that badly measured
        muons (tracks that miss panels: efficiency ~0, large noise) do not set it."""
        from ..volume.energy_loss_table import EnergyLossTable

        path = self._block_path_length(data)
        y = data["total_scatter"][:, 0].detach().square() / 2  # squared projected scatter [rad^2]
        noise = data["total_scatter_unc"][:, 0].detach().square() / 2  # its measurement-noise part
        ok = torch.isfinite(y) & torch.isfinite(noise) & torch.isfinite(u) & (path > 0) & self._keep_muons(data)
        eff = data["efficiency"][:, 0].detach()[ok]  # ~0 for tracks that miss panels
        y, noise, a0, len_ok = y[ok], noise[ok], (SCATTER_COEF_A**2 * u * path)[ok], path[ok]
        x0 = 1.0
        if len(y) > 0:
            w = eff / (noise + y.median()).clamp_min(1e-30).square()
            a = a0
            for _ in range(4):
                rho = ((w * (y - noise)).sum() / (w * a).sum().clamp_min(1e-30)).clamp(1e-3, 1e3)
                a = a0 * (1 + SCATTER_COEF_B * torch.log(len_ok * rho).clamp_min(-10.0)).clamp_min(0.05).square()
                w = eff * a / (noise + a * rho).square().clamp_min(1e-30)
            x0 = float(1.0 / rho)
        table = EnergyLossTable.from_x0([x0], device=self.device)
        dedx = float(table.dedx(torch.tensor([1.0], dtype=torch.float64, device=self.device), table.rows_for(torch.tensor([x0]))))
        return dedx * path

    def _keep_muons(self, data: dict[str, Tensor]) -> Tensor:
        """(N,) bool: muons used by this inferrer before the finiteness test (all, unless a subclass cuts)."""
        return torch.ones(len(data["mom"]), dtype=torch.bool, device=self.device)

    @property
    def n_mu(self) -> int:
        """Number of muons used in the inference (0 if none)."""
        try:
            return len(self._get_muon_data()["mom"])
        except NoMuonsError:
            return 0

    muon_poca_xyz = property(lambda self: self._get_muon_data()["poca_xyz"], doc="(N, 3) PoCA positions [m].")
    muon_poca_xyz_unc = property(lambda self: self._get_muon_data()["poca_xyz_unc"], doc="(N, 3) PoCA uncertainties [m].")
    muon_total_scatter = property(lambda self: self._get_muon_data()["total_scatter"], doc="(N, 1) total scatter [rad].")
    muon_total_scatter_unc = property(lambda self: self._get_muon_data()["total_scatter_unc"], doc="(N, 1) its unc. [rad].")
    muon_theta_in = property(lambda self: self._get_muon_data()["theta_in"], doc="(N, 1) incoming theta [rad].")
    muon_theta_in_unc = property(lambda self: self._get_muon_data()["theta_in_unc"], doc="(N, 1) its uncertainty [rad].")
    muon_theta_out = property(lambda self: self._get_muon_data()["theta_out"], doc="(N, 1) outgoing theta [rad].")
    muon_theta_out_unc = property(lambda self: self._get_muon_data()["theta_out_unc"], doc="(N, 1) its uncertainty [rad].")
    muon_mom = property(lambda self: self._get_muon_data()["mom"], doc="(N, 1) momenta [GeV].")
    muon_mom_unc = property(lambda self: self._get_muon_data()["mom_unc"], doc="(N, 1) momentum uncertainties (0) [GeV].")
    muon_efficiency = property(lambda self: self._get_muon_data()["efficiency"], doc="(N, 1) muon efficiencies.")
    muon_inv_p2 = property(
        lambda self: self._get_muon_data()["inv_p2"],
        doc="(N, 1) 1 / (beta p)^2 of each crossing under the momentum model [GeV^-2].",
    )

    # ------------------------------------------------------------------ predictions
    @abstractmethod
    def _compute_x0(self) -> tuple[Tensor, Tensor]:
        """``(pred, unc)``: (n_z, n_x, n_y) X0 predictions and uncertainties [m]."""

    def _ensure_x0(self) -> None:
        if self._vox_zxy_x0_preds is None:
            self._vox_zxy_x0_preds, self._vox_zxy_x0_pred_uncs = self._compute_x0()

    @property
    def vox_zxy_x0_preds(self) -> Tensor:
        """(n_z, n_x, n_y) X0 predictions [m], z index 0 = bottom layer (memoised)."""
        self._ensure_x0()
        return self._vox_zxy_x0_preds  # type: ignore[return-value]

    @property
    def vox_zxy_x0_pred_uncs(self) -> Tensor:
        """(n_z, n_x, n_y) uncertainties of the X0 predictions [m] (memoised; see the subclass for the method)."""
        self._ensure_x0()
        return self._vox_zxy_x0_pred_uncs  # type: ignore[return-value]

    def get_prediction(self) -> Tensor:
        """(n_z, n_x, n_y) X0 predictions [m]; :class:`NoMuonsError` if there are no muons."""
        return self.vox_zxy_x0_preds

    def get_prediction_and_unc(self) -> tuple[Tensor, Tensor]:
        """``(pred, unc)``, both (n_z, n_x, n_y) [m]."""
        return self.vox_zxy_x0_preds, self.vox_zxy_x0_pred_uncs

    @staticmethod
    def x0_from_scatters(delta_z: float, total_scatter: Tensor, theta_in: Tensor, theta_out: Tensor, mom: Tensor) -> Tensor:
        """TomOpt's PDG inversion without the log term (see :func:`x0_from_scatters`)."""
        return x0_from_scatters(delta_z, total_scatter, theta_in, theta_out, mom)
