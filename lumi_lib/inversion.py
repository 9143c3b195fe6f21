"""Emittance inversion from luminosity scans: the reference's modes as batched, ready functions.

Modes map K unknowns x to the four emittances eps = x @ P (P: (K, 4), order eps_x1, eps_y1, eps_x2, eps_y2):

* ``"xy"``: (eps_x, eps_y), both beams equal;   * ``"12"``: (eps_1, eps_2), round beams (eps_x = eps_y) per beam;
* ``"xy12"``: all four.

Each inversion minimises sum_m ((L(config_m, x @ P) - C_m) / sigma_m)^2 with sigma = rel_noise * C
(:func:`lumi_lib.solver.solve_lm`), starting from the nominal 2.3e-6 m rad. Inversions are batched (chunks of
``chunk_size``) and independent: a batch gives the same numbers as one-by-one runs.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, cast

import torch
from torch import Tensor

from .config import IPConfig
from .design import NOMINAL_EPS, Design, design_scan
from .measure import DEFAULT_REL_NOISE, check_measurements, measure, measurement_sigma
from .model import luminosity
from .solver import identifiability_message, solve_lm

__all__ = [
    "MODES",
    "PRESETS",
    "InversionResult",
    "mode_matrix",
    "preset_design",
    "invert",
    "invert_measured",
    "penalty_landscape",
]

MODES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {"xy": ("eps_x", "eps_y"), "12": ("eps_1", "eps_2"), "xy12": ("eps_x1", "eps_y1", "eps_x2", "eps_y2")}
)
"""Inversion modes and the names of their unknowns [m rad]."""

_P = {"xy": [[1, 0, 1, 0], [0, 1, 0, 1]], "12": [[1, 1, 0, 0], [0, 0, 1, 1]], "xy12": torch.eye(4).tolist()}

PRESETS: Mapping[str, str] = MappingProxyType(
    {
        "xy_1ip": "1 IP (crossing y) + sep_x shift: 2 configurations (reference inv_gauss_xy)",
        "xy_2ip": "2 IPs (crossing y and x), each + its own sep_x shift: 4 configurations (reference randerr_2)",
        "12_equal": "1 IP (crossing y), equal optics, + sep_x shift: 2 configurations; eps_1 + eps_2 only (degenerate)",
        "12": "crossing y and crossing x with beta*_2 = 0.8 beta*_1, each + {0} U linspace(-d, d, 10) sep_x: 22",
        "xy12": "4 bases (crossing x, y; and both with beta*_2 = 0.98 beta*_1) + one sep_x and sep_y shift each: 12",
        "xy12_last": "the reference's last example: 4 bases x (sep_x, sep_y, cross_x, cross_y) 7^4 product = 9604",
    }
)
"""Ready-made measurement plans (see :func:`preset_design`)."""


def mode_matrix(mode: str, *, device: str | torch.device | None = None) -> tuple[tuple[str, ...], Tensor]:
    """(names of the unknowns, P (K, 4)) for ``mode``; ``ValueError`` listing the valid modes otherwise."""
    if mode not in MODES:
        raise ValueError(f"mode: unknown inversion mode {mode!r}; valid modes: {', '.join(MODES)}")
    return MODES[mode], torch.tensor(_P[mode], dtype=torch.float64, device=device)


def preset_design(name: str, *, target: float = -0.01, device: str | torch.device | None = None) -> Design:
    """The measurement plan ``name`` (one of :data:`PRESETS`), shifts solved at nominal emittances for ``target``."""
    bx, by = IPConfig.lhc_default("x"), IPConfig.lhc_default("y")
    kw: dict[str, Any] = dict(target=target, device=device)
    if name in ("xy_1ip", "12_equal"):
        return design_scan([by], ["sep_x"], **kw)
    if name == "xy_2ip":
        return design_scan([by, bx], ["sep_x"], **kw)
    if name == "12":
        return design_scan([by, bx.replace(beta_x2=0.24, beta_y2=0.24)], ["sep_x"], n_shifts=10, **kw)
    asym = dict(beta_x2=0.294, beta_y2=0.294)
    bases = [bx, by, bx.replace(**asym), by.replace(**asym)]
    if name == "xy12":
        return design_scan(bases, ["sep_x", "sep_y"], **kw)
    if name == "xy12_last":
        return design_scan(bases, ["sep_x", "sep_y", "cross_x", "cross_y"], n_shifts=6, product=True, **kw)
    raise ValueError(f"name: unknown preset design {name!r}; valid presets: {', '.join(PRESETS)}")


@dataclass(frozen=True)
class InversionResult:
    """Batched inversion outcome (leading dimension B). Emittances in m rad.

    ``estimate`` (B, K); ``eps`` (B, 4) = estimate @ P; ``truth`` (B, K) or None; ``rel_error`` (B, K) =
    (estimate - truth) / truth or None; ``std`` (B, K) and ``cov`` (B, K, K) from (J^T W J)^-1; ``residual_norm`` (B,)
    = |(L - C) / sigma|_2; ``iterations`` (B,); ``converged`` (B,) bool; ``cond`` (B,) Jacobian condition number
    (scaled unknowns); ``measured`` (B, M); ``path`` (n_iter + 1, B, K) iterates or None; ``null_direction`` (B, K)
    least-determined direction (unit vector, scaled unknowns) or None.
    """

    mode: str
    names: tuple[str, ...]
    estimate: Tensor
    eps: Tensor
    truth: Tensor | None
    rel_error: Tensor | None
    std: Tensor
    cov: Tensor
    residual_norm: Tensor
    iterations: Tensor
    converged: Tensor
    cond: Tensor
    measured: Tensor
    path: Tensor | None = None
    null_direction: Tensor | None = None

    def identifiability_warning(self, threshold: float) -> str | None:
        """:func:`lumi_lib.solver.identifiability_message` of this result (None if every condition number is
        <= ``threshold`` or no null direction was recorded)."""
        if self.null_direction is None:
            return None
        return identifiability_message(self.cond.detach().cpu(), self.null_direction.detach().cpu(), self.names, threshold)

    def as_dict(self) -> dict[str, object]:
        """Field name -> value (tensors not copied)."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


