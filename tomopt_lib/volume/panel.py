"""Infinitely thin rectangular detector panels with a differentiable resolution / efficiency model.

A panel is centred at the learnable ``xy`` (2,) [m] and ``z`` (1,) [m] and has a learnable full width ``xy_span`` (2,) [m].
In training mode (or with ``realistic_validation=False``) every muon gets a hit, with a resolution and efficiency that
fall off smoothly with the distance to the panel centre, so that hits are differentiable w.r.t. the panel parameters:

* ``DetectorPanel`` (Gaussian): per axis ``f = exp(-d^2 / (2 s^2))`` with ``d = xy - centre`` and ``s = span / 4``;
  ``res = res0 * f`` per axis [1/m], ``eff = eff0 * f_x * f_y``.
* ``SigmoidDetectorPanel``: per axis ``f = sigmoid((1 - |d| / (span / 2)) / smooth) / sigmoid(1 / smooth)``.

Both are floored at 1e-10. In evaluation mode with ``realistic_validation=True`` the panel is physical: ``res0`` and
``eff0`` inside the rectangle, zero outside (reconstructed hits and uncertainties become infinite there), and reconstructed
hits of muons inside are clamped to the rectangle.

Cost = ``m2_cost * span_x * span_y`` (scaled spans). In fixed-budget mode the effective span is
``xy_span * sqrt(budget / (m2_cost * span_x * span_y))``, so ``xy_span`` only sets the aspect ratio and the cost always
equals the budget.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from ..checks import check_number, check_vector
from ..runtime import DEFAULT_DTYPE, DeviceLike, resolve_device

if TYPE_CHECKING:
    from ..muon.muon_batch import MuonBatch

__all__ = ["DetectorPanel", "SigmoidDetectorPanel", "RES_EFF_FLOOR"]

RES_EFF_FLOOR: float = 1e-10
"""Lower bound of the modelled resolution [1/m] and efficiency (keeps 1/res finite)."""

Number = float | int | Tensor


def _scalar(name: str, value: Number, *, unit: str, high: float | None = None) -> float:
    """``value`` as a float > 0 (and <= ``high``): :func:`~tomopt_lib.checks.check_number`."""
    return check_number(name, value, low=0.0, low_open=True, high=high, unit=unit)


def _vector(name: str, value: Sequence[float] | Tensor, n: int, *, positive: bool = False) -> Tensor:
    """:func:`~tomopt_lib.checks.check_vector` in the default dtype."""
    return check_vector(name, value, n, positive=positive, dtype=DEFAULT_DTYPE)


class DetectorPanel(nn.Module):
    """Rectangular panel with a Gaussian resolution / efficiency model in training.

    Args:
        res: nominal resolution [1/m] (> 0); a hit is smeared by N(0, 1) / res per axis.
        eff: nominal efficiency, in (0, 1].
        init_xyz: initial centre (x, y, z) [m] in the volume frame.
        init_xy_span: initial full widths (x, y) [m], > 0.
        m2_cost: cost per square metre (> 0).
        budget: optional fixed cost (> 0) of the panel (fixed-budget mode, see ``assign_budget``).
        realistic_validation: use the physical (step-function) panel in evaluation mode.
        device: device of the parameters and buffers.
    """

    type_label = "panel"
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
        realistic_validation: bool = True,
        device: DeviceLike = None,
    ) -> None:
        super().__init__()
        self.device = resolve_device(device)
        res_v = _scalar("res", res, unit="(resolution in 1/m)")
        eff_v = _scalar("eff", eff, unit="(hit efficiency)", high=1.0)
        cost_v = _scalar("m2_cost", m2_cost, unit="(cost per m^2)")
        xyz = _vector("init_xyz", init_xyz, 3)
        span = _vector("init_xy_span", init_xy_span, 2, positive=True)
        self.realistic_validation = bool(realistic_validation)
        opts: dict[str, Any] = dict(dtype=DEFAULT_DTYPE, device=self.device)
        self.xy = nn.Parameter(xyz[:2].to(self.device))
        self.z = nn.Parameter(xyz[2:].to(self.device))
        self.xy_span = nn.Parameter(span.to(self.device))
        self.register_buffer("resolution", torch.tensor(res_v, **opts))
        self.register_buffer("efficiency", torch.tensor(eff_v, **opts))
        self.register_buffer("m2_cost", torch.tensor(cost_v, **opts))
        self.budget: Tensor | None = None
        self.assign_budget(budget)

    # ------------------------------------------------------------------ geometry
    @property
    def x(self) -> Tensor:
        """Centre x [m] (0-d view of ``xy``)."""
        return self.xy[0]

    @property
    def y(self) -> Tensor:
        """Centre y [m] (0-d view of ``xy``)."""
        return self.xy[1]

    @property
    def budget_scale(self) -> Tensor:
        """Span multiplier sqrt(budget / (m2_cost * prod(xy_span))); 1 outside fixed-budget mode."""
        if self.budget is None:
            return torch.ones((), dtype=self.xy_span.dtype, device=self.xy_span.device)
        return torch.sqrt(self.budget / (self.m2_cost * self.xy_span.prod()))

    def get_scaled_xy_span(self) -> Tensor:
        """Effective full widths (2,) [m]: ``xy_span``, or ``xy_span * budget_scale`` in fixed-budget mode."""
        if self.budget is None:
            return self.xy_span
        return self.xy_span * self.budget_scale

    def assign_budget(self, budget: Number | None = None) -> None:
        """Fix the cost of the panel to ``budget`` (> 0, may carry gradient); ``None`` leaves fixed-budget mode.

        The scale is recomputed from the current ``xy_span`` on every use, so it never goes stale after an update.
        """
        if budget is None:
            self.budget = None
            return
        _scalar("budget", budget, unit="(panel cost in currency units)")
        b = torch.as_tensor(budget, dtype=DEFAULT_DTYPE, device=self.device).reshape(())
        self.budget = b

    def get_cost(self) -> Tensor:
        """Cost = m2_cost * span_x * span_y (0-d tensor; equals the budget in fixed-budget mode)."""
        return self.m2_cost * self.get_scaled_xy_span().prod()

    def get_xy_mask(self, xy: Tensor) -> Tensor:
        """(N,) True where ``xy`` (N, 2) [m] lies inside the physical rectangle (edges included)."""
        half = self.get_scaled_xy_span().detach() / 2
        d = (xy.detach().to(half.dtype) - self.xy.detach()).abs()
        return (d <= half).all(dim=-1)

    def get_gauss(self) -> torch.distributions.Normal:
        """Uncorrelated 2-D normal centred on the panel with sigma = scaled span / 4 per axis."""
        return torch.distributions.Normal(self.xy, self.get_scaled_xy_span() / 4)

    # ------------------------------------------------------------------ response model
    def _realistic(self) -> bool:
        return self.realistic_validation and not self.training

    def _profile(self, xy: Tensor) -> Tensor:
        """(N, 2) per-axis fraction of the nominal response: Gaussian exp(-d^2 / (2 s^2)), s = span / 4."""
        sigma = self.get_scaled_xy_span() / 4
        return torch.exp(-0.5 * ((xy - self.xy) / sigma) ** 2)

    def _prep(self, xy: Tensor) -> Tensor:
        xy = torch.as_tensor(xy, device=self.xy.device).to(self.xy.dtype)
        return xy.reshape(-1, 2)

    def get_resolution(self, xy: Tensor, mask: Tensor | None = None) -> Tensor:
        """(N, 2) resolution [1/m] at ``xy`` (N, 2) [m]; ``mask`` (N,) = inside the panel (realistic eval only)."""
        xy = self._prep(xy)
        if self._realistic():
            if mask is None:
                mask = self.get_xy_mask(xy)
            inside = mask.reshape(-1, 1).expand(-1, 2)
            return torch.where(inside, self.resolution.expand_as(xy), torch.zeros_like(xy))
        return (self.resolution * self._profile(xy)).clamp_min(RES_EFF_FLOOR)

    def get_efficiency(self, xy: Tensor, mask: Tensor | None = None, as_2d: bool = False) -> Tensor:
        """Efficiency (N,) at ``xy`` (N, 2) [m] (shape (N, 1) if ``as_2d``); product of the two axis profiles."""
        xy = self._prep(xy)
        if self._realistic():
            if mask is None:
                mask = self.get_xy_mask(xy)
            eff = torch.where(mask, self.efficiency.expand(len(xy)), torch.zeros(len(xy), dtype=xy.dtype, device=xy.device))
        else:
            eff = (self.efficiency * self._profile(xy).prod(dim=-1)).clamp_min(RES_EFF_FLOOR)
        return eff.reshape(-1, 1) if as_2d else eff

    def get_hits(self, mu: MuonBatch, generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Hits of the muons of ``mu`` (a ``MuonBatch`` at the panel z) as (N, k) tensors.

        ``reco_xyz`` = (x + N(0,1)/res_x, y + N(0,1)/res_y, z_panel) [m]; ``gen_xyz`` = true (x, y, z_panel);
        ``unc_xyz`` = (1/res_x, 1/res_y, 0) [m]; ``eff`` (N, 1). The noise is drawn from ``generator`` when given.
        """
        xy = self._prep(mu.xy.detach())
        n = len(xy)
        mask = self.get_xy_mask(xy) if self._realistic() else None
        res = self.get_resolution(xy, mask)
        noise = torch.randn((n, 2), generator=generator, dtype=xy.dtype, device=xy.device)
        reco_xy = xy + noise / res
        if mask is not None:
            half = self.get_scaled_xy_span().detach() / 2
            centre = self.xy.detach()
            inside = mask.reshape(-1, 1)
            clamped = torch.maximum(torch.minimum(reco_xy, centre + half), centre - half)
            outside = torch.where(noise >= 0, torch.full_like(reco_xy, math.inf), torch.full_like(reco_xy, -math.inf))
            reco_xy = torch.where(inside, clamped, outside)
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
        xyz_low: Sequence[float] | Tensor,
        xyz_high: Sequence[float] | Tensor,
        generator: torch.Generator | None = None,
    ) -> None:
        """Clamp in place: centre xy into [low, high], z into (low_z, high_z) shrunk by a jitter U(0, 1e-3) m
        (at most a quarter of the range, so that stacked panels do not end up at the same z), and span into
        [high_xy / 20, 10 * high_xy]."""
        low = _vector("xyz_low", xyz_low, 3).to(self.device)
        high = _vector("xyz_high", xyz_high, 3).to(self.device)
        if bool((high < low).any()):
            raise ValueError(f"xyz_high must be >= xyz_low element-wise, got {low.tolist()} and {high.tolist()}")
        with torch.no_grad():
            self.xy.copy_(torch.maximum(torch.minimum(self.xy, high[:2]), low[:2]))
            jit_max = min(1e-3, float(high[2] - low[2]) / 4)
            eps = torch.rand(
                2, generator=generator, dtype=DEFAULT_DTYPE, device=self.device if generator is None else generator.device
            )
            eps = eps.to(self.device) * jit_max
            self.z.copy_(self.z.clamp(float(low[2] + eps[0]), float(high[2] - eps[1])))
            self.xy_span.copy_(torch.maximum(torch.minimum(self.xy_span, high[:2] * 10), high[:2] / 20))

    def forward(self, *args, **kwargs):  # noqa: D401
        """Panels are not called; use ``get_hits``."""
        raise NotImplementedError("DetectorPanel is not called directly; use get_hits(mu)")

    def extra_repr(self) -> str:
        xy, z, span = self.xy.detach().tolist(), float(self.z.detach()), self.get_scaled_xy_span().detach().tolist()
        return (
            f"xy={[round(v, 4) for v in xy]}, z={z:.4g}, span={[round(v, 4) for v in span]}, "
            f"res={float(self.resolution):.4g}, eff={float(self.efficiency):.4g}, budget={None if self.budget is None else float(self.budget.detach())}"
        )


