"""Heat-map detectors: a detector plane whose sensitivity over xy is a learnable Gaussian mixture.

A ``DetectorHeatMap`` is an infinitely thin detector plane at the learnable height ``z`` (1,) [m]. Instead of a
rectangle, its instrumented area is described by a *sensitivity map*, the local areal density of detector elements
(``GMM``, K components):

    S(x, y) = sum_k n_k * exp(-(x - mu_kx)^2 / (2 sig_kx^2) - (y - mu_ky)^2 / (2 sig_ky^2))

with learnable centres ``mu`` (K, 2) [m], widths ``sig`` (K, 2) [m] and amplitudes ``norm`` (K,) (dimensionless: the
expected number of elements covering a point at a component's centre). With elements placed independently, the
probability that a point is covered by at least one element is the Poisson coverage

    c(x, y) = 1 - exp(-S(x, y))   in [0, 1).

Response model (training mode, or ``realistic_validation=False``): every muon gets a hit, with

    res(x, y) = res0 * c(x, y)   per axis [1/m],      eff(x, y) = eff0 * c(x, y),

both floored at ``RES_EFF_FLOOR``, so hits are differentiable w.r.t. ``mu``, ``sig``, ``norm`` (through the resolution
and efficiency) and ``z`` (the hit height). Evaluation mode with ``realistic_validation=True`` is physical: a muon
leaves a hit with probability c(x, y) (one uniform draw per muon), a hit has the nominal resolution ``res0`` and
efficiency ``eff0``; a muon without a hit gets an infinite reconstructed position and uncertainty and zero efficiency
(as outside a realistic ``DetectorPanel``).

Cost: the elements' total area times the cost per square metre,

    cost = m2_cost * integral S dx dy = m2_cost * sum_k 2 pi n_k sig_kx sig_ky,

which is at least ``m2_cost`` times the covered area (integral of c), with equality for sparse, non-overlapping maps.
Fixed-budget mode (``assign_budget(b)``) multiplies every amplitude by ``b / cost`` (``budget_scale``), so the cost always
equals the budget and ``norm`` only sets the relative amplitudes.

The detector layer of heat maps is ``HeatMapDetectorLayer`` (:mod:`.heatmap_layer`; ``PanelDetectorLayer(...,
panels=[heat maps])`` builds one, as TomOpt's ``PanelDetectorLayer`` accepts heat maps). Units are SI (metres).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from ..runtime import DEFAULT_DTYPE, DeviceLike, resolve_device
from .gmm import GMM, Number, _positive, _vec, fibonacci_centres
from .panel import RES_EFF_FLOOR

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from ..muon.muon_batch import MuonBatch

__all__ = [
    "GMM",
    "DetectorHeatMap",
    "fibonacci_centres",  # re-exported from .gmm
    "MIN_COVERAGE",
    "NORM_RANGE",
    "SIG_RANGE",
]

MIN_COVERAGE: float = 1e-2
"""Coverage c(x, y) below which ``get_xy_mask`` counts a point as outside the map."""
NORM_RANGE: tuple[float, float] = (1e-3, 10.0)
"""Clamp range of the amplitudes ``norm`` (``clamp_params``)."""
SIG_RANGE: tuple[float, float] = (1 / 50, 2.0)
"""Clamp range of the widths ``sig``, as fractions of the clamp box's xy extent (``clamp_params``)."""


