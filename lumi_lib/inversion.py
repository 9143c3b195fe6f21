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
from typing import Any, Literal, cast

import torch
from torch import Tensor

from .config import IPConfig
from .design import NOMINAL_EPS, Design, design_scan
from .measure import DEFAULT_REL_NOISE, check_measurements, measure, measurement_sigma
from .model import luminosity
from .solver import identifiability_message, solve_lm, uncertainty_message

__all__ = [
    "MODES",
    "PRESETS",
    "PRESET_PLANS",
    "base_config",
    "InversionResult",
    "mode_matrix",
    "preset_design",
    "invert",
    "invert_measured",
]

MODES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {"xy": ("eps_x", "eps_y"), "12": ("eps_1", "eps_2"), "xy12": ("eps_x1", "eps_y1", "eps_x2", "eps_y2")}
)
"""Inversion modes and the names of their unknowns [m rad]."""

_P = {"xy": [[1, 0, 1, 0], [0, 1, 0, 1]], "12": [[1, 1, 0, 0], [0, 0, 1, 1]], "xy12": torch.eye(4).tolist()}

_X, _Y = {"crossing_plane": "x"}, {"crossing_plane": "y"}
_X98, _Y98 = {"crossing_plane": "x", "beta2_ratio": 0.98}, {"crossing_plane": "y", "beta2_ratio": 0.98}

PRESET_PLANS: Mapping[str, Mapping[str, Any]] = MappingProxyType(
    {
        "xy_1ip": {"mode": "xy", "bases": [_Y], "parameters": ["sep_x"], "n_shifts": 1, "product": False},
        "xy_2ip": {"mode": "xy", "bases": [_Y, _X], "parameters": ["sep_x"], "n_shifts": 1, "product": False},
        "12_equal": {"mode": "12", "bases": [_Y], "parameters": ["sep_x"], "n_shifts": 1, "product": False},
        "12": {
            "mode": "12",
            "bases": [_Y, {"crossing_plane": "x", "beta2_ratio": 0.8}],
            "parameters": ["sep_x"],
            "n_shifts": 10,
            "product": False,
        },
        "xy12": {
            "mode": "xy12",
            "bases": [_X, _Y, _X98, _Y98],
            "parameters": ["sep_x", "sep_y"],
            "n_shifts": 1,
            "product": False,
        },
        "xy12_ref": {
            "mode": "xy12",
            "bases": [{"crossing_plane": "x", "overrides": {"beta_x2": 0.3001, "beta_y2": 0.3001}}],
            "parameters": ["sep_x", "sep_y", "cross_x", "cross_y"],
            "n_shifts": 1,
            "product": False,
        },
        "xy12_last": {
            "mode": "xy12",
            "bases": [_X, _Y, _X98, _Y98],
            "parameters": ["sep_x", "sep_y", "cross_x", "cross_y"],
            "n_shifts": 6,
            "product": True,
        },
    }
)
"""Named measurement plans as plain data: ``mode`` and the keys of a ``lumi_scan.plan`` section (``bases``: crossing
plane, beta*_2 / beta*_1 ratio, IPConfig overrides; ``parameters``; ``n_shifts``; ``product``). The reference's five
studies are ``xy_1ip``, ``xy_2ip``, ``12``, ``xy12_ref`` (its README's near-degenerate xy12: beta*_2 = beta*_1 +
0.1 mm, 5 configurations) and ``xy12_last``; ``12_equal`` and ``xy12`` are further examples."""

PRESETS: Mapping[str, str] = MappingProxyType(
    {
        "xy_1ip": "1 IP (crossing y) + sep_x shift: 2 configurations (reference inv_gauss_xy)",
        "xy_2ip": "2 IPs (crossing y and x), each + its own sep_x shift: 4 configurations (reference randerr_2)",
        "12_equal": "1 IP (crossing y), equal optics, + sep_x shift: 2 configurations; eps_1 + eps_2 only (degenerate)",
        "12": "crossing y and crossing x with beta*_2 = 0.8 beta*_1, each + {0} U linspace(-d, d, 10) sep_x: 22",
        "xy12": "4 bases (crossing x, y; and both with beta*_2 = 0.98 beta*_1) + one sep_x and sep_y shift each: 12",
        "xy12_ref": "the reference README's xy12: crossing x, beta*_2 = beta*_1 + 0.1 mm, + one shift of sep_x, sep_y, "
        "cross_x, cross_y: 5 configurations (near-degenerate, cond ~ 6e6)",
        "xy12_last": "the reference's last example: 4 bases x (sep_x, sep_y, cross_x, cross_y) 7^4 product = 9604",
    }
)
"""Ready-made measurement plans (see :func:`preset_design`, :data:`PRESET_PLANS`)."""