def _default_chunk(n_configs: int) -> int:
    return max(1, int(2_000_000 // max(1, n_configs * 112)))


def invert_measured(
    mode: str,
    measured: Tensor,
    *,
    design: Design,
    rel_noise: float = DEFAULT_REL_NOISE,
    x0: float | Tensor = NOMINAL_EPS,
    lower: float | Tensor = 0.25 * NOMINAL_EPS,
    upper: float | Tensor = 4.0 * NOMINAL_EPS,
    truth: Tensor | None = None,
    chunk_size: int | None = None,
    max_iter: int = 50,
    jacobian: str = "reverse",
    cond_warn: float = 1e8,
    record_path: bool = False,
    device: str | torch.device | None = None,
) -> InversionResult:
    """Invert measured luminosities ``measured`` (B, M) [cm^-2 s^-1] of ``design`` (M configurations).

    ``rel_noise``: relative rms noise of the data (weights sigma = rel_noise * C; 0 = noise-free, weighted with a
    nominal 0.1 %). ``x0``, ``lower``, ``upper``: start and box bounds [m rad] (scalar, (K,) or (B, K)).
    """
    names, pmat = mode_matrix(mode, device=device)
    dev = pmat.device
    meas = check_measurements(torch.as_tensor(measured, device=dev), name="measured")
    if meas.ndim == 1:
        meas = meas[None]
    if meas.ndim != 2 or meas.shape[1] != design.n_configs:
        raise ValueError(f"measured: expected shape (B, M) with M = {design.n_configs}, got {tuple(meas.shape)}")
    b, k = meas.shape[0], len(names)
    if b == 0:
        raise ValueError("measured: no rows to invert (shape (0, M)); pass at least one measurement set (B >= 1)")
    x0_t = torch.as_tensor(x0, dtype=torch.float64, device=dev).expand(b, k).clone()
    if not bool((x0_t > 0).all()):
        raise ValueError(f"x0: start emittances must be > 0 m rad, got min {x0_t.min().item()!r}")
    lo = torch.as_tensor(lower, dtype=torch.float64, device=dev).expand(b, k)
    hi = torch.as_tensor(upper, dtype=torch.float64, device=dev).expand(b, k)
    if not bool((lo > 0).all()):
        raise ValueError(f"lower: emittance bounds must be > 0 m rad, got min {lo.min().item()!r}")
    sigma = measurement_sigma(meas, rel_noise=rel_noise)
    cfg = design.config.to(dev)

    def predict(x: Tensor, rows: Tensor) -> Tensor:
        return luminosity(cfg, x @ pmat, device=dev)

    chunk = chunk_size or _default_chunk(design.n_configs)
    parts = []
    for s in range(0, b, chunk):  # memory chunks; every chunk is a batched solve
        sl = slice(s, min(b, s + chunk))
        parts.append(
            solve_lm(
                predict,
                x0_t[sl],
                target=meas[sl],
                sigma=sigma[sl],
                scale=NOMINAL_EPS,
                lower=lo[sl],
                upper=hi[sl],
                max_iter=max_iter,
                jacobian=jacobian,
                cond_warn=math.inf,
                names=names,
                record_path=record_path,
            )
        )
    cat = lambda name: torch.cat([getattr(p, name) for p in parts])  # noqa: E731
    cond, null = cat("cond"), cat("null_direction")
    msg = identifiability_message(cond, null, names, cond_warn)
    if msg is not None:
        warnings.warn(msg, UserWarning, stacklevel=2)
    est = cat("x")
    path = None
    if record_path:
        paths = [cast(Tensor, p.path) for p in parts]  # recorded: record_path
        n = max(q.shape[0] for q in paths)
        path = torch.cat([torch.cat([q, q[-1:].expand(n - q.shape[0], -1, -1)]) for q in paths], dim=1)
    tr = None if truth is None else torch.as_tensor(truth, dtype=torch.float64, device=dev).expand(b, k)
    return InversionResult(
        mode=mode,
        names=names,
        estimate=est,
        eps=est @ pmat,
        truth=tr,
        rel_error=None if tr is None else (est - tr) / tr,
        std=cat("std"),
        cov=cat("cov"),
        residual_norm=cat("residual_norm"),
        iterations=cat("iterations"),
        converged=cat("converged"),
        cond=cond,
        measured=meas,
        path=path,
        null_direction=null,
    )


def invert(
    mode: str,
    true_eps: Tensor,
    *,
    design: Design,
    rel_noise: float = DEFAULT_REL_NOISE,
    generator: torch.Generator | None = None,
    device: str | torch.device | None = None,
    **solver_options,
) -> InversionResult:
    """Simulate measurements for true unknowns ``true_eps`` (B, K) [m rad] of ``mode`` and invert them.

    Measurements: :func:`lumi_lib.measure.measure` (``rel_noise`` 0 = noise-free; noise drawn from ``generator``).
    ``solver_options``: keyword arguments of :func:`invert_measured` (x0, lower, upper, chunk_size, max_iter, ...).
    """
    names, pmat = mode_matrix(mode, device=device)
    t = torch.as_tensor(true_eps, dtype=torch.float64, device=pmat.device)
    if t.ndim == 1:
        t = t[None]
    if t.ndim != 2 or t.shape[1] != len(names):
        raise ValueError(f"true_eps: expected shape (B, {len(names)}) = {names} for mode {mode!r}, got {tuple(t.shape)}")
    if t.shape[0] == 0:
        raise ValueError("true_eps: no rows to invert (shape (0, K)); pass at least one set of emittances (B >= 1)")
    if not bool(torch.isfinite(t).all()) or not bool((t > 0).all()):
        raise ValueError(f"true_eps: emittances must be finite and > 0 m rad (min {t.min().item()!r})")
    meas = measure(design.config.to(pmat.device), t @ pmat, rel_noise=rel_noise, generator=generator)
    return invert_measured(mode, meas, design=design, rel_noise=rel_noise, truth=t, device=device, **solver_options)


def penalty_landscape(
    mode: str,
    measured: Tensor,
    *,
    design: Design,
    grid_a: Tensor,
    grid_b: Tensor,
    rel_noise: float = DEFAULT_REL_NOISE,
    axes: Sequence[int] = (0, 1),
    fixed: Tensor | None = None,
    chunk_size: int = 20_000,
    device: str | torch.device | None = None,
) -> Tensor:
    """Penalty sqrt(sum_m ((L_m(x) - C_m) / sigma_m)^2) on a grid, shape (len(grid_b), len(grid_a)).

    Unknown ``axes[0]`` runs over ``grid_a``, ``axes[1]`` over ``grid_b`` [m rad]; the other unknowns (xy12) are
    held at ``fixed`` (K,) (default nominal). ``measured``: (M,) one measurement vector.
    """
    names, pmat = mode_matrix(mode, device=device)
    dev = pmat.device
    meas = check_measurements(torch.as_tensor(measured, device=dev), name="measured").reshape(-1)
    if meas.shape[0] != design.n_configs:
        raise ValueError(f"measured: expected {design.n_configs} values, got {meas.shape[0]}")
    ia, ib = (int(a) for a in axes)
    if ia == ib or not (0 <= ia < len(names) and 0 <= ib < len(names)):
        raise ValueError(f"axes: two different indices into {names}, got {tuple(axes)}")
    ga = torch.as_tensor(grid_a, dtype=torch.float64, device=dev).reshape(-1)
    gb = torch.as_tensor(grid_b, dtype=torch.float64, device=dev).reshape(-1)
    base = (
        torch.full((len(names),), NOMINAL_EPS, dtype=torch.float64, device=dev)
        if fixed is None
        else torch.as_tensor(fixed, dtype=torch.float64, device=dev).reshape(len(names))
    )
    sigma = measurement_sigma(meas, rel_noise=rel_noise)
    cfg = design.config.to(dev)
    pts = base.expand(gb.numel(), ga.numel(), len(names)).clone()
    pts[..., ia] = ga[None, :]
    pts[..., ib] = gb[:, None]
    flat = pts.reshape(-1, len(names))
    out = torch.empty(flat.shape[0], dtype=torch.float64, device=dev)
    with torch.no_grad():
        for s in range(0, flat.shape[0], chunk_size):  # memory chunks
            eps = flat[s : s + chunk_size, None, :] @ pmat
            r = (luminosity(cfg, eps, device=dev) - meas) / sigma
            out[s : s + chunk_size] = (r * r).sum(-1).sqrt()
    return out.reshape(gb.numel(), ga.numel())
