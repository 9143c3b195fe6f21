"""Experiment design for luminosity scans: named parameter shifts, shift sizes from a target luminosity change.

Shift parameters (``delta`` is the applied offset):

* ``sep_x``, ``sep_y``: beam-1 minus beam-2 offset at the IP, ``sep_u -> sep_u + delta`` [m];
* ``cross_x``, ``cross_y``: full crossing angle, ``cross_u -> cross_u + delta`` [rad];
* ``beta_ratio_x``, ``beta_ratio_y``: beta* asymmetry between the beams, ``beta_u2 -> beta_u2 (1 + delta)`` [-]
  (beam 1 unchanged, so beta_u2/beta_u1 is multiplied by 1 + delta; delta > -1).

The size ``delta`` of each shift solves, for each base configuration separately and at the *nominal* emittances
(all four = ``eps_nominal``, not the unknown true ones),

    g(delta) = L(base shifted by delta) / L(base) - 1 - target = 0        (e.g. target = -0.01: -1 %),

with a bracketed, safeguarded Newton iteration (autograd derivative, bisection fallback), batched over all
(base, parameter) pairs. The side of the root is the one where L moves towards the target first (``+`` on ties).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import torch
from torch import Tensor

from .config import IPConfig
from .model import luminosity

__all__ = [
    "SHIFT_PARAMETERS",
    "NOMINAL_EPS",
    "Design",
    "check_parameters",
    "n_scan_configs",
    "apply_shifts",
    "solve_shifts",
    "design_scan",
]

NOMINAL_EPS: float = 2.3e-6
"""Nominal normalised emittance [m rad]: design point and default start of the inversions."""

SHIFT_PARAMETERS: Mapping[str, str] = MappingProxyType(
    {
        "sep_x": "horizontal offset sep_x + delta [m]",
        "sep_y": "vertical offset sep_y + delta [m]",
        "cross_x": "horizontal full crossing angle cross_x + delta [rad]",
        "cross_y": "vertical full crossing angle cross_y + delta [rad]",
        "beta_ratio_x": "beta*_x2 * (1 + delta), beam 1 unchanged [-]",
        "beta_ratio_y": "beta*_y2 * (1 + delta), beam 1 unchanged [-]",
    }
)
"""Valid shift-parameter names and what a shift ``delta`` does."""

_SEARCH_UNIT = {"sep_x": 1e-9, "sep_y": 1e-9, "cross_x": 1e-10, "cross_y": 1e-10, "beta_ratio_x": 1e-6, "beta_ratio_y": 1e-6}
_N_GRID = 48  # bracket search: |delta| = unit * 2^k, k = 0 .. _N_GRID - 1


def check_parameters(parameters: Sequence[str]) -> tuple[str, ...]:
    """Validate shift-parameter names (``ValueError`` listing the valid ones); returns them as a tuple."""
    if isinstance(parameters, str):
        parameters = (parameters,)
    params = tuple(parameters)
    if not params:
        raise ValueError(f"parameters: need at least one shift parameter; valid names: {', '.join(SHIFT_PARAMETERS)}")
    unknown = [p for p in params if p not in SHIFT_PARAMETERS]
    if unknown:
        raise ValueError(f"parameters: unknown shift parameter(s) {unknown}; valid names: {', '.join(SHIFT_PARAMETERS)}")
    if len(set(params)) != len(params):
        raise ValueError(f"parameters: duplicate names in {list(params)}")
    return params


def apply_shifts(config: IPConfig, parameters: Sequence[str], offsets: Tensor) -> IPConfig:
    """``config`` with shifts applied: ``offsets`` (..., P) holds one delta per name in ``parameters`` (length P).

    The result's batch shape is the broadcast of ``config.batch_shape`` and ``offsets.shape[:-1]``.
    """
    params = check_parameters(parameters)
    if offsets.shape[-1] != len(params):
        raise ValueError(f"offsets: last dimension {offsets.shape[-1]} != number of parameters {len(params)}")
    p = config.to_tensors(device=offsets.device)
    changes: dict[str, Tensor] = {}
    for i, name in enumerate(params):
        d = offsets[..., i]
        if name.startswith("beta_ratio_"):
            field = f"beta_{name[-1]}2"
            changes[field] = changes.get(field, p[field]) * (1.0 + d)
        else:
            changes[name] = changes.get(name, p[name]) + d
    return config.replace(**changes)


def _as_batched(bases: IPConfig | Sequence[IPConfig], device: torch.device | None) -> IPConfig:
    """Base configurations as one IPConfig with tensor fields of shape (n_bases,) (a list is stacked)."""
    if isinstance(bases, IPConfig):
        shape = bases.batch_shape
        if len(shape) == 0:
            return IPConfig.stack([bases], device=device)
        if len(shape) != 1:
            raise ValueError(f"bases: a batched IPConfig must have batch shape (n_bases,), got {tuple(shape)}")
        return IPConfig(**{k: v.expand(shape).clone() for k, v in bases.to_tensors(device=device).items()})
    bases = list(bases)
    if not bases:
        raise ValueError("bases: need at least one base configuration")
    return IPConfig.stack(bases, device=device)


def _nominal(device: torch.device | None, eps_nominal: float) -> Tensor:
    if not eps_nominal > 0:
        raise ValueError(f"eps_nominal must be > 0 m rad, got {eps_nominal!r}")
    return torch.full((4,), float(eps_nominal), dtype=torch.float64, device=device)


def solve_shifts(
    bases: IPConfig | Sequence[IPConfig],
    parameters: Sequence[str],
    *,
    target: float = -0.01,
    eps_nominal: float = NOMINAL_EPS,
    max_iter: int = 100,
    device: str | torch.device | None = None,
) -> Tensor:
    """Shift sizes (n_bases, P) with L(base + delta e_p) / L(base) - 1 = ``target`` at nominal emittances.

    Raises ``ValueError`` if ``target`` is 0, not finite, <= -1, or not reachable for some (base, parameter).
    """
    params = check_parameters(parameters)
    target = float(target)
    if not (target == target and abs(target) != float("inf")) or target == 0.0 or target <= -1.0:
        raise ValueError(f"target: relative luminosity change must be finite, non-zero and > -1, got {target!r}")
    dev = torch.device(device) if device is not None else None
    base = _as_batched(bases, dev)
    nb, npar = base.batch_shape[0], len(params)
    eps = _nominal(dev, eps_nominal)
    l0 = luminosity(base, eps, device=dev)  # (nb,)
    eye = torch.eye(npar, dtype=torch.float64, device=dev)
    unit = torch.tensor([_SEARCH_UNIT[p] for p in params], dtype=torch.float64, device=dev)
    ratio_cap = torch.tensor(
        [-0.99 if p.startswith("beta_ratio_") else -float("inf") for p in params], dtype=torch.float64, device=dev
    )

    def g(delta: Tensor) -> Tensor:  # delta (..., nb, P) -> (..., nb, P); column p shifts parameter p only
        cfg = apply_shifts(
            base.replace(**{k: v[:, None] for k, v in base.to_tensors(device=dev).items()}), params, delta[..., None] * eye
        )
        return luminosity(cfg, eps, device=dev) / l0[:, None] - 1.0 - target

    # bracket: scan |delta| = unit 2^k on both sides, take the first sign change (smaller |delta| wins, + on ties)
    k = torch.arange(_N_GRID, dtype=torch.float64, device=dev)
    mags = unit * (2.0**k)[:, None, None]  # (G, 1, P)
    found = []
    for side in (1.0, -1.0):
        grid = torch.maximum(side * mags.expand(_N_GRID, nb, npar), ratio_cap)
        with torch.no_grad():
            flip = (g(grid) * (-target)) <= 0  # sign differs from g(0) = -target
        none = torch.full_like(flip[0], _N_GRID, dtype=torch.int64)
        found.append((torch.where(flip.any(0), flip.to(torch.int64).argmax(0), none), grid))
    (first_pos, grid_pos), (first_neg, grid_neg) = found
    take_neg = first_neg < first_pos
    first = torch.where(take_neg, first_neg, first_pos)
    grid = torch.where(take_neg, grid_neg, grid_pos)
    if bool((first >= _N_GRID).any()):
        bi, pi = (first >= _N_GRID).nonzero()[0].tolist()
        raise ValueError(
            f"target: a relative luminosity change of {target:+g} is not reachable by shifting "
            f"{params[pi]!r} of base configuration {bi}"
        )
    hi = grid.gather(0, first[None]).squeeze(0)
    lo = grid.gather(0, (first - 1).clamp_min(0)[None]).squeeze(0)
    lo = torch.where(first == 0, torch.zeros_like(lo), lo)
    g_lo = torch.where(first == 0, torch.full_like(lo, -target), g(lo).detach())
    x = hi.clone()
    for _ in range(max_iter):
        xg = x.detach().requires_grad_(True)
        with torch.enable_grad():
            gx = g(xg)
            (dg,) = torch.autograd.grad(gx.sum(), xg)
        gx = gx.detach()
        same = torch.sign(gx) == torch.sign(g_lo)
        lo, g_lo = torch.where(same, x, lo), torch.where(same, gx, g_lo)
        hi = torch.where(same, hi, x)
        newton = x - gx / dg
        inside = torch.isfinite(newton) & ((newton - lo) * (newton - hi) < 0)
        x_new = torch.where(inside, newton, 0.5 * (lo + hi))
        done = (gx.abs() <= 4e-16) | ((x_new - x).abs() <= 1e-15 * x.abs())
        x = torch.where(gx == 0, x, x_new)
        if bool(done.all()):
            break
    return x.detach()


@dataclass(frozen=True)
class Design:
    """A set of measurement configurations.

    ``config``: batched :class:`IPConfig`, fields of shape (M,); ``labels``: M strings; ``parameters``: shift names
    (P); ``shifts``: (n_bases, P) solved delta per base configuration; ``offsets``: (M, P) applied shift per
    configuration; ``base_index``: (M,) int64 index of each configuration's base; ``target``: design luminosity change.
    """

    config: IPConfig
    labels: tuple[str, ...]
    parameters: tuple[str, ...]
    shifts: Tensor
    offsets: Tensor
    base_index: Tensor
    target: float

    @property
    def n_configs(self) -> int:
        """Number of measurement configurations M."""
        return len(self.labels)


def n_scan_configs(n_bases: int, n_parameters: int, n_shifts: int, product: bool) -> int:
    """Configurations M of ``design_scan``: per (base, parameter) 2 points if ``n_shifts`` is 1, else 0 and ``n_shifts``
    non-zero points (``n_shifts`` with the odd-count centre dropped); per base their tensor product (``product``) or
    the base point plus every parameter's non-zero points."""
    pts = 2 if n_shifts == 1 else (n_shifts if n_shifts % 2 == 1 else n_shifts + 1)
    per_base = pts**n_parameters if product else 1 + (pts - 1) * n_parameters
    return n_bases * per_base


