"""``PathX0Inferrer``: path-based maximum-likelihood X0 inference (scattering density along each muon's track).

Model. Muon i crosses voxel j over a path length L_ij [m]; with the scattering density rho_j = 1 / X0_j [1/m] it
crosses X_i = sum_j L_ij rho_j radiation lengths, and Highland (log term applied to the whole crossing, as in
``PassiveLayer``) gives theta0^2 = (A / p_i)^2 F(X_i), F(X) = X (1 + B ln X)^2, linearised per update as
k_i X_i with k_i = (A / p_i)^2 (1 + B ln X^_i)^2 at the current estimate. Per projection (x, y) the observation is
d = (da, dx): the slope change a_out - a_in (slopes a = dx/dz) and the displacement at the exit plane z_b (out-track
minus the in-track extrapolated to z_b). A path element of length l at height z with lever arm T = z_b - z [m]
adds slope kicks of variance k l rho f (f = (1 + |a|^2)(1 + a_x^2) converts angle to slope variance, a = mean of
the in/out slopes), so

    Cov_i = N_i + k_i f_i sum_j rho_j W_ij,   W_ij = sum over the path in voxel j of l [[1, T], [T, T^2]],

N_i the measurement covariance of (da, dx) (exact from the track-fit covariances of ``ScatterBatch``, else a
diagonal approximation from the public uncertainties); the displacement is what localises the scattering in depth.
The negative log-likelihood is sum_i e_i sum_proj 1/2 (ln det Cov + d^T Cov^-1 d), e_i the muon efficiency; its
stationarity condition is solved by ``n_iter`` multiplicative (EM / Richardson-Lucy type) updates, which keep rho > 0:

    rho_j <- rho_j * [sum_i e_i d^T S W_ij S d / sum_i e_i tr(S W_ij)] ** relax,   S = Cov_i^-1 (k f folded in),

plus a weak smoothness prior (``prior_strength``; 0 disables it): a log-normal penalty
beta/2 sum_j (ln rho_j - m_j)^2, m_j the mean of ln rho over the voxel's 3x3x3 neighbourhood (itself included),
beta = prior_strength * median_j(rho_j D_j) (D_j the update's denominator, i.e. ~ the voxel's effective number of
muons), added one-step-late: its positive part to the denominator, its negative part to the numerator. It stops
poorly measured voxels from running off to X0 -> inf without pulling well-measured ones (e.g. lead among beryllium);
starting from the homogeneous estimate rho_0 = sum_i e_i (y_i - n_i) / sum_i e_i k_i^0 f_i L_i (y: mean squared slope
change per projection, n: its noise variance, L: path length in the block). The number of updates is
fixed (no data-dependent control flow) and every update is differentiable.

Paths (``path``): ``"poca"`` (default) follows the in-track from the passive top down to the PoCA height (clamped to
the block) and the out-track below it; ``"straight"`` is the straight line from ``xyz_in`` (in-track at the top) to
``xyz_out`` (out-track at the bottom). Each passive layer is sampled at ``n_samples`` equally spaced heights
(midpoint rule, vertical step size / n_samples; path step = that times sqrt(1 + |slope|^2)); samples outside the
footprint are dropped. The voxel assignment of the samples is detached; the path lengths, angles, noise and
efficiencies carry gradients. Memory held per update is O(N) (the (N, S) sample tensors are shared by all updates).

Uncertainty: diagonal Fisher information I_j = 1/2 sum_i e_i sum_proj tr(S K_ij S K_ij), K_ij = k f W_ij, with the
muon's path through voxel j approximated by its path through the voxel's layer (exact when the layer crossing stays in one voxel, otherwise an overestimate of the
information); sigma_X0_j = sigma_rho_j / rho_j^2 with sigma_rho_j = I_j^-1/2 (voxel correlations ignored).
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from ..core import SCATTER_COEF_A, SCATTER_COEF_B
from .x0_base import AbsX0Inferrer

__all__ = ["PathX0Inferrer", "PATH_MODES"]

PATH_MODES = ("poca", "straight")
_TINY = 1e-30


class PathX0Inferrer(AbsX0Inferrer):
    """Voxelwise X0 by maximum likelihood of the muon scattering angles along their paths (see module docstring).

    Args:
        volume: the ``Volume`` the muons went through.
        n_iter: number of multiplicative updates (all differentiable).
        n_samples: path samples per passive layer.
        path: ``"poca"`` or ``"straight"`` (see module docstring).
        log_term: include Highland's log term (linearised per update).
        relax: exponent of the update ratio (> 1 over-relaxes and converges faster; 1 = plain EM-type update).
        prior_strength: weight of the smoothness prior relative to a typical voxel's data (0 = pure ML).
        x0_range: (min, max) X0 [m] the estimate is clamped to.
    """

    _muon_vars = ("poca_xyz", "total_scatter", "theta_in", "theta_out", "dtheta_xy", "theta_xy_in", "theta_xy_out",
                  "xyz_in", "xyz_out")

    def __init__(
        self,
        volume: Any,
        *,
        n_iter: int = 20,
        n_samples: int = 8,
        path: str = "poca",
        log_term: bool = True,
        relax: float = 1.5,
        prior_strength: float = 0.1,
        x0_range: Tuple[float, float] = (1e-4, 1e4),
    ) -> None:
        for name, v in (("n_iter", n_iter), ("n_samples", n_samples)):
            if isinstance(v, bool) or int(v) != v or v < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {v!r}")
        if path not in PATH_MODES:
            raise ValueError(f"path must be one of {PATH_MODES}, got {path!r}")
        if not (0 < float(relax) <= 3):
            raise ValueError(f"relax must be in (0, 3], got {relax!r}")
        if not (0 < x0_range[0] < x0_range[1]):
            raise ValueError(f"x0_range must be (min, max) with 0 < min < max [m], got {x0_range!r}")
        self.n_iter, self.n_samples, self.path = int(n_iter), int(n_samples), path
        if not (float(prior_strength) >= 0):
            raise ValueError(f"prior_strength must be >= 0, got {prior_strength!r}")
        self.log_term, self.relax, self.prior_strength = bool(log_term), float(relax), float(prior_strength)
        self.x0_range = (float(x0_range[0]), float(x0_range[1]))
        super().__init__(volume)

    # ------------------------------------------------------------------ geometry
    def _slopes(self) -> Tuple[Tensor, Tensor]:
        """(N, 2) slopes (dx/dz, dy/dz) of the in- and out-tracks."""
        return -torch.tan(self._get_muon_data()["theta_xy_in"]), -torch.tan(self._get_muon_data()["theta_xy_out"])

    def path_samples(self) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """``(idx, m_in, m_out, l_in, l_out)``: (N, S) flat zxy voxel index of each sample (``n_vox`` = outside),
        (N, S) float masks of samples on the in-/out-branch inside the block, (N,) path length per sample [m] on each
        branch. S = n_layers * n_samples; samples ordered bottom layer first."""
        d = self._get_muon_data()
        n_z, n_x, n_y = self.shp_zxy
        k = self.n_samples
        dev, dt = d["mom"].device, d["mom"].dtype
        frac = (torch.arange(k, device=dev, dtype=dt) + 0.5) / k
        layer = torch.arange(n_z, device=dev).repeat_interleave(k)
        z_s = self.z_bottom + self.size * (layer.to(dt) + frac.repeat(n_z))  # (S,)
        top, bottom = self.z_top, self.z_bottom
        xy_in, xy_out = d["xyz_in"][:, :2].detach(), d["xyz_out"][:, :2].detach()
        a_in, a_out = self._slopes()
        step = self.size / k
        if self.path == "poca":
            z_b = d["poca_xyz"][:, 2].detach().clamp(bottom, top)
            use_in = z_s[None, :] > z_b[:, None]
            pos_in = xy_in[:, None, :] + a_in.detach()[:, None, :] * (z_s - top)[None, :, None]
            pos_out = xy_out[:, None, :] + a_out.detach()[:, None, :] * (z_s - bottom)[None, :, None]
            xy = torch.where(use_in[..., None], pos_in, pos_out)
            l_in = step * torch.sqrt(1 + a_in.square().sum(1))
            l_out = step * torch.sqrt(1 + a_out.square().sum(1))
        else:
            f = ((top - z_s) / (top - bottom))[None, :, None]
            xy = xy_in[:, None, :] + f * (xy_out - xy_in)[:, None, :]
            use_in = torch.ones(xy.shape[:2], dtype=torch.bool, device=dev)
            slope = (d["xyz_out"][:, :2] - d["xyz_in"][:, :2]) / (bottom - top)
            l_in = step * torch.sqrt(1 + slope.square().sum(1))
            l_out = torch.zeros_like(l_in)
        ij = torch.floor(xy / self.size).long()
        valid = (ij[..., 0] >= 0) & (ij[..., 0] < n_x) & (ij[..., 1] >= 0) & (ij[..., 1] < n_y)
        idx = (layer[None, :] * n_x + ij[..., 0].clamp(0, n_x - 1)) * n_y + ij[..., 1].clamp(0, n_y - 1)
        idx = torch.where(valid, idx, torch.full_like(idx, self.n_vox))
        m_in = (use_in & valid).to(dt)
        m_out = (~use_in & valid).to(dt)
        t = (self.z_bottom - z_s).expand(len(idx), -1)  # (N, S) signed lever arm to the exit plane [m]
        return idx, m_in, m_out, l_in, l_out, t

    # ------------------------------------------------------------------ data
    def _batch_data(self, sb: Any) -> Dict[str, Tensor]:
        d = super()._batch_data(sb)
        d["noise_cov"] = self._noise_cov(sb, d).reshape(len(d["mom"]), 6)
        return d

    def _noise_cov(self, sb: Any, d: Dict[str, Tensor]) -> Tensor:
        """(N, 2, 3) per projection (x, y) the measurement covariance (var da, cov, var dx) of (da, dx) [-, m]."""
        lines = getattr(sb, "_get_lines", None)
        if callable(lines):  # exact: propagate the (position at z_ref, slope) fit covariances of both tracks
            covs = [l.cov.to(self.device) for l in lines()]  # (N, axis, 2, 2)
            h = self.z_bottom - sb.z_ref
            jac = covs[0].new_tensor([[0.0, 1.0], [1.0, h]])
            tot = sum(jac @ c @ jac.T for c in covs)
            return torch.stack([tot[..., 0, 0], tot[..., 0, 1], tot[..., 1, 1]], dim=-1)
        a_in, a_out = -torch.tan(d["theta_xy_in"]), -torch.tan(d["theta_xy_out"])  # diagonal fallback
        s_in = d["theta_xy_in_unc"] * (1 + a_in.square())
        s_out = d["theta_xy_out_unc"] * (1 + a_out.square())
        h = self.z_bottom - self.z_top
        var_dx = d["xyz_out_unc"][:, :2].square() + d["xyz_in_unc"][:, :2].square() + (h * s_in).square()
        return torch.stack([s_in.square() + s_out.square(), torch.zeros_like(var_dx), var_dx], dim=-1)

    def _observables(self) -> Tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Per muon: d (N, 2, 2) = (da, dx) per projection, noise (N, 2, 3), f (N, 2) slope-kick factors,
        k0 = (A / p)^2 (N,), efficiency (N,)."""
        d = self._get_muon_data()
        a_in, a_out = self._slopes()
        da = a_out - a_in
        dx = d["xyz_out"][:, :2] - (d["xyz_in"][:, :2] + a_in * (self.z_bottom - self.z_top))
        a = (a_in + a_out) / 2
        f = (1 + a.square().sum(1, keepdim=True)) * (1 + a.square())
        k0 = (SCATTER_COEF_A / d["mom"][:, 0]) ** 2
        return torch.stack([da, dx], dim=-1), d["noise_cov"].reshape(-1, 2, 3), f, k0, d["efficiency"][:, 0]

    def _log_factor(self, x: Tensor) -> Tensor:
        if not self.log_term:
            return torch.ones_like(x)
        return (1.0 + SCATTER_COEF_B * torch.log(x.clamp_min(1e-6))).clamp_min(0.05).square()

    # ------------------------------------------------------------------ solve
    def _add_prior(self, rho: Tensor, num: Tensor, den: Tensor) -> Tuple[Tensor, Tensor]:
        """Add the log-normal smoothness prior's gradient to the update's numerator / denominator."""
        rho_v, den_v = rho[: self.n_vox], den[: self.n_vox]
        beta = self.prior_strength * (rho_v * den_v).median().clamp_min(_TINY)
        log_v = torch.log(rho_v).reshape(1, *self.shp_zxy)
        log_bar = F.avg_pool3d(log_v, 3, stride=1, padding=1, count_include_pad=False).reshape(-1)
        pen = beta * (log_v.reshape(-1) - log_bar) / rho_v
        pen = torch.cat([pen, pen.new_zeros(1)])
        return num + torch.relu(-pen), den + torch.relu(pen)

    def _compute_x0(self) -> Tuple[Tensor, Tensor]:
        idx, m_in, m_out, l_in, l_out, t = self.path_samples()
        obs, noise, f, k0, eff = self._observables()
        lw = m_in * l_in[:, None] + m_out * l_out[:, None]  # (N, S) path length per sample [m]
        lw_t = [lw, lw * t, lw * t.square()]
        p_in = [m_in, m_in * t, m_in * t.square()]
        p_out = [m_out, m_out * t, m_out * t.square()]
        flat = idx.reshape(-1)
        n_tot = self.n_vox + 1  # last slot collects samples outside the block (zero length)
        rho_lo, rho_hi = 1.0 / self.x0_range[1], 1.0 / self.x0_range[0]
        y = obs[..., 0].square().sum(1) / 2  # mean squared slope kick per projection
        n0 = (noise[..., 0]).sum(1) / 2
        fm = f.mean(1)
        rho0 = (eff * (y - n0)).sum() / (eff * k0 * fm * lw.sum(1)).sum().clamp_min(_TINY)
        rho = rho0.clamp(rho_lo, rho_hi).expand(n_tot)

        def moments(r: Tensor) -> List[Tensor]:
            g = r[idx]
            return [l_in * (g * pi).sum(1) + l_out * (g * po).sum(1) for pi, po in zip(p_in, p_out)]

        def back(coefs: List[Tensor]) -> Tensor:
            src = sum(c[:, None] * l for c, l in zip(coefs, lw_t))
            return lw.new_zeros(n_tot).index_add(0, flat, src.reshape(-1))

        def inv_cov(r: Tensor) -> Tuple[Tensor, Tensor]:
            m0, m1, m2 = moments(r)
            k = k0 * self._log_factor(m0)
            kf = (k[:, None] * f)  # (N, 2)
            s11 = noise[..., 0] + kf * m0[:, None]
            s12 = noise[..., 1] + kf * m1[:, None]
            s22 = noise[..., 2] + kf * m2[:, None]
            det = (s11 * s22 - s12.square()).clamp_min(_TINY)
            return torch.stack([s22, -s12, s11], dim=-1) / det[..., None], kf  # (N, 2, 3) inverse, (N, 2)

        for _ in range(self.n_iter):
            inv, kf = inv_cov(rho)
            w = eff[:, None] * kf
            u1 = inv[..., 0] * obs[..., 0] + inv[..., 1] * obs[..., 1]
            u2 = inv[..., 1] * obs[..., 0] + inv[..., 2] * obs[..., 1]
            num = back([(w * u1.square()).sum(1), 2 * (w * u1 * u2).sum(1), (w * u2.square()).sum(1)])
            den = back([(w * inv[..., 0]).sum(1), 2 * (w * inv[..., 1]).sum(1), (w * inv[..., 2]).sum(1)])
            if self.prior_strength > 0:  # smoothness prior, one-step-late MAP (see module docstring)
                num, den = self._add_prior(rho, num, den)
            ratio = torch.where(den > _TINY, num / den.clamp_min(_TINY), torch.ones_like(den))
            rho = (rho * ratio.clamp_min(1e-6) ** self.relax).clamp(rho_lo, rho_hi)
        inv, kf = inv_cov(rho)
        q = inv[..., None, 0] + 2 * t[:, None] * inv[..., None, 1] + t[:, None].square() * inv[..., None, 2]  # (N, 2, S)
        per_s = 0.5 * (eff[:, None, None] * (kf[..., None] * q).square()).sum(1)  # (N, S)
        seg = lw * self.n_samples  # path through the sample's layer (one-voxel approximation)
        info = lw.new_zeros(n_tot).index_add(0, flat, (lw * seg * per_s).reshape(-1))
        rho_v = rho[: self.n_vox]
        x0 = 1.0 / rho_v
        unc = torch.where(info[: self.n_vox] > 0, info[: self.n_vox].clamp_min(_TINY).rsqrt() / rho_v.square(), x0)
        return x0.reshape(self.shp_zxy), unc.reshape(self.shp_zxy)

    @property
    def muon_path_x0(self) -> Tensor:
        """(N,) radiation lengths crossed by each muon under the current prediction."""
        idx, m_in, m_out, l_in, l_out, _ = self.path_samples()
        rho = torch.cat([1.0 / self.vox_zxy_x0_preds.reshape(-1), self.vox_zxy_x0_preds.new_zeros(1)])
        g = rho[idx]
        return l_in * (g * m_in).sum(1) + l_out * (g * m_out).sum(1)
