"""Parameter sections ``lumi_scan`` and ``lumi_report`` (luminosity-based emittance inversion).

Models only; ``config.pipeline`` composes them into ``PipelineParams``. Validators name the full
dotted key path (``lumi_scan.bounds``) so that the one error message points at the offending key.
"""

from __future__ import annotations

import copy
import math
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from .base import ParamsModel

__all__ = ["LumiBaseParams", "LumiPlanParams", "LumiScanParams", "LumiReportParams"]

_MAX_CONFIGS = 1_000_000


class LumiBaseParams(ParamsModel):
    """One base configuration (an IP): the LHC-like default set with its crossing plane, beta* asymmetry, overrides."""

    crossing_plane: Literal["x", "y"] = "y"
    beta2_ratio: float = Field(1.0, gt=0, le=10, description="beta*_u2 = ratio x beta*_u1 (u = x, y), after the overrides")
    overrides: dict[str, float] = Field(default_factory=dict, description="any IPConfig field -> value (SI units)")

    @field_validator("overrides")
    @classmethod
    def _known_fields(cls, v: dict[str, float]) -> dict[str, float]:
        from lumi_lib.config import IPConfig, field_names

        unknown = sorted(set(v) - set(field_names()))
        if unknown:
            raise ValueError(f"unknown IPConfig field(s) {unknown}; valid names: {', '.join(field_names())}")
        try:
            IPConfig.lhc_default("y", **v)
        except ValueError as err:
            raise ValueError(str(err)) from None
        return v


def _default_bases() -> list[LumiBaseParams]:
    return [
        LumiBaseParams(crossing_plane="x"),
        LumiBaseParams(crossing_plane="y"),
        LumiBaseParams(crossing_plane="x", beta2_ratio=0.98),
        LumiBaseParams(crossing_plane="y", beta2_ratio=0.98),
    ]


class LumiPlanParams(ParamsModel):
    """Measurement plan (``lumi_lib.design.design_scan``); the default is the reference's "last example"."""

    bases: list[LumiBaseParams] = Field(default_factory=_default_bases, min_length=1, max_length=64)
    parameters: list[str] = Field(
        default_factory=lambda: ["sep_x", "sep_y", "cross_x", "cross_y"],
        min_length=1,
        max_length=32,
        description="shift parameters (lumi_lib.design.SHIFT_PARAMETERS)",
    )
    n_shifts: int = Field(6, ge=1, le=100, description="shifts per parameter: {0, d} if 1, else {0} + linspace(-d, d, n)")
    product: bool = Field(True, description="tensor product of all parameters' shifts (else one parameter at a time)")
    target: float | list[float] = Field(
        -0.01,
        description="relative luminosity change that sizes each shift, in (-0.5, 0.5), != 0; a list: one shift "
        "size (and its scan points) per target and parameter",
    )

    @field_validator("parameters")
    @classmethod
    def _known_parameters(cls, v: list[str]) -> list[str]:
        from lumi_lib.design import check_parameters

        try:
            check_parameters(v)
        except ValueError as err:
            raise ValueError(str(err).removeprefix("parameters: ")) from None
        return v

    @field_validator("target")
    @classmethod
    def _targets(cls, v: float | list[float]) -> float | list[float]:
        values = [v] if isinstance(v, float) else list(v)
        if not 1 <= len(values) <= 8:
            raise ValueError("give one to eight target relative luminosity changes")
        for t in values:
            if t == 0.0:
                raise ValueError("the target relative luminosity change must be non-zero")
            if not -0.5 < t < 0.5:
                raise ValueError(f"each target relative luminosity change must lie in (-0.5, 0.5), got {t!r}")
        if len(set(values)) != len(values):
            raise ValueError(f"duplicate target relative luminosity changes in {values}")
        return v

    @property
    def targets(self) -> list[float]:
        """The target relative luminosity changes as a list."""
        return [self.target] if isinstance(self.target, float) else list(self.target)

    @property
    def n_configs(self) -> int:
        """Number of measurement configurations (residuals per inversion) the plan produces."""
        from lumi_lib.design import n_scan_configs

        return n_scan_configs(len(self.bases), len(self.parameters), self.n_shifts, self.product, len(self.targets))


