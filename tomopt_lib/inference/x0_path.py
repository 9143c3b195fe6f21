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
beta/2 sum_j (ln rho_j - m_j)^2, m_j the mean of ln rho over the voxel's neighbourhood (itself included): by default
(``prior_extent=(1, 5)``) the 5 x 5 voxels around it *within its own layer*. The prior does not couple layers: the
depth of the scattering is the weakly measured direction (only the displacement at the exit localises it), so a
prior across layers sets the depth profile instead of the data. With the 3 x 3 x 3 box, ``(3, 3)``, a thin dense
layer is smeared into the layers above and below (20 seeds at 10k muons: 5 x 5 x 2 lead in beryllium 1.34x its X0,
a full iron slab of two layers 1.36x; in-layer box: 1.13x and 1.08x; uniform blocks and a lead column unchanged
within 0.02; README calibration section). With ``edge_scale`` > 0 the prior is the edge-aware mean over the
3 x 3 x 3 box (neighbour u weighted by exp(-(ln rho_u - ln rho_j)^2 / (t_j^2 + t_u^2)), t_j = ``edge_scale`` /
sqrt(rho_j D_j) at the homogeneous start, i.e. ~ a fraction of the voxel's statistical spread in ln rho: a step much
larger than the noise, such as lead next to beryllium, is not smoothed across, while a data-poor voxel, whose t is
large, is still held by all its neighbours; ``edge_scale=0``, the default: the plain mean; README for 0.25),
beta = prior_strength * median_j(rho_j D_j) at the homogeneous start (D_j the update's denominator, i.e. ~ the
voxel's effective number of muons), added one-step-late: its positive part to the denominator, its negative part to
the numerator. It stops poorly measured voxels from running off to X0 -> inf without pulling well-measured ones (e.g.
lead among beryllium). The updates start from the homogeneous density rho_0 of the block, the weighted least-squares
solution of y_i = n_i + a_i rho_0 (y: mean squared slope change per projection, n: its noise variance, a_i =
k_i f_i L_i F'(L_i rho_0), L: path length in the block, F' = (1 + B ln X)^2 Highland's log factor), with weights
w_i = e_i a_i / (c_i (n_i + a_i rho_0)^2) (Var y_i ~ c_i (n_i + a_i rho_0)^2, c_i = E[u^2] / E[u]^2 of the momentum
model, 1 for a measured momentum), iterated a few times from equal-variance weights: neither a muon whose noise
dwarfs its scatter nor the few very-low-momentum muons set the level. With ``moment_anchor`` every update is
rescaled so that the same weighted sum of predicted scatter matches the observed one (the global method of moments).
The number of updates is fixed (no data-dependent control flow) and every update is differentiable.

Momentum known only through its prior (``"unknown"``): the likelihood of a muon is the mixture over the nodes u_k
(prior P_k) of the spectrum (:meth:`~.momentum.SpectrumMomentum.nodes`), and every update is the complete-data EM step:
each node's terms of the numerator and denominator, weighted by the muon's posterior r_k ~ P_k N(d; 0, Cov_i(u_k)) at
the current density (detached). A muon whose scatter is far above the typical one is read as a low-momentum muon
instead of as dense material (the mean u in one Gaussian gave long-tailed estimates). EM converges the more slowly
the more information the latent variable hides: the mixture gets ``_MIXTURE_UPDATE_FACTOR`` x ``n_iter`` updates
(README). The homogeneous start is refined by ``_MIXTURE_HOMOGENEOUS_ITERS`` EM steps of one density, the moment
anchor is off (its sum of squared scatters is dominated by the few lowest momenta) and c_i = 1.

Paths, observables, noise: :mod:`.path_model` (``path="poca"`` by default); the voxel assignment of the path samples
is detached, lengths, angles, noise and efficiencies carry gradients; O(N) memory per update. k_i = A^2 u_i, u_i the
momentum model's 1 / (beta p)^2 (:mod:`.momentum`).

Final shrinkage (:func:`.path_shrinkage.shrink_to_neighbourhood`): in ln rho, each voxel is pulled towards the
I'-weighted mean of its 3x3x3 neighbourhood (``shrink_extent``; blended with the median of ln rho over the measured
voxels, the fallback of a data-poor neighbourhood) with a weight P worth ``shrink_crossings`` crossings of the voxel,
I'_j = rho_j^2 I_j and I_j = sum_i e_i I_ij the angle-only Fisher information of the voxel (per projection 1/2 (k f l_ij
/ C_i)^2, C_i the variance of the slope change; the muon's path through voxel j approximated by its path through the
voxel's layer; divided by the momentum model's c_i = E[u^2] / E[u]^2). A voxel whose data carry less than
``min_data_fraction`` of P, or whose updates ran into a bound of ``x0_range``, is set by the prior: flagged in
``low_data``, with an uncertainty of at least its prediction (100 %).