def _points(delta: Tensor, n_shifts: int) -> Tensor:
    """Offsets for one (base, parameter): {0, delta} if n_shifts == 1, else {0} + linspace(-delta, delta, n)."""
    if n_shifts == 1:
        return torch.stack([torch.zeros_like(delta), delta])
    pts = torch.linspace(-1.0, 1.0, n_shifts, dtype=torch.float64, device=delta.device) * delta
    pts = pts[pts != 0] if n_shifts % 2 == 1 else pts
    return torch.cat([torch.zeros_like(delta)[None], pts])


def design_scan(
    bases: IPConfig | Sequence[IPConfig],
    parameters: Sequence[str],
    *,
    target: float = -0.01,
    n_shifts: int = 1,
    product: bool = False,
    eps_nominal: float = NOMINAL_EPS,
    shifts: Tensor | None = None,
    device: str | torch.device | None = None,
) -> Design:
    """Measurement configurations for one or more base configurations (IPs).

    Per base and parameter the offsets are {0, delta} (``n_shifts`` = 1) or {0} + linspace(-delta, delta, n_shifts)
    (n_shifts + 1 points, or n_shifts if odd), delta from :func:`solve_shifts` (or given as ``shifts`` (n_bases, P)).
    ``product=False``: the unshifted base plus one configuration per (parameter, non-zero offset);
    ``product=True``: the tensor product of all parameters' offsets, (n_shifts + 1)^P per base (e.g. 4 * 7^4 = 9604
    for 4 bases, 4 parameters, n_shifts = 6). Configurations are ordered base-major.
    """
    params = check_parameters(parameters)
    if not isinstance(n_shifts, int) or n_shifts < 1:
        raise ValueError(f"n_shifts must be a positive integer, got {n_shifts!r}")
    dev = torch.device(device) if device is not None else None
    base = _as_batched(bases, dev)
    nb, npar = base.batch_shape[0], len(params)
    if shifts is None:
        shifts = solve_shifts(base, params, target=target, eps_nominal=eps_nominal, device=dev)
    shifts = torch.as_tensor(shifts, dtype=torch.float64, device=dev)
    if shifts.shape != (nb, npar):
        raise ValueError(f"shifts must have shape (n_bases, P) = ({nb}, {npar}), got {tuple(shifts.shape)}")
    offsets, index = [], []
    for b in range(nb):  # design construction only (tiny), not a hot path
        pts = [_points(shifts[b, p], n_shifts) for p in range(npar)]
        if product:
            off = torch.cartesian_prod(*pts) if npar > 1 else pts[0][:, None]
        else:
            rows = [torch.zeros(npar, dtype=torch.float64, device=dev)]
            for p in range(npar):
                for v in pts[p][1:]:
                    row = torch.zeros(npar, dtype=torch.float64, device=dev)
                    row[p] = v
                    rows.append(row)
            off = torch.stack(rows)
        offsets.append(off)
        index.append(torch.full((off.shape[0],), b, dtype=torch.int64, device=dev))
    offsets_t, index_t = torch.cat(offsets), torch.cat(index)
    fields = {k: v[index_t] for k, v in base.to_tensors(device=dev).items()}
    config = apply_shifts(base.replace(**fields), params, offsets_t)
    labels = tuple(
        f"ip{int(b)}:" + ",".join(f"{n}={float(v):+.4g}" for n, v in zip(params, row))
        for b, row in zip(index_t.tolist(), offsets_t.cpu())
    )
    return Design(
        config=config,
        labels=labels,
        parameters=params,
        shifts=shifts,
        offsets=offsets_t,
        base_index=index_t,
        target=float(target),
    )
