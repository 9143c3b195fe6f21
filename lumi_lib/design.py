"""Experiment design for luminosity scans: named parameter shifts, shift sizes from target luminosity changes.

Shift parameters (``delta`` is the applied offset; "both beams" shifts the beam-1 and beam-2 fields together, as the
reference does):

* ``sep_x``, ``sep_y``: beam-1 minus beam-2 offset at the IP, ``sep_u -> sep_u + delta`` [m];
* ``cross_x``, ``cross_y``: full crossing angle, ``cross_u -> cross_u + delta`` [rad];
* ``beta_ratio_x``, ``beta_ratio_y``: beta* asymmetry between the beams, ``beta_u2 -> beta_u2 (1 + delta)`` [-]
  (beam 1 unchanged, so beta_u2/beta_u1 is multiplied by 1 + delta; delta > -1);
* ``beta_x``, ``beta_y`` (both beams) and ``beta_x1``, ``beta_y1``, ``beta_x2``, ``beta_y2`` (one beam):
  ``beta* -> beta* (1 + delta)`` [-];
* ``alpha_x``, ``alpha_y``: ``alpha*_u1, alpha*_u2 -> + delta`` (both beams) [-];
* ``sigma_z``: bunch length of both beams ``x (1 + delta)`` [-]; ``energy``: both beam energies ``x (1 + delta)``
  [-] (kept above the proton mass); ``intensity``: n1 and n2 ``x (1 + delta)`` [-] (L scales as (1 + delta)^2 and
  carries no emittance information: allowed for completeness);
* ``dpp``: momentum spread of both beams ``+ delta`` (kept >= 0) [-]; ``disp_x``, ``disp_y``: D*_u of both beams
  ``+ delta`` [m] (no effect unless dpp > 0).

The size ``delta`` of each shift solves, for each base configuration separately and at the *nominal* emittances
(all four = ``eps_nominal``, not the unknown true ones),

    g(delta) = L(base shifted by delta) / L(base) - 1 - target = 0        (e.g. target = -0.01: -1 %),

with a bracketed, safeguarded Newton iteration (autograd derivative, bisection fallback), batched over all
(base, parameter) pairs. The side of the root is the one where L moves towards the target first (``+`` on ties).
A design may use several targets per parameter (each gives its own shift sizes and scan points).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType

import torch
from torch import Tensor

from .config import IPConfig
from .constants import PROTON_MASS_GEV
from .model import luminosity
from .scan_labels import ScanLabels

__all__ = [
    "SHIFT_PARAMETERS",
    "NOMINAL_EPS",
    "Design",
    "ScanLabels",
    "check_parameters",
    "check_targets",
    "n_scan_configs",
    "apply_shifts",
    "solve_shifts",
    "design_scan",
]

NOMINAL_EPS: float = 2.3e-6
"""Nominal normalised emittance [m rad]: design point and default start of the inversions."""


@dataclass(frozen=True)
class _Shift:
    """How a shift parameter acts: ``kind`` "add" (field + delta), "scale" (field (1 + delta)) or "add_nonneg"
    (field + delta, kept >= 0) on every field in ``fields``; ``unit``: smallest |delta| of the bracket search."""

    fields: tuple[str, ...]
    kind: str
    unit: float
    text: str


def _both(stem: str) -> tuple[str, str]:
    return (f"{stem}1", f"{stem}2")


_SHIFTS: dict[str, _Shift] = {
    "sep_x": _Shift(("sep_x",), "add", 1e-9, "horizontal offset sep_x + delta [m]"),
    "sep_y": _Shift(("sep_y",), "add", 1e-9, "vertical offset sep_y + delta [m]"),
    "cross_x": _Shift(("cross_x",), "add", 1e-10, "horizontal full crossing angle cross_x + delta [rad]"),
    "cross_y": _Shift(("cross_y",), "add", 1e-10, "vertical full crossing angle cross_y + delta [rad]"),
    "beta_ratio_x": _Shift(("beta_x2",), "scale", 1e-6, "beta*_x2 * (1 + delta), beam 1 unchanged [-]"),
    "beta_ratio_y": _Shift(("beta_y2",), "scale", 1e-6, "beta*_y2 * (1 + delta), beam 1 unchanged [-]"),
    "beta_x": _Shift(_both("beta_x"), "scale", 1e-6, "beta*_x of both beams * (1 + delta) [-]"),
    "beta_y": _Shift(_both("beta_y"), "scale", 1e-6, "beta*_y of both beams * (1 + delta) [-]"),
    **{
        f"beta_{u}{b}": _Shift((f"beta_{u}{b}",), "scale", 1e-6, f"beta*_{u}{b} * (1 + delta) [-]")
        for b in (1, 2)
        for u in ("x", "y")
    },
    "alpha_x": _Shift(_both("alpha_x"), "add", 1e-7, "alpha*_x of both beams + delta [-]"),
    "alpha_y": _Shift(_both("alpha_y"), "add", 1e-7, "alpha*_y of both beams + delta [-]"),
    "sigma_z": _Shift(_both("sigma_z"), "scale", 1e-6, "bunch length of both beams * (1 + delta) [-]"),
    "energy": _Shift(_both("energy"), "scale", 1e-8, "energy of both beams * (1 + delta) [-]"),
    "intensity": _Shift(("n1", "n2"), "scale", 1e-8, "protons per bunch of both beams * (1 + delta) [-]"),
    "dpp": _Shift(_both("dpp"), "add_nonneg", 1e-9, "momentum spread of both beams + delta, >= 0 [-]"),
    "disp_x": _Shift(_both("disp_x"), "add", 1e-7, "dispersion D*_x of both beams + delta [m]"),
    "disp_y": _Shift(_both("disp_y"), "add", 1e-7, "dispersion D*_y of both beams + delta [m]"),
}

SHIFT_PARAMETERS: Mapping[str, str] = MappingProxyType({name: spec.text for name, spec in _SHIFTS.items()})
"""Valid shift-parameter names and what a shift ``delta`` does."""

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
        spec = _SHIFTS[name]
        for field in spec.fields:
            value = changes.get(field, p[field])
            changes[field] = value * (1.0 + d) if spec.kind == "scale" else value + d
    return config.replace(**changes)


def _lower_caps(base: IPConfig, params: Sequence[str], device: torch.device | None) -> Tensor:
    """(n_bases, P) smallest allowed delta per (base, parameter): > -1 for scalings (energy: above the proton
    mass), -value for the non-negative fields, -inf otherwise."""
    p = base.to_tensors(device=device)
    nb = base.batch_shape[0]
    cols = []
    for name in params:
        spec = _SHIFTS[name]
        cap = torch.full((nb,), -math.inf, dtype=torch.float64, device=device)
        if spec.kind == "scale":
            cap = torch.full_like(cap, -0.99)
            if name == "energy":
                emin = torch.minimum(p["energy1"], p["energy2"]).expand(nb)
                cap = torch.maximum(cap, 1.001 * PROTON_MASS_GEV / emin - 1.0)
        elif spec.kind == "add_nonneg":
            cap = -torch.stack([p[f].expand(nb) for f in spec.fields]).amin(dim=0)
        cols.append(cap)
    return torch.stack(cols, dim=1)


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
    (target,) = check_targets(float(target))
    dev = torch.device(device) if device is not None else None
    base = _as_batched(bases, dev)
    nb, npar = base.batch_shape[0], len(params)
    eps = _nominal(dev, eps_nominal)
    l0 = luminosity(base, eps, device=dev)  # (nb,)
    eye = torch.eye(npar, dtype=torch.float64, device=dev)
    unit = torch.tensor([_SHIFTS[p].unit for p in params], dtype=torch.float64, device=dev)
    ratio_cap = _lower_caps(base, params, dev)  # (nb, P)

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
    (P); ``shifts``: (n_bases, P) solved delta per base configuration (one target) or (n_bases, P, T) (T targets);
    ``offsets``: (M, P) applied shift per configuration; ``base_index``: (M,) int64 index of each configuration's
    base; ``target``: the (first) design luminosity change; ``targets``: all of them.
    """

    config: IPConfig
    labels: Sequence[str]
    parameters: tuple[str, ...]
    shifts: Tensor
    offsets: Tensor
    base_index: Tensor
    target: float
    targets: tuple[float, ...] = ()

    @property
    def n_configs(self) -> int:
        """Number of measurement configurations M."""
        return len(self.labels)