Uncertainty: the linear response of the regularised estimator (a Laplace-type approximation), per voxel and in a
locally homogeneous approximation. In x = ln rho the prior's fixed point solves g(x) = b (1 - A) x (g the
log-likelihood gradient in x, A the prior's neighbourhood mean, b = beta / 2), so to first order
(h + b (1 - A)) x = h x_ML, and the final shrinkage maps x to (x + p (A' x + p g0) / (1 + p)) / (1 + p)
(p = P / I'_j, g0 constant, A' its 3x3x3 neighbourhood mean). With h, p and the score variance j constant around the
voxel, both maps are diagonal in the Fourier modes q of the lattice (A -> a(q), the product over the axes of the box
mean's (1 + 2 sum_m cos(m q_d)) / k_d, e.g. prod_d (1 + 2 cos q_d) / 3 for 3x3x3; A' -> a'(q)), and

    sigma_ln^2 = j_j / h_j^2 * mean_q [T(q) / (1 + r_j (1 - a(q)))]^2,   r_j = b / h_j,
    T(q) = (1 + p_j a'(q) / (1 + p_j)) / (1 + p_j),

the mean over 8^3 wave numbers in (0, pi)^3. h_j = rho_j^2 sum_i e_i I_i,jj is the diagonal of the likelihood's
Fisher information of ln rho_j from angle and displacement (per projection 1/2 k^2 f^2 tr(S W_ij S W_ij), S the
inverse of Cov_i, exact over the muon's run of samples in the voxel) and j_j the same sum with e_i^2 c_i (sandwich
for the efficiency weights and the momentum model's spread, which the likelihood does not carry). sigma_X0 =
X0 sigma_ln. The factor -> 1 where the data dominate the prior (r -> 0: e.g. lead among beryllium) and it is the
variance reduction of the neighbourhood averaging where the prior dominates (uniform material). Left out: voxel
correlations of the data beyond the diagonal, the early stopping of the ``n_iter`` updates and the moment anchor
(README calibration table for how well it describes the spread).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ..checks import check_number
from ..core import SCATTER_COEF_A, SCATTER_COEF_B
from .neighbourhood import bilateral_neighbourhood_mean, check_extent, neighbourhood_mean
from .path_model import PATH_MODES, PathModelMixin
from .path_shrinkage import shrink_to_neighbourhood
from .path_uncertainty import smoothing_factor, voxel_information
from .x0_base import AbsX0Inferrer

if TYPE_CHECKING:
    from ..muon.generation import AbsMuonGenerator
    from ..volume.volume import Volume
    from .momentum import MomentumModel
    from .scattering import ScatterBatch

__all__ = ["PathX0Inferrer", "PATH_MODES"]

_TINY = 1e-30
_HOMOGENEOUS_ITERS = 4  # reweighting steps of the homogeneous density (weights and Highland's log term at rho0)
_MIXTURE_HOMOGENEOUS_ITERS = 8  # EM steps of the homogeneous density when the momentum is known through its prior
_MIXTURE_UPDATE_FACTOR = 2  # the mixture likelihood's EM gets this many times n_iter updates (module docstring)


class PathX0Inferrer(PathModelMixin, AbsX0Inferrer):
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
        min_data_fraction: voxels with less data than this fraction of the shrinkage's weight are ``low_data``.
        moment_anchor: rescale every update to the global method of moments (module docstring).
        shrink_crossings: weight of the final shrinkage towards the neighbourhood, in crossings of the voxel.
        edge_scale: edge awareness of the smoothness prior (module docstring); 0 = plain neighbourhood mean.
        prior_extent, shrink_extent: (n_z, n_xy) odd voxel counts along z and x, y of the smoothness prior's box
            (default (1, 5): the voxel's own layer) and of the final shrinkage's (default (3, 3): 3 x 3 x 3).
        momentum, mu_generator: momentum model and the generator of the ``"unknown"`` model (``AbsX0Inferrer``).
    """

    _muon_vars = PathModelMixin.PATH_MUON_VARS
    unknown_momentum_profile = True  # the depth profile of the scattering matters to a depth-resolving fit

    def __init__(
        self,
        volume: Volume,
        *,
        n_iter: int = 20,
        n_samples: int = 8,
        path: str = "poca",
        log_term: bool = True,
        relax: float = 1.0,
        prior_strength: float = 0.08,
        x0_range: tuple[float, float] = (1e-4, 1e4),
        min_data_fraction: float = 1.0,
        moment_anchor: bool = True,
        shrink_crossings: float = 3.0,
        edge_scale: float = 0.0,
        prior_extent: tuple[int, int] = (1, 5),
        shrink_extent: tuple[int, int] = (3, 3),
        momentum: MomentumModel | str | None = None,
        mu_generator: AbsMuonGenerator | None = None,
    ) -> None:
        for name, v in (("n_iter", n_iter), ("n_samples", n_samples)):
            check_number(name, v, low=1, integer=True)
        if path not in PATH_MODES:
            raise ValueError(f"path must be one of {PATH_MODES}, got {path!r}")
        check_number("relax", relax, low=0, low_open=True, high=3)
        if not (0 < x0_range[0] < x0_range[1]):
            raise ValueError(f"x0_range must be (min, max) with 0 < min < max [m], got {x0_range!r}")
        self.n_iter, self.n_samples, self.path = int(n_iter), int(n_samples), path
        check_number("prior_strength", prior_strength, low=0)
        self.log_term, self.relax, self.prior_strength = bool(log_term), float(relax), float(prior_strength)
        self.x0_range = (float(x0_range[0]), float(x0_range[1]))
        self.min_data_fraction = check_number("min_data_fraction", min_data_fraction, low=0)
        self.moment_anchor = bool(moment_anchor)
        self.shrink_crossings = check_number("shrink_crossings", shrink_crossings, low=0)
        self.edge_scale = check_number("edge_scale", edge_scale, low=0)
        self.prior_extent = check_extent(prior_extent, "prior_extent")
        self.shrink_extent = check_extent(shrink_extent, "shrink_extent")
        super().__init__(volume, momentum=momentum, mu_generator=mu_generator)

    def _reset_vars(self) -> None:
        super()._reset_vars()
        self._low_data: Tensor | None = None
        self._homogeneous_x0: Tensor | None = None

    @property
    def homogeneous_x0(self) -> Tensor:
        """0-d X0 [m] of the homogeneous start, the block's weighted least-squares density (module docstring)."""
        self._ensure_x0()
        return self._homogeneous_x0  # type: ignore[return-value]

    @property
    def low_data(self) -> Tensor:
        """(n_z, n_x, n_y) bool: voxels set by the smoothness prior because their data are too few."""
        self._ensure_x0()
        return self._low_data  # type: ignore[return-value]

    def _keep_muons(self, data: dict[str, Tensor]) -> Tensor:
        return self.steep_track_mask(data)

    def _batch_data(self, sb: ScatterBatch) -> dict[str, Tensor]:
        return self._path_batch_data(sb, super()._batch_data(sb))

    def _log_factor(self, x: Tensor) -> Tensor:
        if not self.log_term:
            return torch.ones_like(x)
        return (1.0 + SCATTER_COEF_B * torch.log(x.clamp_min(1e-6))).clamp_min(0.05).square()

    # ------------------------------------------------------------------ solve
    def _prior_beta(self, rho: Tensor, den: Tensor) -> Tensor:
        """Prior weight beta = prior_strength x median_j(rho_j D_j), D_j the update's denominator (~ the voxel's
        information per unit log rho): the prior is worth ``prior_strength`` of a typical voxel's data. Evaluated once,
        at the homogeneous start: re-evaluated every update, it followed the data-poor voxels that run towards
        rho -> 0 (median rho D fell 4x over 20 updates at 1k muons), weakening the prior exactly where it is needed."""
        return self.prior_strength * (rho[: self.n_vox] * den[: self.n_vox]).median().clamp_min(_TINY)

    def _edge_widths(self, rho: Tensor, den: Tensor) -> Tensor | None:
        """(n_z, n_x, n_y) widths t_j = edge_scale / sqrt(rho_j D_j) [in ln rho] of the prior's edge weighting, from each
        voxel's information at the homogeneous start (``None`` for ``edge_scale=0``: the plain neighbourhood mean)."""
        if self.edge_scale <= 0:
            return None
        info = (rho[: self.n_vox] * den[: self.n_vox]).detach().clamp_min(_TINY)
        return (self.edge_scale / torch.sqrt(info)).clamp_max(1e3).reshape(self.shp_zxy)

    def _add_prior(
        self, rho: Tensor, num: Tensor, den: Tensor, beta: Tensor, widths: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Add the log-normal smoothness prior's gradient to the update's numerator / denominator (one-step-late); its
        target is the mean of ln rho over the box of ``prior_extent`` around the voxel, or with ``widths`` the
        edge-aware mean over its 3x3x3 neighbourhood."""
        rho_v = rho[: self.n_vox]
        if widths is None:
            log_bar = neighbourhood_mean(torch.log(rho_v).reshape(1, *self.shp_zxy), self.prior_extent).reshape(-1)
        else:
            log_bar = bilateral_neighbourhood_mean(torch.log(rho_v).reshape(self.shp_zxy), widths).reshape(-1)
        pen = beta * (torch.log(rho_v) - log_bar) / rho_v
        pen = torch.cat([pen, pen.new_zeros(1)])
        return num + torch.relu(-pen), den + torch.relu(pen)

    def _compute_x0(self) -> tuple[Tensor, Tensor]:
        idx, m_in, m_out, l_in, l_out, t = self.path_samples()
        obs, noise, f, k0, eff = self._observables()
        lw = m_in * l_in[:, None] + m_out * l_out[:, None]  # (N, S) path length per sample [m]
        lw_t = [lw, lw * t, lw * t.square()]
        flat = idx.reshape(-1)
        n_tot = self.n_vox + 1  # last slot collects samples outside the block (zero length)
        rho_lo, rho_hi = 1.0 / self.x0_range[1], 1.0 / self.x0_range[0]
        y = obs[..., 0].square().sum(1) / 2  # mean squared slope kick per projection
        n0 = (noise[..., 0]).sum(1) / 2
        fm = f.mean(1)
        # homogeneous density of the block by weighted least squares on the squared slope changes, y_i ~ n_i + a_i rho
        # with a_i = k_i f_i L_i F'(L_i rho) and Var y_i = (n_i + a_i rho)^2: rho0 = sum w (y - n) / sum w a with
        # w_i = e_i a_i / (c_i (n_i + a_i rho0)^2) (c_i: the momentum model's spread of u inflates the variance),
        # iterated from equal-variance weights (muons whose noise dwarfs their scatter, and the few very low-momentum
        # muons whose huge scatter would otherwise set the level, weigh little)
        len_blk = lw.sum(1)
        a_lin = (k0 * fm * len_blk).detach()
        y_d, n0_d = y.detach(), n0.detach()
        data = self._get_muon_data()
        mom_var = data["mom_var"][:, 0]  # c_i = E[u^2] / E[u]^2 of the momentum model (1 if known)
        mixture = "u_nodes" in data  # momentum known only through its prior: EM over the prior's nodes
        if mixture:
            u_k, log_p = data["u_nodes"].detach(), torch.log(data["u_prob"].detach().clamp_min(1e-300))
        else:
            u_k, log_p = data["inv_p2"], None
        w_mm = eff.detach() / (n0_d + y_d.median()).clamp_min(_TINY).square()
        rho0 = (w_mm * (y_d - n0_d)).sum() / (w_mm * a_lin).sum().clamp_min(_TINY)
        for _ in range(_HOMOGENEOUS_ITERS):
            rho0 = rho0.clamp(rho_lo, rho_hi)
            a_i = a_lin * self._log_factor(rho0 * len_blk)
            w_mm = eff.detach() * a_i / (mom_var.detach() * (n0_d + a_i * rho0).square()).clamp_min(_TINY)
            rho0 = (w_mm * (y_d - n0_d)).sum() / (w_mm * a_i).sum().clamp_min(_TINY)
        obs_tot = (w_mm * (y - n0)).sum()  # the moment anchor's observed total (carries the gradients of y)
        rho0 = obs_tot / (w_mm * a_i).sum().clamp_min(_TINY)

        def moments(r: Tensor) -> list[Tensor]:
            """Path moments (sum l rho, sum l rho T, sum l rho T^2) per muon at densities ``r``."""
            g = r[idx]
            return [(g * lw_c).sum(1) for lw_c in lw_t]

        def back(coefs: list[Tensor]) -> Tensor:
            """Back-projection onto the voxels of per-muon coefficients of (l, l T, l T^2)."""
            src = coefs[0][:, None] * lw_t[0] + coefs[1][:, None] * lw_t[1] + coefs[2][:, None] * lw_t[2]
            return lw.new_zeros(n_tot).index_add(0, flat, src.reshape(-1))

        def em_terms(ms: list[Tensor]) -> tuple[list[Tensor], list[Tensor], Tensor | None]:
            """Per muon the update's numerator and denominator coefficients of (1, T, T^2) (the back-projection is
            linear in them), at path moments ``ms`` = (sum l rho, sum l rho T, sum l rho T^2), and the posterior weights
            r (N, K) of the momentum nodes (``None`` for a known momentum: one node, r = 1). Over K nodes u_k with
            prior P_k the complete-data EM step sums each node's terms weighted by r_k ~ P_k N(d; 0, N + k_k f M)."""
            m0, m1, m2 = ms
            kf = (SCATTER_COEF_A**2 * self._log_factor(m0))[:, None, None] * f[..., None] * u_k[:, None, :]  # (N,2,K)
            s11 = noise[..., 0, None] + kf * m0[:, None, None]
            s12 = noise[..., 1, None] + kf * m1[:, None, None]
            s22 = noise[..., 2, None] + kf * m2[:, None, None]
            det = torch.maximum(s11 * s22 - s12.square(), 1e-6 * s11 * s22).clamp_min(_TINY)  # condition guard
            i0, i1, i2 = s22 / det, -s12 / det, s11 / det
            d1, d2 = obs[..., 0, None], obs[..., 1, None]
            v1, v2 = i0 * d1 + i1 * d2, i1 * d1 + i2 * d2
            w = eff[:, None, None] * kf
            r = None
            if log_p is not None:
                ll = (-0.5 * (torch.log(det) + d1 * v1 + d2 * v2)).sum(1).detach() + log_p
                r = torch.softmax(torch.nan_to_num(ll, nan=-1e300, posinf=-1e300), dim=1)
                w = w * r[:, None, :]
            num = [(w * v1.square()).sum((1, 2)), 2 * (w * v1 * v2).sum((1, 2)), (w * v2.square()).sum((1, 2))]
            den = [(w * i0).sum((1, 2)), 2 * (w * i1).sum((1, 2)), (w * i2).sum((1, 2))]
            return num, den, r

        if mixture:  # homogeneous density by EM of the mixture likelihood, from the (mean-unbiased) moment estimate
            lw_mom = [x.sum(1) for x in lw_t]
            for _ in range(_MIXTURE_HOMOGENEOUS_ITERS):
                r0 = rho0.detach().clamp(rho_lo, rho_hi)
                num_c, den_c, _ = em_terms([r0 * x for x in lw_mom])
                tot_num = sum((c * x).sum() for c, x in zip(num_c, lw_mom))
                tot_den = sum((c * x).sum() for c, x in zip(den_c, lw_mom))
                rho0 = r0 * (torch.as_tensor(tot_num) / torch.as_tensor(tot_den).clamp_min(_TINY)).clamp(1 / 3, 3)
        rho = rho0.clamp(rho_lo, rho_hi).expand(n_tot)
        self._homogeneous_x0 = 1.0 / rho[0].detach()

        def inv_cov(r: Tensor, r_nodes: Tensor | None) -> tuple[Tensor, Tensor]:
            """(N, 2, 3) inverse covariance and (N, 2) k f of each muon at density ``r``, with u = E[u | d] under the
            node weights ``r_nodes`` for a momentum known through its prior."""
            m0, m1, m2 = moments(r)
            u_i = u_k[:, 0] if r_nodes is None else (r_nodes * u_k).sum(1)
            k = SCATTER_COEF_A**2 * u_i * self._log_factor(m0)
            kf = k[:, None] * f  # (N, 2)
            s11 = noise[..., 0] + kf * m0[:, None]
            s12 = noise[..., 1] + kf * m1[:, None]
            s22 = noise[..., 2] + kf * m2[:, None]
            det = torch.maximum(s11 * s22 - s12.square(), 1e-6 * s11 * s22).clamp_min(_TINY)  # condition guard
            return torch.stack([s22, -s12, s11], dim=-1) / det[..., None], kf  # (N, 2, 3) inverse, (N, 2)

        crossings = lw.new_zeros(n_tot).index_add(0, flat, (lw / self.size).reshape(-1))  # voxel crossings (lengths)
        beta = lw.new_zeros(())
        widths: Tensor | None = None
        r_nodes: Tensor | None = None
        for it in range(self.n_iter * (_MIXTURE_UPDATE_FACTOR if mixture else 1)):
            num_c, den_c, r_nodes = em_terms(moments(rho))
            num = torch.nan_to_num(back(num_c), nan=0.0, posinf=0.0)  # muons with zero weight and overflowing terms
            den = back(den_c)
            if self.prior_strength > 0:  # smoothness prior, one-step-late MAP (see module docstring)
                if it == 0:  # set once, at the homogeneous start (see _prior_beta)
                    beta = self._prior_beta(rho.detach(), den.detach())
                    widths = self._edge_widths(rho.detach(), den.detach())
                num, den = self._add_prior(rho, num, den, beta, widths)
            ratio = torch.where(den > _TINY, num / den.clamp_min(_TINY), torch.ones_like(den))
            rho = (rho * ratio.clamp(1 / 3, 3) ** self.relax).clamp(rho_lo, rho_hi)
            if self.moment_anchor and not mixture:  # global method of moments: sum e (y - n) = sum e k f X(rho)
                m0 = moments(rho)[0]
                pred = (w_mm * k0 * self._log_factor(m0) * fm * m0).sum()
                rho = (rho * (obs_tot / pred.clamp_min(_TINY))).clamp(rho_lo, rho_hi)
        if mixture:
            r_nodes = em_terms(moments(rho))[2]
            mom_var = torch.ones_like(mom_var)  # each muon's u is read from its scatter (posterior mean)
        inv, kf = inv_cov(rho, r_nodes)
        m0 = moments(rho)[0]
        c11 = noise[..., 0] + kf * m0[:, None]  # variance of the slope change per projection
        # angle-only Fisher information of the slope change, reduced by the momentum model's spread: the shrinkage's
        # weights and the low-data flag
        per_len2 = 0.5 * ((kf / c11.clamp_min(_TINY)).square()).sum(1) / mom_var
        seg = lw * self.n_samples  # path through the sample's layer (one-voxel approximation)
        per_sample = lw * seg * per_len2[:, None]
        info = lw.new_zeros(n_tot).index_add(0, flat, (eff[:, None] * per_sample).reshape(-1))[: self.n_vox]
        rho_v = rho[: self.n_vox]
        # empirical-Bayes shrinkage in ln rho (module docstring): data-poor voxels and those at a bound of x0_range
        ln_post, info_log, p_log, low = shrink_to_neighbourhood(
            rho_v,
            info,
            crossings[: self.n_vox],
            self.shp_zxy,
            rho_bounds=(rho_lo, rho_hi),
            shrink_crossings=self.shrink_crossings,
            min_data_fraction=self.min_data_fraction,
            extent=self.shrink_extent,
        )
        x0 = torch.exp(-ln_post).clamp(self.x0_range[0], self.x0_range[1])
        # uncertainty: linear response of the regularised estimator (module docstring): the (angle + displacement)
        # Fisher information of ln rho_j and its score variance,
        h_full, j_full = voxel_information(idx, lw, t, inv, kf, eff, mom_var, self.n_vox)
        h_full, j_full = rho_v.square() * h_full, rho_v.square() * j_full
        # propagated through the neighbourhood averaging of the smoothness prior (b = beta / 2 in ln rho) and shrinkage
        phi = smoothing_factor(
            (beta.detach() / 2) / h_full.detach().clamp_min(_TINY),
            p_log.detach() / info_log.detach().clamp_min(_TINY),
            prior_extent=self.prior_extent if widths is None else (3, 3),
            shrink_extent=self.shrink_extent,
        )
        sigma_ln = (j_full * phi).clamp_min(_TINY).sqrt() / h_full.clamp_min(_TINY)
        unc = x0 * sigma_ln
        unc = torch.where(low, torch.maximum(unc, x0), unc)
        self._low_data = low.reshape(self.shp_zxy)
        return x0.reshape(self.shp_zxy), unc.reshape(self.shp_zxy)

    @property
    def muon_path_x0(self) -> Tensor:
        """(N,) radiation lengths crossed by each muon under the current prediction."""
        idx, m_in, m_out, l_in, l_out, _ = self.path_samples()
        rho = torch.cat([1.0 / self.vox_zxy_x0_preds.reshape(-1), self.vox_zxy_x0_preds.new_zeros(1)])
        g = rho[idx]
        return l_in * (g * m_in).sum(1) + l_out * (g * m_out).sum(1)
