"""``PanelX0Inferrer``: PoCA-based X0 inference, calibrated by default, TomOpt's exact estimator on request.

Both estimators weight muon i into voxel j with p_ij = P(PoCA_i in voxel j) (separable Gaussian voxel probabilities,
``voxel_probs``; by default over the whole axis, ``window=None``) and e_i, the muon efficiency. The sums over the
(muon, voxel) pairs run in chunks (:func:`~.voxel_sums.separable_voxel_sums`): the autograd graph keeps only the
(N, w) per-axis factors and (N, K) per-muon columns, never an (N, n_vox) tensor.

**Calibrated (default).** A muon's mean squared projected slope kick y_i (per projection, angle-to-slope factor
removed, :mod:`.path_model`) minus its measurement noise n_i estimates k_i L_i rho: the scattering of its whole path of
length L_i [m] through the block, with k_i = A^2 u_i (Highland with the muon's beta and the momentum model's
u = 1 / (beta p)^2, :mod:`.momentum`; A = 0.0136 GeV) and the log term linearised at the block's homogeneous
estimate rho_0 (k_i *= (1 + B ln(L_i rho_0))^2). The muon informs the voxels on its path (in-track to the PoCA
height, out-track below; one sample per layer), each with the back-projection weight
b_ij = (f0 + p_ij) l_ij / L_i, l_ij its path length in voxel j, p_ij = P(PoCA in voxel j) and f0 = ``poca_floor``.
Per voxel the linear ratio estimate of rho_j = 1 / X0_j is

    rho_j = [sum_i b_ij e_i w_i (y_i - n_i) + beta rho_nb_j] / [sum_i b_ij e_i w_i a_i + beta],
    a_i = k_i L_i,  w_i = a_i / s_i^2,  s_i^2 = v_i (a_i rho_0 + n_i)^2,  v_i = (3 c_i - 1) / 2,

with weights that do not depend on the muon's measured angle (TomOpt's 1 / (2 theta sigma_theta)^2 favours small
angles and biases X0 up), c_i = E[u^2] / E[u]^2 of the momentum model, and an empirical-Bayes pull towards
rho_nb_j, the mean of the voxel's 3x3x3 neighbourhood in the unpulled map, worth ``prior_strength`` effective
muons (beta = prior_strength x the median information per effective muon). A negative data sum (a voxel's few muons
scattered less than their noise predicts) counts as zero, i.e. no evidence of density, not as rho < 0 (which sat at
the X0 = 1e4 m clamp), and rho_nb_j itself leans towards the block's density rho_0 with a tenth of beta, so that a
neighbourhood without data falls back to rho_0. Why the floor: a PoCA is well
localised only for large scatters, so PoCA probabilities alone favour the large-angle muons of light materials and
bias rho up (+26 % for beryllium at f0 = 0; +7 % at f0 = 0.3, the default; f0 -> inf is the unbiased path average). A uniform block is recovered without bias; a dense object
embedded in light material is *diluted* (its voxels get the mean density along the paths through them: lead blocks
of 0.2 m in 0.6 m of beryllium come out with ~2.3x their X0). The path inferrer (``x0_path``) deconvolves this.

With a momentum known only through its prior (``"unknown"``: nodes u_k with probabilities P_k), the density comes
from ``_MIXTURE_ITERS`` multiplicative EM steps of the Gaussian mixture likelihood (``_mixture_em``): r_ik ~ P_k
s_ik^-1 exp(-y_i / s_ik) with s_ik = n_i + a_ik rho_bar_i (rho_bar_i: the density along the muon's path in the current
map), and rho_j <- rho_j sum_i b_ij up_i / sum_i b_ij down_i (always > 0), followed by the same neighbourhood pull and
low-data flag; a large scatter is read as a low momentum (uniform blocks: median 0.9-1.0 at 10k muons, against 1.1-1.4 with the mean u). Around a dense object the
diluted map makes its muons look like low-momentum ones, which dilutes it further (README calibration table).

Uncertainty (frequentist, model-based): var(rho_j) = sum_i (b_ij e_i w_i)^2 s_i^2(rho_j) / D_j^2, D_j the denominator,
s_i^2(rho) = v_i (a_i rho + n_i)^2; sigma_X0 = sigma_rho / rho^2. Voxels with fewer than ``min_muons`` effective
muons ((sum b e w a)^2 / sum (b e w a)^2) are flagged ``low_data`` and get at least a 100 % uncertainty.

**TomOpt-exact** (``tomopt_exact=True``, for porting): for v in (total_scatter, theta_in, theta_out, mom) the weight is
e_i p_ij / (2 v_i sigma_v_i)^2 (1 for the momentum), v_rms_j = sqrt(sum w v^2 / sum w), and
X0_j = (A / p_rms)^2 size / (theta_rms^2 cos_bar) with theta_rms = total_scatter_rms / sqrt(2) and cos_bar the mean
of cos theta_in_rms and cos theta_out_rms (``x0_from_scatters``; ``log_term=True`` inverts Highland with its log term
instead). A voxel without weight gets the whole population's estimate and a 100 % uncertainty. Its uncertainty:
sigma_X0 = X0 sqrt(var_j / n_eff_j) / m_j, m_j and var_j the weighted mean and variance of total_scatter^2.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from ..checks import check_number
from ..core import SCATTER_COEF_A, SCATTER_COEF_B
from .neighbourhood import neighbourhood_mean
from .path_model import PATH_MODES, PathModelMixin
from .voxel_probs import gauss_interval_prob, voxel_axis_probs
from .voxel_sums import DEFAULT_CHUNK_ELEMENTS, separable_voxel_sums
from .x0_base import AbsX0Inferrer, x0_from_scatters

if TYPE_CHECKING:
    from ..muon.generation import AbsMuonGenerator
    from ..volume.volume import Volume
    from .momentum import MomentumModel
    from .scattering import ScatterBatch

__all__ = ["PanelX0Inferrer"]

_TINY = 1e-30
_MIXTURE_ITERS = 4  # EM steps of the ratio estimate when the momentum is known through its prior only
_MIXTURE_PULL_MUONS = 20.0  # weight [effective muons] of the block's density in the E-step's map (module docstring)
_NEIGHBOURHOOD_PRIOR = 0.1  # weight of the block's density in a neighbourhood mean, in units of the pull's weight
_TOMOPT_VARS = ("poca_xyz", "total_scatter", "theta_in", "theta_out")


class PanelX0Inferrer(PathModelMixin, AbsX0Inferrer):
    """PoCA-based voxelwise X0 inference from ``PanelDetectorLayer`` hits (module docstring).

    Args:
        volume: the ``Volume`` the muons went through.
        tomopt_exact: TomOpt's estimator (plain Highland, RMS momentum, voxel-height path, angle-dependent weights).
        window: voxels per axis around each PoCA that get a probability (``None``: the whole axis, exact).
        log_term: Highland's log term (default: on for the calibrated estimator, off for ``tomopt_exact``).
        prior_strength: weight of the neighbourhood pull in effective muons (calibrated only).
        poca_floor: weight of a path voxel regardless of the PoCA, added to its PoCA probability (calibrated only).
        min_muons: voxels with fewer effective muons are flagged ``low_data`` (calibrated only).
        n_samples, path: path sampling of the calibrated estimator (:mod:`.path_model`).
        chunk: work-space elements per chunk of muons in the voxel sums (memory / speed trade-off only).
        momentum, mu_generator: momentum model (calibrated only) and the generator of ``"unknown"``.
    """

    def __init__(
        self,
        volume: Volume,
        *,
        tomopt_exact: bool = False,
        window: int | None = None,
        log_term: bool | None = None,
        prior_strength: float = 2.0,
        poca_floor: float = 0.3,
        min_muons: float = 2.0,
        n_samples: int = 1,
        path: str = "poca",
        chunk: int = DEFAULT_CHUNK_ELEMENTS,
        momentum: MomentumModel | str | None = None,
        mu_generator: AbsMuonGenerator | None = None,
    ) -> None:
        if window is not None and (isinstance(window, bool) or int(window) != window or window < 1):
            raise ValueError(f"window must be None or an integer >= 1 (voxels per axis), got {window!r}")
        check_number("n_samples", n_samples, low=1, integer=True)
        if path not in PATH_MODES:
            raise ValueError(f"path must be one of {PATH_MODES}, got {path!r}")
        for name, v in (("prior_strength", prior_strength), ("poca_floor", poca_floor), ("min_muons", min_muons)):
            check_number(name, v, low=0)
        self.tomopt_exact = bool(tomopt_exact)
        self.window = None if window is None else int(window)
        self.log_term = (not self.tomopt_exact) if log_term is None else bool(log_term)
        self.prior_strength, self.min_muons = float(prior_strength), float(min_muons)
        self.poca_floor = float(poca_floor)
        self.n_samples, self.path = int(n_samples), path
        self.chunk = int(chunk)
        super().__init__(volume, momentum=momentum, mu_generator=mu_generator)

    @property
    def _muon_vars(self) -> tuple[str, ...]:  # type: ignore[override]
        return _TOMOPT_VARS if self.tomopt_exact else self.PATH_MUON_VARS

    def _reset_vars(self) -> None:
        super()._reset_vars()
        self._axis_probs: tuple[tuple[Tensor, Tensor], ...] | None = None
        self._low_data: Tensor | None = None

    def _batch_data(self, sb: ScatterBatch) -> dict[str, Tensor]:
        d = super()._batch_data(sb)
        return d if self.tomopt_exact else self._path_batch_data(sb, d)

    def _keep_muons(self, data: dict[str, Tensor]) -> Tensor:
        if self.tomopt_exact:
            return super()._keep_muons(data)
        return self.steep_track_mask(data)

    @property
    def low_data(self) -> Tensor:
        """(n_z, n_x, n_y) bool: voxels with fewer than ``min_muons`` effective muons (calibrated estimator)."""
        self._ensure_x0()
        if self._low_data is None:
            return torch.zeros(self.shp_zxy, dtype=torch.bool, device=self.device)
        return self._low_data

    # ------------------------------------------------------------------ PoCA voxel probabilities
    def _get_axis_probs(self) -> tuple[tuple[Tensor, Tensor], ...]:
        """``((pz, iz), (px, ix), (py, iy))`` per-axis window probabilities of the PoCAs (memoised)."""
        if self._axis_probs is None:
            self._axis_probs = voxel_axis_probs(
                self.muon_poca_xyz,
                self.muon_poca_xyz_unc,
                low_xyz=(0.0, 0.0, self.z_bottom),
                size=self.size,
                shp_zxy=self.shp_zxy,
                window=self.window,
            )
        return self._axis_probs

    def _get_pair_probs(self) -> tuple[Tensor, Tensor]:
        """``(probs (N, W), flat zxy voxel index (N, W))`` of the PoCAs (diagnostics; O(N W) memory, not memoised)."""
        (pz, iz), (px, ix), (py, iy) = self._get_axis_probs()
        _, n_x, n_y = self.shp_zxy
        probs = pz[:, :, None, None] * px[:, None, :, None] * py[:, None, None, :]
        idx = (iz[:, :, None, None] * n_x + ix[:, None, :, None]) * n_y + iy[:, None, None, :]
        return probs.reshape(len(pz), -1), idx.reshape(len(pz), -1)

    @property
    def muon_probs_per_voxel_zxy(self) -> Tensor:
        """(N, n_z, n_x, n_y) PoCA-in-voxel probabilities, densified from the sparse pairs (diagnostics; O(N n_vox))."""
        probs, idx = self._get_pair_probs()
        dense = probs.new_zeros(len(probs), self.n_vox)
        dense = dense.scatter_add(1, idx, probs)
        return dense.reshape(len(probs), *self.shp_zxy)

    # ------------------------------------------------------------------ estimators
    def _compute_x0(self) -> tuple[Tensor, Tensor]:
        return self._compute_x0_tomopt() if self.tomopt_exact else self._compute_x0_calibrated()

    def _path_poca_weights(self) -> tuple[Tensor, Tensor, Tensor]:
        """``(idx, b, path_len)``: (N, S) voxel of each path sample (one per layer), (N, S) back-projection weight
        b = (poca_floor + P(PoCA in that voxel)) x (path length in it) / path_len, (N,) path length in the block [m]."""
        d = self._get_muon_data()
        idx, lw, _ = self.sample_lengths()
        path_len = lw.sum(1)
        n_z, n_x, n_y = self.shp_zxy
        iz, rest = idx // (n_x * n_y), idx % (n_x * n_y)
        ijk = torch.stack([rest // n_y, rest % n_y, iz], dim=-1).to(lw.dtype)  # (N, S, 3) voxel coordinates x, y, z
        low = ijk * self.size + lw.new_tensor([0.0, 0.0, self.z_bottom])
        sig = (d["poca_xyz_unc"] + 1e-7)[:, None, :]
        centre = d["poca_xyz"][:, None, :]
        prob = gauss_interval_prob((low - centre) / sig, (low + self.size - centre) / sig).prod(-1)
        inside = (idx < self.n_vox).to(lw.dtype)
        b = (self.poca_floor + prob) * inside * lw / path_len.clamp_min(_TINY)[:, None]
        return idx, b, path_len

    def _compute_x0_calibrated(self) -> tuple[Tensor, Tensor]:
        d = self._get_muon_data()
        idx, bw, path_len = self._path_poca_weights()
        obs, noise, f, k0, eff = self._observables()
        y = (obs[..., 0].square() / f).mean(1)  # mean squared projected angle kick [rad^2]
        n = (noise[..., 0] / f).mean(1)  # its measurement-noise part [rad^2]
        use = eff * (path_len > 0).to(eff.dtype)
        w_mm = use / (n + y.detach().median()).clamp_min(_TINY).square()  # inverse expected variance (noise-robust)
        rho0 = ((w_mm * (y - n)).sum() / (w_mm * k0 * path_len).sum().clamp_min(_TINY)).clamp(1e-4, 1e4).detach()
        log_fac = torch.ones_like(k0)  # Highland's log factor, linearised at the block's homogeneous density
        if self.log_term:
            log_fac = (1.0 + SCATTER_COEF_B * torch.log((path_len * rho0).clamp_min(1e-6))).clamp_min(0.05).square()
        flat = idx.reshape(-1)
        n_tot = self.n_vox + 1

        def vox(per_muon: Tensor, weights: Tensor) -> Tensor:
            return per_muon.new_zeros(n_tot).index_add(0, flat, (weights * per_muon[:, None]).reshape(-1))[: self.n_vox]

        b2 = bw.square()
        mixture = "u_nodes" in d  # momentum known through its prior only: EM over the prior's nodes
        if mixture:
            up, down, spread, rho_map, rho0 = self._mixture_em(d, idx, bw, path_len, y, n, use, log_fac, rho0, vox)
            num, den = rho_map * vox(up, bw), vox(down, bw)
            n_eff = den.square() / vox(down.square(), b2).clamp_min(_TINY)
        else:
            v = (3.0 * d["mom_var"][:, 0] - 1.0) / 2.0
            a = k0 * log_fac * path_len  # E[y - n] = a rho for a uniform block
            w = use * a / (v * (a * rho0 + n).square()).clamp_min(_TINY)
            num, den = vox(w * (y - n), bw), vox(w * a, bw)
            q_aa, q_an, q_nn = (
                vox((w * a).square() * v, b2),
                vox(2 * w.square() * v * a * n, b2),
                vox(w.square() * v * n.square(), b2),
            )
            n_eff = den.square() / vox((w * a).square(), b2).clamp_min(_TINY)
            num = num.clamp_min(0.0)  # rho >= 0: less scattering than the noise predicts is no evidence of density
        rho_raw = (num / den.clamp_min(_TINY)).clamp(1e-4, 1e4)
        if self.prior_strength > 0:
            per_muon_info = (den / n_eff.clamp_min(_TINY))[den > 0]
            beta = self.prior_strength * (per_muon_info.median() if len(per_muon_info) else den.new_ones(()))
            shp = (1, *self.shp_zxy)
            w_nb = neighbourhood_mean(den.reshape(shp)).reshape(-1)
            r_nb = neighbourhood_mean((den * rho_raw).reshape(shp)).reshape(-1)
            nb_prior = _NEIGHBOURHOOD_PRIOR * beta  # a neighbourhood without data falls back to the block's density
            rho_nb = (r_nb + nb_prior * rho0) / (w_nb + nb_prior).clamp_min(_TINY)
            num, den = num + beta * rho_nb, den + beta
        rho = (num / den.clamp_min(_TINY)).clamp(1e-4, 1e4)
        if mixture:  # Var(rho_map up_i) = rho_map^2 (e g_i)^2 Var(y_i): the spread's per-muon term (see _mixture_em)
            var_rho = vox(spread, b2) * rho_map.square() / den.clamp_min(_TINY).square()
        else:
            var_rho = (rho.square() * q_aa + rho * q_an + q_nn) / den.clamp_min(_TINY).square()
        x0 = 1.0 / rho
        unc = var_rho.clamp_min(_TINY).sqrt() / rho.square()
        low = n_eff.detach() < self.min_muons
        unc = torch.where(low, torch.maximum(unc, x0), unc)
        self._low_data = low.reshape(self.shp_zxy)
        return x0.reshape(self.shp_zxy), unc.reshape(self.shp_zxy)

    def _mixture_em(
        self,
        d: dict[str, Tensor],
        idx: Tensor,
        bw: Tensor,
        path_len: Tensor,
        y: Tensor,
        n: Tensor,
        use: Tensor,
        log_fac: Tensor,
        rho0: Tensor,
        vox: Callable[[Tensor, Tensor], Tensor],
    ) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """EM of the per-voxel density for a momentum known only through its prior (nodes u_k, P_k), ``_MIXTURE_ITERS``
        steps. E-step: with the density rho_bar_i along the muon's path (the block's rho_0 first, then the path average
        of the current map, each voxel pulled towards the block's estimate with the weight of ``_MIXTURE_PULL_MUONS``
        effective muons: with a few muons per voxel the raw map's noise biased the posterior, X0 1.6-1.7x at 1k muons
        with the weight of 2), node k predicts the per-projection variance s_ik = n_i + a_ik rho_bar_i
        (a_ik = A^2 u_k F' L_i) and r_ik ~ P_k s_ik^-1 exp(-y_i / s_ik) (two projections, y_i their mean squared kick).
        M-step, multiplicative (ML-EM), so that rho stays > 0 however few muons a voxel has: the Gaussian likelihood's
        stationarity sum_ik r_ik a_ik (y_i - s_ik) / s_ik^2 = 0 as the fixed point of
        rho_j <- rho_j sum_i b_ij up_i / sum_i b_ij down_i, up_i = e_i sum_k r_ik a_ik y_i / s_ik^2,
        down_i = e_i sum_k r_ik a_ik / s_ik (a ratio of sums like the known-momentum estimate's w (y - n) / w a went
        negative where a few high-momentum muons scattered less than their noise: X0 at the clamp). A large scatter is
        read as a low momentum rather than as dense material.

        Returns ``(up, down, spread, rho_map, rho_h)``: the last E-step's (N,) terms, the per-muon variance term of the
        uncertainty, (e_i g_i s_i)^2 = down_i^2 with g_i = sum_k r_ik a_ik / s_ik^2 and the effective variance
        s_i = sum_k r_ik a_ik / s_ik / g_i of y_i (Var y_i = s_i^2; the posterior mean of s_ik^2 instead is set by
        improbable near-stopping nodes and overstated the uncertainty ~10x), so var(rho_j) = rho_j^2 / n_eff, the
        (n_vox,) map the last step multiplies, and the block's homogeneous density."""
        u_k = d["u_nodes"].detach()
        log_p = torch.log(d["u_prob"].detach().clamp_min(1e-300))
        a_k = (SCATTER_COEF_A**2 * log_fac * path_len)[:, None] * u_k  # (N, K)
        y_d, n_d = y.detach()[:, None], n.detach()[:, None]
        lw_frac = self.sample_lengths()[1] / path_len.clamp_min(_TINY)[:, None]
        rho_h = rho0.detach()
        rho_map = rho_h.expand(self.n_vox)
        rho_bar = rho_h.expand(len(y))
        up = down = spread = y
        for it in range(_MIXTURE_ITERS + 1):
            s_k = (n_d + a_k.detach() * rho_bar[:, None]).clamp_min(_TINY)
            r = torch.softmax(torch.nan_to_num(log_p - torch.log(s_k) - y_d / s_k, nan=-1e300), dim=1)
            g = r * a_k / s_k.square()  # (N, K)
            up = use * g.sum(1) * y
            down = use * (r * a_k / s_k).sum(1)
            spread = down.square()  # (e g s_eff)^2 with s_eff = sum r a / s / g: Var(y_i) = s_eff^2 (see docstring)
            if it == _MIXTURE_ITERS:
                break
            up_d, down_d = up.detach(), down.detach()
            rho_h = (rho_h * up_d.sum() / down_d.sum().clamp_min(_TINY)).clamp(1e-4, 1e4)
            den = vox(down_d, bw)
            n_eff = den.square() / vox(down_d.square(), bw.square()).clamp_min(_TINY)
            info = (den / n_eff.clamp_min(_TINY))[den > 0]
            beta = _MIXTURE_PULL_MUONS * (info.median() if len(info) else den.new_ones(()))
            rho_map = ((rho_map * vox(up_d, bw) + beta * rho_h) / (den + beta).clamp_min(_TINY)).clamp(1e-4, 1e4)
            rho_pad = torch.cat([rho_map, rho_h.reshape(1)])
            rho_bar = (rho_pad[idx] * lw_frac).sum(1)
        return up, down, spread, rho_map.detach(), rho_h

    def _compute_x0_tomopt(self) -> tuple[Tensor, Tensor]:
        eff = self.muon_efficiency[:, 0]
        vals = [self.muon_total_scatter, self.muon_theta_in, self.muon_theta_out, self.muon_mom]
        uncs = [self.muon_total_scatter_unc, self.muon_theta_in_unc, self.muon_theta_out_unc, None]
        cols = []
        for val, u in zip(vals, uncs):
            val = val[:, 0]
            if u is None:
                a = torch.ones_like(val)
            else:
                a = 1.0 / (2.0 * val * u[:, 0]).square().clamp_min(_TINY)
                a = a / a.detach().mean().clamp_min(_TINY)  # RMSs are scale invariant; avoids overflow
            cols += [eff * a * val.square(), eff * a]
        s = self.muon_total_scatter[:, 0].square()
        w_ts = cols[1]
        cols.append(w_ts * s.square())  # for the weighted variance of s = total_scatter^2
        per_mu = torch.stack(cols, dim=1)  # (N, 9)
        sums, w2 = separable_voxel_sums(self._get_axis_probs(), self.shp_zxy, per_mu, w_ts.square()[:, None], chunk=self.chunk)
        w2 = w2[:, 0]
        glob = per_mu.sum(0)

        def rms(i: int, tot: Tensor) -> Tensor:
            return (tot[..., 2 * i] / tot[..., 2 * i + 1].clamp_min(_TINY)).sqrt()

        has = sums[:, 1::2].min(1).values > _TINY * glob[1::2].min().clamp_min(1.0)
        x0_vox = x0_from_scatters(self.size, *(rms(i, sums) for i in range(4)), log_term=self.log_term)
        x0_glob = x0_from_scatters(self.size, *(rms(i, glob) for i in range(4)), log_term=self.log_term)
        x0 = torch.where(has, x0_vox, x0_glob.expand_as(x0_vox))
        t, m = sums[:, 1], sums[:, 0] / sums[:, 1].clamp_min(_TINY)
        var = (sums[:, 8] / t.clamp_min(_TINY) - m.square()).clamp_min(0.0)
        n_eff = t.square() / w2.clamp_min(_TINY)
        rel = torch.sqrt(var / n_eff.clamp_min(_TINY)) / m.clamp_min(_TINY)
        unc = torch.where(has, x0 * rel, x0)
        return x0.reshape(self.shp_zxy), unc.reshape(self.shp_zxy)