def n_scan_configs(n_bases: int, n_parameters: int, n_shifts: int, product: bool, n_targets: int = 1) -> int:
    """Configurations M of ``design_scan``: per (base, parameter) 0 and, per target, 1 non-zero point if ``n_shifts``
    is 1, else ``n_shifts`` (``n_shifts`` - 1 when odd: the centre is the 0); per base their tensor product
    (``product``) or the base point plus every parameter's non-zero points."""
    nonzero = 1 if n_shifts == 1 else (n_shifts - 1 if n_shifts % 2 == 1 else n_shifts)
    pts = 1 + n_targets * nonzero
    per_base = pts**n_parameters if product else 1 + (pts - 1) * n_parameters
    return n_bases * per_base


def check_targets(target: float | Sequence[float]) -> tuple[float, ...]:
    """Target relative luminosity changes as a tuple (one or more, distinct); ``ValueError`` naming ``target``."""
    targets = (float(target),) if isinstance(target, (int, float)) else tuple(float(t) for t in target)
    if not targets:
        raise ValueError("target: need at least one relative luminosity change")
    for t in targets:
        if not math.isfinite(t) or t == 0.0 or t <= -1.0:
            raise ValueError(f"target: relative luminosity change must be finite, non-zero and > -1, got {t!r}")
    if len(set(targets)) != len(targets):
        raise ValueError(f"target: duplicate values in {list(targets)}")
    return targets


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
    target: float | Sequence[float] = -0.01,
    n_shifts: int = 1,
    product: bool = False,
    eps_nominal: float = NOMINAL_EPS,
    shifts: Tensor | None = None,
    device: str | torch.device | None = None,
) -> Design:
    """Measurement configurations for one or more base configurations (IPs).

    Per base and parameter the offsets are {0, delta} (``n_shifts`` = 1) or {0} + linspace(-delta, delta, n_shifts)
    (n_shifts + 1 points, or n_shifts if odd), delta from :func:`solve_shifts` (or given as ``shifts`` (n_bases, P)).
    Several targets (a sequence): one delta per target, and the non-zero offsets of all targets per parameter
    (``shifts`` then (n_bases, P, T)).
    ``product=False``: the unshifted base plus one configuration per (parameter, non-zero offset);
    ``product=True``: the tensor product of all parameters' offsets, (n_shifts + 1)^P per base (e.g. 4 * 7^4 = 9604
    for 4 bases, 4 parameters, n_shifts = 6). Configurations are ordered base-major.
    """
    params = check_parameters(parameters)
    targets = check_targets(target)
    if not isinstance(n_shifts, int) or n_shifts < 1:
        raise ValueError(f"n_shifts must be a positive integer, got {n_shifts!r}")
    dev = torch.device(device) if device is not None else None
    base = _as_batched(bases, dev)
    nb, npar, nt = base.batch_shape[0], len(params), len(targets)
    if shifts is None:
        solved = [solve_shifts(base, params, target=t, eps_nominal=eps_nominal, device=dev) for t in targets]
        shifts = solved[0] if nt == 1 else torch.stack(solved, dim=-1)
    shifts = torch.as_tensor(shifts, dtype=torch.float64, device=dev)
    want = (nb, npar) if nt == 1 else (nb, npar, nt)
    if shifts.shape != want:
        raise ValueError(f"shifts must have shape (n_bases, P{', T' if nt > 1 else ''}) = {want}, got {tuple(shifts.shape)}")
    per_target = shifts[..., None] if nt == 1 else shifts
    offsets, index = [], []
    for b in range(nb):  # design construction only (tiny), not a hot path
        pts = [
            torch.cat([per_target.new_zeros(1), *(_points(per_target[b, p, t], n_shifts)[1:] for t in range(nt))])
            for p in range(npar)
        ]
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
    caps = _lower_caps(base, params, dev)[index_t]
    if bool((offsets_t < caps).any()):
        m, j = (offsets_t < caps).nonzero()[0].tolist()
        raise ValueError(
            f"n_shifts: the scan point {params[j]}={float(offsets_t[m, j]):+.4g} of base configuration "
            f"{int(index_t[m])} (the mirror -delta of the solved shift) leaves the allowed range (>= {float(caps[m, j]):+.4g}); "
            "use n_shifts: 1 or a smaller |target| for this parameter"
        )
    fields = {k: v[index_t] for k, v in base.to_tensors(device=dev).items()}
    config = apply_shifts(base.replace(**fields), params, offsets_t)
    labels = ScanLabels(params, index_t, offsets_t)
    return Design(
        config=config,
        labels=labels,
        parameters=params,
        shifts=shifts,
        offsets=offsets_t,
        base_index=index_t,
        target=targets[0],
        targets=targets,
    )