def base_config(
    crossing_plane: Literal["x", "y"] = "y", beta2_ratio: float = 1.0, overrides: Mapping[str, float] | None = None
) -> IPConfig:
    """One base configuration: the LHC default with ``crossing_plane``, then ``overrides`` (IPConfig fields), then
    beta*_u2 = ``beta2_ratio`` beta*_u1 (u = x, y; skipped for a ratio of 1)."""
    cfg = IPConfig.lhc_default(crossing_plane, **dict(overrides or {}))
    if beta2_ratio != 1.0:
        cfg = cfg.replace(beta_x2=beta2_ratio * cfg.beta_x1, beta_y2=beta2_ratio * cfg.beta_y1)
    return cfg


def mode_matrix(mode: str, *, device: str | torch.device | None = None) -> tuple[tuple[str, ...], Tensor]:
    """(names of the unknowns, P (K, 4)) for ``mode``; ``ValueError`` listing the valid modes otherwise."""
    if mode not in MODES:
        raise ValueError(f"mode: unknown inversion mode {mode!r}; valid modes: {', '.join(MODES)}")
    return MODES[mode], torch.tensor(_P[mode], dtype=torch.float64, device=device)


def preset_design(
    name: str,
    *,
    target: float | Sequence[float] = -0.01,
    shifts: Tensor | None = None,
    device: str | torch.device | None = None,
) -> Design:
    """The measurement plan ``name`` (one of :data:`PRESETS`), shifts solved at nominal emittances for ``target``
    (or given as ``shifts``, see :func:`lumi_lib.design.design_scan`)."""
    if name not in PRESET_PLANS:
        raise ValueError(f"name: unknown preset design {name!r}; valid presets: {', '.join(PRESETS)}")
    plan = PRESET_PLANS[name]
    return design_scan(
        [base_config(**b) for b in plan["bases"]],
        plan["parameters"],
        target=target,
        n_shifts=plan["n_shifts"],
        product=plan["product"],
        shifts=shifts,
        device=device,
    )


@dataclass(frozen=True)
class InversionResult:
    """Batched inversion outcome (leading dimension B). Emittances in m rad.

    ``estimate`` (B, K); ``eps`` (B, 4) = estimate @ P; ``truth`` (B, K) or None; ``rel_error`` (B, K) =
    (estimate - truth) / truth or None; ``std`` (B, K) and ``cov`` (B, K, K) from (J^T W J)^-1; ``residual_norm`` (B,)
    = |(L - C) / sigma|_2; ``iterations`` (B,); ``converged`` (B,) bool; ``cond`` (B,) Jacobian condition number
    (scaled unknowns); ``measured`` (B, M); ``path`` (n_iter + 1, B, K) iterates or None; ``null_direction`` (B, K)
    least-determined direction (unit vector, scaled unknowns) or None; ``at_bound`` (B,) bool: some unknown ended on
    a bound (never ``converged``); ``status`` (B,) int64 :data:`lumi_lib.solver.STATUS` code; ``recovered`` (B,) bool:
    converged only after a restart or the scipy polish; ``rel_noise``: the relative noise the data were weighted with
    (0 = noise-free, weighted with a nominal 0.1 %); ``residual`` (B, M) weighted residuals (L - C) / sigma at the
    estimate and ``jacobian`` (B, M, K) their derivative d r / d estimate [1 / (m rad)], if requested (else None).
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
    at_bound: Tensor | None = None
    status: Tensor | None = None
    recovered: Tensor | None = None
    rel_noise: float = DEFAULT_REL_NOISE
    residual: Tensor | None = None
    jacobian: Tensor | None = None

    @property
    def relative_uncertainty(self) -> Tensor:
        """(B, K) std / |estimate| from the covariance (at the weighting noise ``rel_noise``, 0.1 % if noise-free)."""
        return self.std / self.estimate.abs()

    def identifiability_warning(self, threshold: float = 1e8, rel_uncertainty: float | None = None) -> str | None:
        """Warning text, or None: :func:`lumi_lib.solver.identifiability_message` (condition number above
        ``threshold``) if ``rel_uncertainty`` is None, else :func:`lumi_lib.solver.uncertainty_message` (also any
        unknown whose relative uncertainty exceeds ``rel_uncertainty``). None without a recorded null direction."""
        if self.null_direction is None:
            return None
        cond, null = self.cond.detach().cpu(), self.null_direction.detach().cpu()
        if rel_uncertainty is None:
            return identifiability_message(cond, null, self.names, threshold)
        return uncertainty_message(
            self.relative_uncertainty.detach().cpu(),
            self.names,
            rel_uncertainty,
            null_direction=null,
            cond=cond,
            cond_threshold=threshold,
            noise=noise_phrase(self.rel_noise),
        )

    def as_dict(self) -> dict[str, object]:
        """Field name -> value (tensors not copied)."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


