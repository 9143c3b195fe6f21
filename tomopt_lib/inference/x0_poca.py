"""``PanelX0Inferrer``: TomOpt's PoCA-based X0 inference, with separable sparse voxel probabilities.

Per muon i and voxel j (see ``voxel_probs``): p_ij = P(PoCA_i in voxel j), e_i = muon efficiency. For each variable
v in (total_scatter, theta_in, theta_out, mom) the weight is w^v_ij = e_i p_ij a^v_i with a^v_i = 1 / (2 v_i sigma_v_i)^2
(the inverse variance of v_i^2; a = 1 for the momentum, which has no uncertainty), and the voxel RMS is

    v_rms_j = sqrt(sum_i w^v_ij v_i^2 / sum_i w^v_ij).

The sums run over the sparse (muon, voxel) pairs and are accumulated in chunks of muons by
:func:`~.voxel_sums.separable_voxel_sums`: the autograd graph keeps only the (N, w) per-axis probability factors and
the (N, 9) per-muon columns, never an (N, W) or (N, W, 9) tensor (the backward recomputes each chunk).
X0_j = ``x0_from_scatters(size, ...)`` of the RMSs, with or without the Highland log term (``log_term``; default
False = TomOpt). A voxel with no weight at all gets the estimate of the whole muon population (and a 100 %
uncertainty).

Uncertainty (cheap, no Jacobian): X0_j is proportional to 1 / m_j, m_j the weighted mean of s_i = total_scatter_i^2;
its standard error is sqrt(var_j / n_eff_j) with var_j the weighted variance of s_i and n_eff_j = (sum w)^2 / sum w^2,
so sigma_X0_j = X0_j sqrt(var_j / n_eff_j) / m_j (the statistical error from the muon sample; the angle and momentum
RMSs are treated as exact).
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import torch
from torch import Tensor

from .voxel_probs import voxel_axis_probs
from .voxel_sums import DEFAULT_CHUNK_ELEMENTS, separable_voxel_sums
from .x0_base import AbsX0Inferrer, x0_from_scatters

__all__ = ["PanelX0Inferrer"]

_TINY = 1e-30


class PanelX0Inferrer(AbsX0Inferrer):
    """PoCA-based voxelwise X0 inference from ``PanelDetectorLayer`` hits (TomOpt's default inferrer).

    Args:
        volume: the ``Volume`` the muons went through.
        window: voxels per axis around each PoCA that get a probability (``None``: the whole axis, exact).
        log_term: invert Highland with its log term (Newton, ``x0_from_scatters``) instead of TomOpt's plain form.
        chunk: work-space elements per chunk of muons in the voxel sums (memory / speed trade-off only).
    """

    def __init__(self, volume: Any, *, window: Optional[int] = 7, log_term: bool = False,
                 chunk: int = DEFAULT_CHUNK_ELEMENTS) -> None:
        if window is not None and (int(window) != window or window < 1):
            raise ValueError(f"window must be None or an integer >= 1 (voxels per axis), got {window!r}")
        self.window = None if window is None else int(window)
        self.log_term = bool(log_term)
        self.chunk = int(chunk)
        super().__init__(volume)

    def _reset_vars(self) -> None:
        super()._reset_vars()
        self._axis_probs: Optional[Tuple[Tuple[Tensor, Tensor], ...]] = None

    def _get_axis_probs(self) -> Tuple[Tuple[Tensor, Tensor], ...]:
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

    def _get_pair_probs(self) -> Tuple[Tensor, Tensor]:
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

    def _compute_x0(self) -> Tuple[Tensor, Tensor]:
        eff = self.muon_efficiency[:, 0]
        vals = [self.muon_total_scatter, self.muon_theta_in, self.muon_theta_out, self.muon_mom]
        uncs = [self.muon_total_scatter_unc, self.muon_theta_in_unc, self.muon_theta_out_unc, None]
        cols = []
        for v, u in zip(vals, uncs):
            v = v[:, 0]
            if u is None:
                a = torch.ones_like(v)
            else:
                a = 1.0 / (2.0 * v * u[:, 0]).square().clamp_min(_TINY)
                a = a / a.detach().mean().clamp_min(_TINY)  # RMSs are scale invariant; avoids overflow
            cols += [eff * a * v.square(), eff * a]
        s = self.muon_total_scatter[:, 0].square()
        w_ts = cols[1]
        cols.append(w_ts * s.square())  # for the weighted variance of s = total_scatter^2
        per_mu = torch.stack(cols, dim=1)  # (N, 9)
        axis_probs = self._get_axis_probs()
        sums, w2 = separable_voxel_sums(axis_probs, self.shp_zxy, per_mu, w_ts.square()[:, None], chunk=self.chunk)
        w2 = w2[:, 0]
        glob = per_mu.sum(0)

        def rms(k: int, tot: Tensor) -> Tensor:
            return (tot[..., 2 * k] / tot[..., 2 * k + 1].clamp_min(_TINY)).sqrt()

        has = sums[:, 1::2].min(1).values > _TINY * glob[1::2].min().clamp_min(1.0)
        x0_vox = x0_from_scatters(self.size, *(rms(k, sums) for k in range(4)), log_term=self.log_term)
        x0_glob = x0_from_scatters(self.size, *(rms(k, glob) for k in range(4)), log_term=self.log_term)
        x0 = torch.where(has, x0_vox, x0_glob.expand_as(x0_vox))
        t, m = sums[:, 1], sums[:, 0] / sums[:, 1].clamp_min(_TINY)
        var = (sums[:, 8] / t.clamp_min(_TINY) - m.square()).clamp_min(0.0)
        n_eff = t.square() / w2.clamp_min(_TINY)
        rel = torch.sqrt(var / n_eff.clamp_min(_TINY)) / m.clamp_min(_TINY)
        unc = torch.where(has, x0 * rel, x0)
        return x0.reshape(self.shp_zxy), unc.reshape(self.shp_zxy)