class LumiScanParams(ParamsModel):
    """``lumi_scan`` stage: seeded random true emittances x batched inversion, in coarse chunks.

    ``preset`` (a name of ``lumi_lib.inversion.PRESET_PLANS``) replaces ``mode`` and the plan's ``bases``,
    ``parameters``, ``n_shifts`` and ``product`` (``plan.target`` still applies); null: ``mode`` and ``plan`` as
    given."""

    seed: int = Field(42, ge=0, le=2**63 - 1, description="base seed; chunk c draws truths and noise from (seed, c)")
    preset: str | None = Field(
        None,
        description="named plan replacing mode and plan.bases/parameters/n_shifts/product: xy_1ip, xy_2ip, 12_equal, "
        "12, xy12, xy12_ref, xy12_last",
    )
    mode: Literal["xy", "12", "xy12"] = Field("xy12", description="unknowns: xy (2), 12 (2) or xy12 (4)")
    plan: LumiPlanParams = Field(default_factory=LumiPlanParams)
    rel_noise: float = Field(1e-3, ge=0, le=0.5, description="relative rms luminosity noise (0 = noise-free)")
    eps_nominal: float = Field(2.3e-6, gt=0, le=1e-3, description="nominal emittance [m rad]: design point and start")
    eps_spread: float = Field(0.2, ge=0, lt=1, description="truths ~ U(eps_nominal (1 - s), eps_nominal (1 + s))")
    n_inversions: int = Field(32, ge=1, le=10_000_000)
    chunk_size: int = Field(8, ge=1, le=1_000_000, description="inversions per Prefect task (one batched solve each)")
    solver_batch: int | None = Field(None, ge=1, le=1_000_000, description="memory sub-batch; null = library default")
    bounds: list[float] = Field(default_factory=lambda: [1.84e-6, 2.76e-6], min_length=2, max_length=2, description="[m rad]")
    max_iter: int = Field(50, ge=1, le=10_000)
    jacobian: Literal["reverse", "forward"] = "reverse"
    cond_warn: float = Field(1e8, gt=1, description="warn when the Jacobian condition number exceeds this")
    rel_uncertainty_warn: float = Field(
        0.10,
        gt=0,
        le=1e6,
        description="warn when an unknown's relative uncertainty (covariance std / estimate) at the configured noise "
        "(0.1 % for noise-free scans) exceeds this",
    )

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, v: str | None) -> str | None:
        from lumi_lib.inversion import PRESET_PLANS

        if v is not None and v not in PRESET_PLANS:
            raise ValueError(f"unknown preset; valid names: {', '.join(PRESET_PLANS)}")
        return v

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        """Replace ``mode`` and the plan's layout keys by the named preset's (an unknown name is left to the field
        validator, which names the key)."""
        from lumi_lib.inversion import PRESET_PLANS

        if not isinstance(data, dict) or data.get("preset") not in PRESET_PLANS:
            return data
        preset = PRESET_PLANS[data["preset"]]
        plan = data.get("plan", {})
        if isinstance(plan, LumiPlanParams):
            return data  # already a model: explicit
        if not isinstance(plan, dict):
            return data  # the field validator reports the bad type
        layout = {k: copy.deepcopy(v) for k, v in preset.items() if k != "mode"}
        return {**data, "mode": preset["mode"], "plan": {**plan, **layout}}

    @model_validator(mode="after")
    def _consistent(self) -> LumiScanParams:
        lo, hi = self.bounds
        if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo < self.eps_nominal < hi):
            raise ValueError(
                f"lumi_scan.bounds={self.bounds} must satisfy 0 < lower < lumi_scan.eps_nominal={self.eps_nominal:g} < upper "
                "(the start of every inversion)"
            )
        if self.plan.n_configs > _MAX_CONFIGS:
            raise ValueError(
                f"lumi_scan.plan.n_shifts={self.plan.n_shifts} gives {self.plan.n_configs} configurations per inversion "
                f"(more than {_MAX_CONFIGS}); use fewer shifts, parameters or bases, or product: false"
            )
        return self


class LumiReportParams(ParamsModel):
    """``lumi_report`` stage: metrics, histograms, estimate-vs-truth and penalty landscapes."""

    hist_bins: int = Field(
        40, ge=2, le=10_000, description="most bins of the error and pull histograms (fewer for small samples: ceil(2 sqrt(n)))"
    )
    outlier_sigma: float = Field(7.0, gt=0, le=1000, description="outlier: |estimate - truth| > k sigma_cov in any component")
    outlier_rel_error: float = Field(0.05, gt=0, le=10, description="also reported: fraction with any |rel. error| > this")
    landscape_grid: int = Field(200, ge=5, le=2000, description="grid points per axis of each penalty landscape")
    landscape_span: float = Field(0.2, gt=0, lt=1, description="landscape axes: eps_nominal (1 +- span)")
    landscape_seed: int = Field(42, ge=0, le=2**63 - 1, description="truth and noise draw of the landscape inversions")
    landscape_rel_noise: float = Field(1e-3, gt=0, le=0.5, description="noise of the xy-with-noise (2 IPs) case")
    landscape_target: float = Field(-0.01, gt=-0.5, lt=0.5, description="design luminosity change of the landscape plans")

    @field_validator("landscape_target")
    @classmethod
    def _nonzero(cls, v: float) -> float:
        if v == 0.0:
            raise ValueError("the target relative luminosity change must be non-zero")
        return v
