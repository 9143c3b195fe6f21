"""Fill height of the ladle furnace by the likelihood of each muon's scatter under every possible layout.

The layouts of :class:`~.data.LadleFurnacePassiveGenerator` are few (fill layers k = 1 ... n_z - 2, slag layers
1 ... min(k_slag_max, n_z - 1 - k)), so instead of inferring a voxel map and reducing it, every layout j is a hypothesis
and each muon's measured tracks are scored under it. Along the muon's straight path (the mean of its in- and
out-track) the passive block is cut into the simulator's vertical steps of ``step`` [m] (path length
l = step sqrt(1 + a_x^2 + a_y^2), a the slopes); step k lies in the ladle's floor or walls (steel), in the inside
(fill, slag or air by its layer under layout j) or outside the footprint (air). Per step and projected plane the
slope kick has the variance that makes the steps add up to Highland for the whole crossing (as the simulator does),

    v_kj = A^2 u_kj [F(X_kj + x_kj) - F(X_kj)] g,   F(x) = x (1 + B ln x)^2,   x_kj = l / X0_kj,   u = 1 / (beta p)^2,

(A = 13.6 MeV, B = 0.038, X_kj the radiation lengths crossed above step k, g = (1 + a_c^2)(1 + a_x^2 + a_y^2) the
slope-space factor of axis c), where the momentum p
falls from the measured p_in to p_out along the crossing in proportion to the radiation lengths crossed
(:meth:`~tomopt_lib.inference.momentum.CrossingMomentum.momentum_at`). Kicks at heights h_k above the bottom of the
passive block change the slope by da = sum_k d_k and move the out-track at the bottom by D = -sum_k d_k h_k, so per
axis (D, da) is Gaussian with covariance

    C_j = [[S2, -S1], [-S1, S0]] + C_meas,   S_n = sum_k v_kj h_k^n,

C_meas the track fits' covariance propagated to (D, da). The layout posterior is
P(j | muons) ~ prior_j exp(sum_i e_i ln N((D_i, da_i); 0, C_ij) / T) (e_i the muon efficiency: >= 2 hits above and
below; T a temperature, 1 = the exact posterior); the prediction is the posterior mean fill height, which minimises
the expected squared error, and is differentiable w.r.t. the detector through the tracks, their covariances and e_i.
The prior is the generator's: fill layers uniform, slag layers uniform given the fill.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ...core import SCATTER_COEF_A, SCATTER_COEF_B, X0, material_x0
from ...inference.momentum import MomentumModel, crossing_momentum, inv_beta_p2
from ...inference.x0_base import AbsVolumeInferrer, NoMuonsError, panel_muon_efficiency

if TYPE_CHECKING:
    from ...inference.scattering import ScatterBatch
    from ...volume.volume import Volume

__all__ = ["LikelihoodLadleFurnaceFillLevelInferrer", "ladle_layouts"]


def _highland_f(x: Tensor) -> Tensor:
    """F(x) = x (1 + B ln x)^2 (log factor clamped at 0): Highland's theta0^2 (p / A)^2 after x radiation lengths."""
    return x * (1.0 + SCATTER_COEF_B * torch.log(x.clamp_min(1e-30))).clamp_min(0.0).square()


def ladle_layouts(n_z: int, max_slag_layers: int) -> tuple[Tensor, Tensor, Tensor]:
    """Every layout of the generator in an ``n_z``-layer ladle: ``(n_fill, n_slag, log_prior)``, each (J,)."""
    fills, slags, priors = [], [], []
    n_fill_options = n_z - 2
    for k in range(1, n_z - 1):
        room = min(n_z - 1 - k, max_slag_layers)
        for s in range(1, room + 1) if room > 0 else [0]:
            fills.append(k)
            slags.append(s)
            priors.append(-math.log(n_fill_options) - math.log(max(room, 1)))
    return torch.tensor(fills), torch.tensor(slags), torch.tensor(priors, dtype=torch.float64)