DEFAULT_REL_UNCERTAINTY_WARN: float = 0.10
"""Default threshold of the relative-uncertainty warning (std / estimate of any unknown)."""


def noise_phrase(rel_noise: float) -> str:
    """How the warnings name the noise the covariance assumes."""
    if rel_noise > 0:
        return f"{100.0 * rel_noise:.3g} % noise"
    return f"the nominal {100.0 * DEFAULT_REL_NOISE:.3g} % weighting of noise-free data"


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
    rel_uncertainty_warn: float = DEFAULT_REL_UNCERTAINTY_WARN,
    record_path: bool = False,
    restarts: bool = True,
    polish: bool = True,
    keep_jacobian: bool = False,
    device: str | torch.device | None = None,
) -> InversionResult:
    """Invert measured luminosities ``measured`` (B, M) [cm^-2 s^-1] of ``design`` (M configurations).

    ``rel_noise``: relative rms noise of the data (weights sigma = rel_noise * C; 0 = noise-free, weighted with a
    nominal 0.1 %). ``x0``, ``lower``, ``upper``: start and box bounds [m rad] (scalar, (K,) or (B, K)).
    Warns (``UserWarning``, :meth:`InversionResult.identifiability_warning`) when a condition number exceeds
    ``cond_warn`` or an unknown's relative uncertainty exceeds ``rel_uncertainty_warn`` (``math.inf``: never).
    ``restarts``, ``polish``: recovery of unconverged problems (:func:`lumi_lib.solver.solve_lm`);
    ``keep_jacobian``: also return the residual vectors and Jacobians (memory B x M x K).
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
                restarts=restarts,
                polish=polish,
                keep_jacobian=keep_jacobian,
            )
        )
    cat = lambda name: torch.cat([getattr(p, name) for p in parts])  # noqa: E731
    cond, null = cat("cond"), cat("null_direction")
    est = cat("x")
    path = None
    if record_path:
        paths = [cast(Tensor, p.path) for p in parts]  # recorded: record_path
        n = max(q.shape[0] for q in paths)
        path = torch.cat([torch.cat([q, q[-1:].expand(n - q.shape[0], -1, -1)]) for q in paths], dim=1)
    tr = None if truth is None else torch.as_tensor(truth, dtype=torch.float64, device=dev).expand(b, k)
    result = InversionResult(
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
        at_bound=cat("at_bound"),
        status=cat("status"),
        recovered=cat("recovered"),
        rel_noise=float(rel_noise),
        residual=cat("residual") if keep_jacobian else None,
        jacobian=cat("jacobian") if keep_jacobian else None,
    )
    msg = result.identifiability_warning(cond_warn, rel_uncertainty_warn)
    if msg is not None:
        warnings.warn(msg, UserWarning, stacklevel=2)
    return result


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