class SigmoidDetectorPanel(DetectorPanel):
    """Panel whose training-mode profile is a sigmoid step per axis (0.5-ish at the edge, ~1 at the centre).

    ``f = sigmoid((1 - |d| / (span / 2)) / smooth) / sigmoid(1 / smooth)``; a smaller ``smooth`` (> 0) gives a sharper edge,
    i.e. a closer approximation of the physical panel. Other arguments as for ``DetectorPanel``.
    """

    _smooth: Tensor  # buffer registered in __init__

    def __init__(
        self,
        *,
        smooth: Number,
        res: Number,
        eff: Number,
        init_xyz: Sequence[float] | Tensor,
        init_xy_span: Sequence[float] | Tensor,
        m2_cost: Number = 1.0,
        budget: Number | None = None,
        realistic_validation: bool = True,
        device: DeviceLike = None,
    ) -> None:
        super().__init__(
            res=res,
            eff=eff,
            init_xyz=init_xyz,
            init_xy_span=init_xy_span,
            m2_cost=m2_cost,
            budget=budget,
            realistic_validation=realistic_validation,
            device=device,
        )
        s = _scalar("smooth", smooth, unit="(sigmoid smoothness)")
        self.register_buffer("_smooth", torch.tensor(s, dtype=DEFAULT_DTYPE, device=self.device))

    @property
    def smooth(self) -> Tensor:
        """Sigmoid smoothness (0-d tensor, > 0)."""
        return self._smooth

    @smooth.setter
    def smooth(self, value: Number) -> None:
        s = _scalar("smooth", value, unit="(sigmoid smoothness)")
        self._smooth.fill_(s)

    def sig_model(self, xy: Tensor) -> Tensor:
        """(N, 2) per-axis fraction of the nominal response at ``xy`` (N, 2) [m]."""
        half = self.get_scaled_xy_span() / 2
        delta = (self._prep(xy) - self.xy) / half
        return torch.sigmoid((1 - delta.abs()) / self._smooth) / torch.sigmoid(1 / self._smooth)

    def _profile(self, xy: Tensor) -> Tensor:
        return self.sig_model(xy)