class LikelihoodLadleFurnaceFillLevelInferrer(AbsVolumeInferrer):
    """Posterior-mean fill height [m] from the per-muon likelihood of every ladle layout (module docstring).

    Args:
        volume: the ladle-furnace volume (passive block >= 3 voxels along every axis).
        momentum: momentum model; only ``"true"`` (p_in and p_out measured) is supported.
        x0_furnace, fill_material, slag_material, max_slag_thickness: the generator's ladle (same defaults).
        step: vertical step of the path integral [m] (the simulator's ``step_sz``).
        temperature: T of the posterior (> 0); T > 1 softens it (smoother gradients in training).
        output_probs: predict the (1, n_z - 2) posterior probabilities of the fill layers k = 1 ... n_z - 2 (for
            :class:`~.loss.LadleFurnaceIntClassLoss` with ``pred_int_start=1``: the expected squared layer error)
            instead of the posterior-mean height.
    """

    def __init__(
        self,
        volume: Volume,
        *,
        momentum: MomentumModel | str | None = None,
        x0_furnace: float = X0["steel"],
        fill_material: str = "hot liquid steel",
        slag_material: str = "slag",
        max_slag_thickness: float = 0.2,
        step: float = 0.01,
        temperature: float = 1.0,
        output_probs: bool = False,
    ) -> None:
        super().__init__(volume, momentum=momentum)
        if self.momentum.kind != "true":
            raise ValueError(
                f"{type(self).__name__} needs the measured momenta before and after the ladle (momentum 'true'), "
                f"got {self.momentum.kind!r}"
            )
        if not (float(step) > 0 and float(temperature) > 0):
            raise ValueError(f"step and temperature must be > 0, got step={step!r}, temperature={temperature!r}")
        n_x, n_y, n_z = self.shp_xyz
        if min(n_x, n_y, n_z) < 3:
            raise ValueError(f"the ladle needs at least 3 voxels along every axis, got (x, y, z) = {self.shp_xyz}")
        self.x0_furnace = float(x0_furnace)
        self.x0_fill, self.x0_slag, self.x0_air = material_x0(fill_material), material_x0(slag_material), X0["air"]
        max_slag = max(1, int(round(float(max_slag_thickness) / self.size)))
        self.layout_fill, self.layout_slag, self.log_prior = ladle_layouts(n_z, max_slag)
        self.fill_heights = self.z_bottom + (self.layout_fill.double() + 1) * self.size  # (J,) [m]
        n_steps = max(1, int(math.ceil((self.z_top - self.z_bottom) / float(step) - 1e-9)))
        dz = (self.z_top - self.z_bottom) / n_steps
        self.step = dz
        self.step_heights = (torch.arange(n_steps, dtype=torch.float64) + 0.5) * dz  # above the bottom [m], (K,)
        self.temperature = float(temperature)
        self.output_probs = bool(output_probs)

    def _reset_vars(self) -> None:
        self._log_like: Tensor | None = None
        self._pred: Tensor | None = None
        self._n_mu = 0

    def compute_efficiency(self, scatters: ScatterBatch) -> Tensor:
        """(N,) probability of at least two hits above and two below the ladle."""
        return panel_muon_efficiency(scatters)

    # ------------------------------------------------------------------ per-batch likelihood
    def _inv_x0(self, x: Tensor, y: Tensor) -> Tensor:
        """(N, K, J) 1 / X0 [1/m] along the paths (x, y: (N, K) [m]) under every layout."""
        n_x, n_y, _ = self.shp_xyz
        ix, iy = torch.floor(x / self.size), torch.floor(y / self.size)
        inside_fp = (ix >= 0) & (ix < n_x) & (iy >= 0) & (iy < n_y)
        layer = torch.floor(self.step_heights.to(x.device) / self.size).to(x.dtype)[None, :].expand_as(x)
        wall = inside_fp & ((ix == 0) | (ix == n_x - 1) | (iy == 0) | (iy == n_y - 1) | (layer == 0))
        inner = inside_fp & ~wall
        k = self.layout_fill.to(x.device, x.dtype)[None, None, :]
        s = self.layout_slag.to(x.device, x.dtype)[None, None, :]
        lay = layer[..., None]
        rho = torch.where(lay <= k, 1.0 / self.x0_fill, torch.where(lay <= k + s, 1.0 / self.x0_slag, 1.0 / self.x0_air)).to(
            x.dtype
        )
        rho = torch.where(inner[..., None], rho, torch.tensor(1.0 / self.x0_air, dtype=x.dtype, device=x.device))
        return torch.where(wall[..., None], torch.tensor(1.0 / self.x0_furnace, dtype=x.dtype, device=x.device), rho)

    def _batch_log_like(self, sb: ScatterBatch) -> tuple[Tensor, int]:
        """(J,) efficiency-weighted sum over the batch's muons of ln N((D, da); 0, C_j), and the number of muons."""
        l_in, l_out = sb._get_lines()
        p_in, p_out = l_in.params.double(), l_out.params.double()  # (N, 4): x_r, y_r, a_x, a_y at z_ref
        eff = self.compute_efficiency(sb).double()
        mom_in, mom_out = sb.mom_in.double(), sb.mom.double()
        ok = torch.isfinite(p_in.detach()).all(1) & torch.isfinite(p_out.detach()).all(1) & torch.isfinite(eff.detach())
        ok &= torch.isfinite(mom_in) & torch.isfinite(mom_out) & (mom_out > 0)
        if not bool(ok.any()):
            return torch.zeros(len(self.log_prior), dtype=torch.float64, device=self.device), 0
        p_in, p_out, eff, mom_in, mom_out = p_in[ok], p_out[ok], eff[ok], mom_in[ok], mom_out[ok]
        cov_in, cov_out = l_in.cov[ok].double(), l_out.cov[ok].double()  # (N, 2 axes, 2, 2): (position at z_ref, slope)
        z_ref, dev = sb.z_ref, p_in.device
        h = self.step_heights.to(dev)  # (K,)
        z = self.z_bottom + h
        with torch.no_grad():  # the path only decides which material each step is in
            mid = 0.5 * (p_in + p_out).detach()
            x = mid[:, 0:1] + mid[:, 2:3] * (z[None] - z_ref)
            y = mid[:, 1:2] + mid[:, 3:4] * (z[None] - z_ref)
            rho = self._inv_x0(x, y)  # (N, K, J)
            slope2 = mid[:, 2].square() + mid[:, 3].square()
            path = self.step * torch.sqrt(1.0 + slope2)  # (N,)
            n_x0 = path[:, None, None] * rho  # radiation lengths per step
            total = n_x0.sum(1, keepdim=True)
            before = total - torch.cumsum(n_x0, 1)  # crossed above step k (the steps run bottom-up in h)
            frac = ((before + 0.5 * n_x0) / total.clamp_min(1e-12)).clamp(0, 1)
            n_j = rho.shape[2]
            p = crossing_momentum().momentum_at(mom_in, mom_out, frac)  # (N, K, J) [GeV]
            v = SCATTER_COEF_A**2 * inv_beta_p2(p) * (_highland_f(before + n_x0) - _highland_f(before))
            s0 = v.sum(1)
            s1 = (v * h[None, :, None]).sum(1)
            s2 = (v * h.square()[None, :, None]).sum(1)
        ll = torch.zeros(len(p_in), n_j, dtype=torch.float64, device=dev)
        lever = self.z_bottom - z_ref
        for c in range(2):  # axes x, y
            a_c = mid[:, 2 + c]
            g = ((1.0 + a_c.square()) * (1.0 + slope2))[:, None]
            da = p_out[:, 2 + c] - p_in[:, 2 + c]
            d = (p_out[:, c] - p_in[:, c]) + da * lever
            cm_sum = cov_in[:, c] + cov_out[:, c]  # (N, 2, 2) of (position at z_ref, slope)
            m_dd = cm_sum[:, 0, 0] + 2 * lever * cm_sum[:, 0, 1] + lever**2 * cm_sum[:, 1, 1]
            m_da = cm_sum[:, 0, 1] + lever * cm_sum[:, 1, 1]
            m_aa = cm_sum[:, 1, 1]
            c_dd = g * s2 + m_dd[:, None]
            c_da = -g * s1 + m_da[:, None]
            c_aa = g * s0 + m_aa[:, None]
            det = (c_dd * c_aa - c_da.square()).clamp_min(1e-300)
            quad = (c_aa * d[:, None].square() - 2 * c_da * d[:, None] * da[:, None] + c_dd * da[:, None].square()) / det
            ll = ll - 0.5 * (quad + torch.log(det)) - math.log(2 * math.pi)
        return (eff[:, None] * ll).sum(0), int(ok.sum())

    # ------------------------------------------------------------------ prediction
    def log_likelihood(self) -> Tensor:
        """(J,) summed, efficiency-weighted log-likelihood of every layout (memoised)."""
        if self._log_like is None:
            parts = [self._batch_log_like(sb) for sb in self.scatter_batches if sb.n_mu > 0]
            self._n_mu = sum(n for _, n in parts)
            if self._n_mu == 0:
                raise NoMuonsError(f"{type(self).__name__}: no muons to infer from; add_scatters() first")
            self._log_like = torch.stack([ll for ll, _ in parts]).sum(0)
        return self._log_like

    @property
    def n_mu(self) -> int:
        """Number of muons used (0 if none)."""
        try:
            self.log_likelihood()
        except NoMuonsError:
            return 0
        return self._n_mu

    def posterior(self) -> Tensor:
        """(J,) posterior probability of every layout (``layout_fill``, ``layout_slag``)."""
        ll = self.log_likelihood()
        return torch.softmax(ll / self.temperature + self.log_prior.to(ll.device), 0)

    def fill_posterior(self) -> Tensor:
        """(n_z - 2,) posterior probability of each fill height of ``fill_height_options``."""
        post = self.posterior()
        idx = (self.layout_fill - 1).to(post.device)
        return torch.zeros(int(self.layout_fill.max()), dtype=post.dtype, device=post.device).index_add(0, idx, post)

    @property
    def fill_height_options(self) -> Tensor:
        """(n_z - 2,) possible fill heights [m], increasing."""
        k = torch.arange(1, int(self.layout_fill.max()) + 1, dtype=torch.float64)
        return self.z_bottom + (k + 1) * self.size

    def get_prediction(self) -> Tensor:
        """(1,) posterior-mean fill height [m], or with ``output_probs`` the (1, n_z - 2) fill-layer probabilities
        (memoised)."""
        if self._pred is None:
            if self.output_probs:
                self._pred = self.fill_posterior().reshape(1, -1).float()
            else:
                post = self.posterior()
                self._pred = (post * self.fill_heights.to(post.device, post.dtype)).sum().reshape(1).float()
        return self._pred

    @property
    def pred_height(self) -> Tensor:
        """(1,) posterior-mean fill height [m]."""
        post = self.posterior()
        return (post * self.fill_heights.to(post.device, post.dtype)).sum().reshape(1).float()

    def get_uncertainty(self) -> Tensor:
        """(1,) posterior standard deviation of the fill height [m]."""
        post = self.posterior()
        hs = self.fill_heights.to(post.device, post.dtype)
        mean = (post * hs).sum()
        return (post * (hs - mean).square()).sum().clamp_min(0).sqrt().reshape(1).float()