class DetectorHeatMap(nn.Module):
    """Detector plane with a Gaussian-mixture sensitivity map (see the module docstring for the model).

    Args:
        res: nominal resolution [1/m] (> 0); a hit is smeared by N(0, 1) / res per axis.
        eff: nominal efficiency, in (0, 1].
        init_xyz: (x, y, z) [m]: centre of the initial area and height of the plane.
        init_xy_span: (2,) full widths [m] of the initial area (as for ``DetectorPanel``; TomOpt takes an interval).
        m2_cost: cost per square metre of detector elements (> 0).
        budget: optional fixed cost (> 0) (fixed-budget mode, see ``assign_budget``).
        realistic_validation: physical hits in evaluation mode (coverage draw, nominal resolution and efficiency).
        device: device of the parameters and buffers.
        n_cluster: number of Gaussian components K.
    """

    type_label = "heatmap"
    resolution: Tensor  # buffers registered in __init__
    efficiency: Tensor
    m2_cost: Tensor

    def __init__(
        self,
        *,
        res: Number,
        eff: Number,
        init_xyz: Sequence[float] | Tensor,
        init_xy_span: Sequence[float] | Tensor,
        m2_cost: Number = 1.0,
        budget: Number | None = None,
        realistic_validation: bool = False,
        device: DeviceLike = None,
        n_cluster: int = 30,
    ) -> None:
        super().__init__()
        self.device = resolve_device(device)
        res_v = _positive("res", res, unit="(resolution in 1/m)")
        eff_v = _positive("eff", eff, unit="(hit efficiency)", high=1.0)
        cost_v = _positive("m2_cost", m2_cost, unit="(cost per m^2)")
        xyz = _vec("init_xyz", init_xyz, 3)
        self.realistic_validation = bool(realistic_validation)
        self.gmm = GMM(n_cluster=n_cluster, init_xy=xyz[:2], init_xy_span=init_xy_span, device=self.device)
        self.z = nn.Parameter(xyz[2:].to(self.device))
        opts: dict[str, Any] = dict(dtype=DEFAULT_DTYPE, device=self.device)
        self.register_buffer("resolution", torch.tensor(res_v, **opts))
        self.register_buffer("efficiency", torch.tensor(eff_v, **opts))
        self.register_buffer("m2_cost", torch.tensor(cost_v, **opts))
        self.budget: Tensor | None = None
        self.assign_budget(budget)

    # ------------------------------------------------------------------ parameters
    @property
    def mu(self) -> nn.Parameter:
        """(K, 2) component centres [m]."""
        return self.gmm.mu

    @property
    def sig(self) -> nn.Parameter:
        """(K, 2) component widths [m]."""
        return self.gmm.sig

    @property
    def norm(self) -> nn.Parameter:
        """(K,) component amplitudes (before the budget scale)."""
        return self.gmm.norm

    @property
    def n_cluster(self) -> int:
        return self.gmm.n_cluster

    # ------------------------------------------------------------------ budget and cost
    @property
    def budget_scale(self) -> Tensor:
        """Amplitude multiplier budget / (m2_cost * integral S); 1 outside fixed-budget mode."""
        if self.budget is None:
            return torch.ones((), dtype=DEFAULT_DTYPE, device=self.z.device)
        return self.budget / (self.m2_cost * self.gmm.integral())

    def get_scaled_norm(self) -> Tensor:
        """(K,) effective amplitudes ``norm * budget_scale``."""
        return self.norm * self.budget_scale

    def assign_budget(self, budget: Number | None = None) -> None:
        """Fix the cost to ``budget`` (> 0, may carry gradient) by scaling the amplitudes; ``None`` leaves
        fixed-budget mode. The scale is recomputed from the current parameters on every use."""
        if budget is None:
            self.budget = None
            return
        _positive("budget", budget, unit="(heat-map cost in currency units)")
        self.budget = torch.as_tensor(budget, dtype=DEFAULT_DTYPE, device=self.device).reshape(())

    def get_cost(self) -> Tensor:
        """Cost = m2_cost * budget_scale * sum_k 2 pi n_k sig_kx sig_ky (0-d; equals the budget in fixed-budget mode)."""
        return self.m2_cost * self.budget_scale * self.gmm.integral()

    # ------------------------------------------------------------------ map
    def _prep(self, xy: Tensor) -> Tensor:
        return torch.as_tensor(xy, device=self.z.device).to(self.z.dtype).reshape(-1, 2)

    def sensitivity(self, xy: Tensor) -> Tensor:
        """(N,) sensitivity S (expected number of covering elements) at ``xy`` (N, 2) [m], budget scale included."""
        return self.gmm(self._prep(xy), self.budget_scale)

    def coverage(self, xy: Tensor) -> Tensor:
        """(N,) coverage probability c = 1 - exp(-S) at ``xy`` (N, 2) [m]."""
        return -torch.expm1(-self.sensitivity(xy))

    @property
    def xy(self) -> Tensor:
        """(2,) centre [m] of the map: the centroid of the components weighted by their integrals n_k sig_kx sig_ky."""
        w = self.norm.detach() * self.sig.detach().prod(dim=-1)
        return (w.unsqueeze(-1) * self.mu.detach()).sum(0) / w.sum()

    @property
    def x(self) -> Tensor:
        """Centre x [m] of the map (see ``xy``)."""
        return self.xy[0]

    @property
    def y(self) -> Tensor:
        """Centre y [m] of the map (see ``xy``)."""
        return self.xy[1]

    def get_scaled_xy_span(self) -> Tensor:
        """(2,) full widths [m] of the equivalent panel: 4 standard deviations of the map seen as a distribution
        (a ``DetectorPanel``'s Gaussian profile has sigma = span / 4)."""
        w = self.norm.detach() * self.sig.detach().prod(dim=-1)
        w = (w / w.sum()).unsqueeze(-1)
        mu, sig = self.mu.detach(), self.sig.detach()
        mean = (w * mu).sum(0)
        var = (w * (sig**2 + mu**2)).sum(0) - mean**2
        return 4 * var.clamp_min(0).sqrt()

    def get_xy_mask(self, xy: Tensor) -> Tensor:
        """(N,) True where the coverage at ``xy`` (N, 2) [m] reaches ``MIN_COVERAGE`` (detached)."""
        with torch.no_grad():
            return self.coverage(self._prep(xy).detach()) >= MIN_COVERAGE

    # ------------------------------------------------------------------ response model
    def _realistic(self) -> bool:
        return self.realistic_validation and not self.training

    def draw_hit_mask(self, xy: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """(N,) physical hit pattern: True with probability c(xy) (one uniform draw per muon, from ``generator``)."""
        xy = self._prep(xy).detach()
        with torch.no_grad():
            cov = self.coverage(xy)
        u = torch.rand(len(xy), generator=generator, dtype=cov.dtype, device=cov.device)
        return u < cov

    def get_resolution(self, xy: Tensor, mask: Tensor | None = None) -> Tensor:
        """(N, 2) resolution [1/m] at ``xy`` (N, 2) [m]: res0 * c(xy) per axis (floored), or in realistic evaluation
        res0 where ``mask`` (N,) (default ``get_xy_mask``) and 0 elsewhere."""
        xy = self._prep(xy)
        if self._realistic():
            if mask is None:
                mask = self.get_xy_mask(xy)
            hit = mask.reshape(-1, 1).expand(-1, 2)
            return torch.where(hit, self.resolution.expand_as(xy), torch.zeros_like(xy))
        return (self.resolution * self.coverage(xy)).clamp_min(RES_EFF_FLOOR).unsqueeze(-1).expand(-1, 2)

    def get_efficiency(self, xy: Tensor, mask: Tensor | None = None, as_2d: bool = False) -> Tensor:
        """Efficiency (N,) at ``xy`` (N, 2) [m] ((N, 1) if ``as_2d``): eff0 * c(xy) (floored), or in realistic
        evaluation eff0 where ``mask`` (N,) (default ``get_xy_mask``) and 0 elsewhere."""
        xy = self._prep(xy)
        if self._realistic():
            if mask is None:
                mask = self.get_xy_mask(xy)
            eff = torch.where(mask, self.efficiency.expand(len(xy)), torch.zeros(len(xy), dtype=xy.dtype, device=xy.device))
        else:
            eff = (self.efficiency * self.coverage(xy)).clamp_min(RES_EFF_FLOOR)
        return eff.reshape(-1, 1) if as_2d else eff

    def get_hits(self, mu: MuonBatch, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Hits of the muons of ``mu`` (a ``MuonBatch`` at the plane's z) as (N, k) tensors, as ``DetectorPanel.get_hits``.

        ``reco_xyz`` = (x + N(0,1)/res_x, y + N(0,1)/res_y, z) [m]; ``gen_xyz`` = true (x, y, z); ``unc_xyz`` =
        (1/res_x, 1/res_y, 0) [m]; ``eff`` (N, 1). In realistic evaluation the hit pattern is drawn first
        (``draw_hit_mask``); muons without a hit get reco = +-inf and unc = inf. Random numbers come from ``generator``.
        """
        xy = self._prep(mu.xy.detach())
        n = len(xy)
        mask = self.draw_hit_mask(xy, generator) if self._realistic() else None
        res = self.get_resolution(xy, mask)
        noise = torch.randn((n, 2), generator=generator, dtype=xy.dtype, device=xy.device)
        reco_xy = xy + noise / res
        if mask is not None:
            missed = torch.where(noise >= 0, torch.full_like(reco_xy, math.inf), torch.full_like(reco_xy, -math.inf))
            reco_xy = torch.where(mask.reshape(-1, 1), reco_xy, missed)
        z = self.z.reshape(1, 1).expand(n, 1)
        return {
            "reco_xyz": torch.cat([reco_xy, z], dim=1),
            "gen_xyz": torch.cat([xy, z], dim=1),
            "unc_xyz": torch.cat([1 / res, torch.zeros_like(z)], dim=1),
            "eff": self.get_efficiency(xy, mask, as_2d=True),
        }

    # ------------------------------------------------------------------ constraints
    def clamp_params(
        self,
        musigz_low: Sequence[float] | Tensor,
        musigz_high: Sequence[float] | Tensor,
        generator: torch.Generator | None = None,
    ) -> None:
        """Clamp in place to the box ``musigz_low`` .. ``musigz_high`` (x, y, z) [m]: centres ``mu`` into the xy box,
        widths ``sig`` into ``SIG_RANGE`` times the box's xy extent, amplitudes ``norm`` into ``NORM_RANGE``, and ``z``
        into (low_z, high_z) shrunk by a jitter U(0, 1e-3) m (at most a quarter of the range) at each end."""
        low = _vec("musigz_low", musigz_low, 3).to(self.device)
        high = _vec("musigz_high", musigz_high, 3).to(self.device)
        if bool((high < low).any()):
            raise ValueError(f"musigz_high must be >= musigz_low element-wise, got {low.tolist()} and {high.tolist()}")
        ext = (high[:2] - low[:2]).clamp_min(1e-6)
        with torch.no_grad():
            self.mu.copy_(torch.maximum(torch.minimum(self.mu, high[:2]), low[:2]))
            self.sig.copy_(torch.maximum(torch.minimum(self.sig, ext * SIG_RANGE[1]), ext * SIG_RANGE[0]))
            self.norm.clamp_(*NORM_RANGE)
            jit_max = min(1e-3, float(high[2] - low[2]) / 4)
            gen_dev = self.device if generator is None else generator.device
            eps = torch.rand(2, generator=generator, dtype=DEFAULT_DTYPE, device=gen_dev).to(self.device) * jit_max
            self.z.copy_(self.z.clamp(float(low[2] + eps[0]), float(high[2] - eps[1])))

    def forward(self, *args: Any, **kwargs: Any) -> None:  # noqa: D401
        """Heat maps are not called; use ``get_hits``."""
        raise NotImplementedError("DetectorHeatMap is not called directly; use get_hits(mu)")

    # ------------------------------------------------------------------ drawing
    def map_grid(
        self, *, xlim: tuple[float, float] | None = None, ylim: tuple[float, float] | None = None, n_bins: int = 100
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``(x_edges, y_edges, coverage)``: bin edges (n_bins + 1,) [m] and the (n_bins, n_bins) coverage at the bin
        centres (x index first). Default limits: the centres +- 3 widths."""
        with torch.no_grad():
            mu, sig = self.mu.detach(), self.sig.detach()
            lo, hi = (mu - 3 * sig).min(0).values, (mu + 3 * sig).max(0).values
            xl = xlim if xlim is not None else (float(lo[0]), float(hi[0]))
            yl = ylim if ylim is not None else (float(lo[1]), float(hi[1]))
            xe = torch.linspace(xl[0], xl[1], n_bins + 1, dtype=DEFAULT_DTYPE, device=self.device)
            ye = torch.linspace(yl[0], yl[1], n_bins + 1, dtype=DEFAULT_DTYPE, device=self.device)
            xc, yc = (xe[1:] + xe[:-1]) / 2, (ye[1:] + ye[:-1]) / 2
            grid = torch.stack(torch.meshgrid(xc, yc, indexing="ij"), dim=-1).reshape(-1, 2)
            cov = self.coverage(grid).reshape(n_bins, n_bins)
        return xe.cpu(), ye.cpu(), cov.cpu()

    def plot_map(
        self,
        bpixelate: bool = False,
        bsavefig: bool = False,
        filename: str | Path | None = None,
        *,
        xlim: tuple[float, float] | None = None,
        ylim: tuple[float, float] | None = None,
        title: str | None = None,
    ) -> Figure:
        """Figure of the coverage map c(x, y) (colour, 0 to 1) with the component centres (crosses) and 1-sigma
        ellipses. ``bpixelate``: coarse 20 x 20 pixels instead of a smooth 100 x 100 map. ``bsavefig``: also save it to
        ``filename`` (required then). Returns the figure (no pyplot state)."""
        from matplotlib.figure import Figure
        from matplotlib.patches import Ellipse

        if bsavefig and filename is None:
            raise ValueError("filename must be given when bsavefig is True")
        xe, ye, cov = self.map_grid(xlim=xlim, ylim=ylim, n_bins=20 if bpixelate else 100)
        fig = Figure(figsize=(6, 5))
        ax = fig.add_subplot(111)
        mesh = ax.pcolormesh(xe.numpy(), ye.numpy(), cov.T.numpy(), vmin=0.0, vmax=1.0, cmap="viridis", shading="flat")
        fig.colorbar(mesh, ax=ax, label="coverage")
        mu, sig = self.mu.detach().cpu().numpy(), self.sig.detach().cpu().numpy()
        ax.scatter(mu[:, 0], mu[:, 1], marker="x", s=12, c="w", linewidths=0.8)
        for (cx, cy), (sx, sy) in zip(mu, sig):
            ax.add_patch(Ellipse((cx, cy), 2 * sx, 2 * sy, fill=False, ec="w", lw=0.5, alpha=0.6))
        ax.set_xlim(float(xe[0]), float(xe[-1]))
        ax.set_ylim(float(ye[0]), float(ye[-1]))
        ax.set_xlabel("x [m]")
        ax.set_ylabel("y [m]")
        ax.set_title(
            title
            if title is not None
            else f"heat map at z = {float(self.z.detach()):.3f} m, cost {float(self.get_cost().detach()):.3g}"
        )
        if bsavefig:
            fig.savefig(str(filename), dpi=100)
        return fig

    def extra_repr(self) -> str:
        return (
            f"z={float(self.z.detach()):.4g}, res={float(self.resolution):.4g}, eff={float(self.efficiency):.4g}, "
            f"cost={float(self.get_cost().detach()):.4g}, budget={None if self.budget is None else float(self.budget.detach())}"
        )
