"""Typed pipeline parameters: ``params.yaml`` -> pydantic v2 models (strict types, bounds, no unknown keys).

``load_params(path)`` raises ``ParamsError`` with ONE message listing every bad key as a dotted path
(``irradiate.chunk_size``), the offending value, the reason and the allowed range.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Tuple, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from typing_extensions import Annotated

from tomopt_lib.optimisation.data.passives import check_materials

from .lumi_params import LumiBaseParams, LumiPlanParams, LumiReportParams, LumiScanParams
from .optimise_params import EvaluateParams, LearningRates, OptimiseParams, StartLayout
from .schedule_params import SchedulesParams

__all__ = [
    "ParamsError",
    "RuntimeParams",
    "VolumeParams",
    "PassiveParams",
    "IrradiateParams",
    "ReconstructParams",
    "ReportParams",
    "LumiBaseParams",
    "LumiPlanParams",
    "LumiScanParams",
    "LumiReportParams",
    "OptimiseParams",
    "EvaluateParams",
    "LearningRates",
    "StartLayout",
    "PipelineParams",
    "load_params",
    "parse_params",
]

PosFloat = Annotated[float, Field(gt=0)]


class ParamsError(ValueError):
    """Invalid parameters; the message names every bad key path and its allowed values."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class RuntimeParams(_Model):
    """Where and how the numerics run."""

    device: Literal["cpu", "auto", "cuda"] = "cpu"
    threads: int = Field(1, ge=1, le=256, description="torch intra-op threads per process")
    task_workers: int = Field(1, ge=1, le=64, description="concurrent Prefect tasks: pool threads or Dask worker processes")
    task_runner: Literal["threads", "dask_local", "dask_address"] = Field(
        "threads", description="threads: ThreadPoolTaskRunner; dask_local: LocalCluster of task_workers processes; "
        "dask_address: an existing Dask cluster at dask_address"
    )
    dask_address: Optional[str] = Field(None, min_length=1, description="scheduler address for task_runner=dask_address")

    @model_validator(mode="after")
    def _address_iff_needed(self) -> "RuntimeParams":
        if self.task_runner == "dask_address" and not self.dask_address:
            raise ValueError("runtime.dask_address must be set (e.g. 'tcp://127.0.0.1:8786') when runtime.task_runner is 'dask_address'")
        if self.task_runner != "dask_address" and self.dask_address is not None:
            raise ValueError(f"runtime.dask_address={self.dask_address!r} is only used with runtime.task_runner 'dask_address'; set it to null")
        return self


class VolumeParams(_Model):
    """Detector / passive layout of ``tomopt_lib.volume.builders.build_panel_volume``."""

    lw: List[PosFloat] = Field(default_factory=lambda: [1.0, 1.0], min_length=2, max_length=2)
    voxel_size: float = Field(0.1, gt=0, le=10)
    passive_n_layers: int = Field(6, ge=1, le=100)
    n_panels_above: int = Field(4, ge=2, le=16)
    n_panels_below: int = Field(4, ge=2, le=16)
    res: float = Field(1e4, gt=0, le=1e9, description="panel resolution [1/m]")
    eff: float = Field(0.9, gt=0, le=1)
    panel_span: float = Field(1.0, gt=0, le=100)
    step_sz: float = Field(0.01, gt=0, le=1)
    scatter_model: Literal["pdg"] = "pdg"
    sigmoid_smooth: Optional[float] = Field(None, gt=0, le=10)
    energy_loss: bool = Field(True, description="continuous muon energy loss in the passive layers (off: TomOpt)")
    highland_beta: bool = Field(True, description="Highland with the muon's beta (off: TomOpt's beta = 1)")

    @model_validator(mode="after")
    def _voxels_fit(self) -> "VolumeParams":
        for i, v in enumerate(self.lw):
            n = v / self.voxel_size
            if abs(n - round(n)) > 1e-6:
                raise ValueError(f"volume.lw.{i}={v} must be a whole multiple of volume.voxel_size={self.voxel_size}")
        return self


class PassiveParams(_Model):
    """Random passive volumes (``tomopt_lib.optimisation.data.passives``)."""

    n_volumes: int = Field(10, ge=1, le=100000)
    generator: Literal["random_block", "voxel"] = "random_block"
    materials: List[str] = Field(default_factory=lambda: ["beryllium", "aluminium", "iron", "lead"], min_length=2)
    block_size: Optional[List[PosFloat]] = Field(None, min_length=3, max_length=3)
    block_size_max_half: bool = True
    sort_x0: bool = False
    enforce_diff_mat: bool = True

    @field_validator("materials")
    @classmethod
    def _known_materials(cls, v: List[str]) -> List[str]:
        return check_materials(v)


class IrradiateParams(_Model):
    """Muon generation and propagation."""

    n_muons_per_volume: int = Field(10000, ge=0, le=10_000_000)
    chunk_size: int = Field(5000, ge=1, le=1_000_000)
    flux_model: Literal["2015", "2016"] = "2016"
    fixed_mom: Optional[float] = Field(None, gt=0, le=1e4, description="GeV; null = sample from the flux")
    min_angle_deg: float = Field(15.0, ge=0, lt=90, description="generation-area widening angle")
    theta_max_deg: float = Field(70.0, gt=0, lt=90)
    realistic_panels: bool = Field(True, description="physical panels (eval mode) instead of the smooth training model")


class ReconstructParams(_Model):
    """Scatter reconstruction (``ScatterBatch``)."""

    chunk_size: int = Field(5000, ge=1, le=1_000_000)


class ReportParams(_Model):
    """Metrics and plots."""

    angle_bins: int = Field(50, ge=2, le=10000)
    max_angle: float = Field(0.2, gt=0, le=3.1416, description="rad; upper edge of the scatter-angle histogram")
    poca_bins_per_voxel: int = Field(2, ge=1, le=50)


class PipelineParams(_Model):
    """All parameters of the pipeline (one section per DVC stage plus ``seed``, ``runtime``, ``volume``)."""

    seed: int = Field(1234, ge=0, le=2**63 - 1)
    runtime: RuntimeParams = Field(default_factory=RuntimeParams)
    volume: VolumeParams = Field(default_factory=VolumeParams)
    passives: PassiveParams = Field(default_factory=PassiveParams)
    irradiate: IrradiateParams = Field(default_factory=IrradiateParams)
    reconstruct: ReconstructParams = Field(default_factory=ReconstructParams)
    report: ReportParams = Field(default_factory=ReportParams)
    lumi_scan: LumiScanParams = Field(default_factory=LumiScanParams)
    lumi_report: LumiReportParams = Field(default_factory=LumiReportParams)
    optimise: OptimiseParams = Field(default_factory=OptimiseParams)
    evaluate: EvaluateParams = Field(default_factory=EvaluateParams)
    schedules: SchedulesParams = Field(default_factory=SchedulesParams)

    @model_validator(mode="after")
    def _block_fits(self) -> "PipelineParams":
        bs = self.passives.block_size
        if bs is not None:
            v = self.volume
            extent = (v.lw[0], v.lw[1], v.passive_n_layers * v.voxel_size)
            for i, (b, e) in enumerate(zip(bs, extent)):
                if b > e + 1e-9:
                    raise ValueError(f"passives.block_size.{i}={b} exceeds the passive extent {e:g} m along {'xyz'[i]}")
        return self


# ------------------------------------------------------------------------------------------------ error formatting
def _resolve(schema: Dict[str, Any], defs: Dict[str, Any]) -> Dict[str, Any]:
    while "$ref" in schema:
        schema = defs[schema["$ref"].split("/")[-1]]
    return schema


def _describe(schema: Dict[str, Any], defs: Dict[str, Any]) -> str:
    schema = _resolve(schema, defs)
    if "anyOf" in schema:
        return " or ".join(_describe(s, defs) for s in schema["anyOf"])
    if "enum" in schema or "const" in schema:
        vals = schema.get("enum", [schema.get("const")])
        return "one of " + ", ".join(repr(v) for v in vals)
    typ = schema.get("type", "value")
    if typ == "object" and "properties" in schema:
        return "a mapping with keys " + ", ".join(schema["properties"])
    if typ == "array":
        lo, hi = schema.get("minItems"), schema.get("maxItems")
        n = f"{lo}" if lo is not None and lo == hi else f"{lo or 0}..{hi if hi is not None else 'n'}"
        return f"a list of {n} items, each {_describe(schema.get('items', {}), defs)}"
    name = {"number": "a number", "integer": "an integer", "string": "a string", "boolean": "true/false", "null": "null"}.get(typ, typ)
    bounds = []
    for key, op in (("minimum", ">="), ("exclusiveMinimum", ">"), ("maximum", "<="), ("exclusiveMaximum", "<")):
        if key in schema:
            val = schema[key]
            bounds.append(f"{op} {val}" if isinstance(val, int) else f"{op} {val:g}")
    return name + (" " + " and ".join(bounds) if bounds else "")


def _allowed(loc: Tuple[Union[str, int], ...], err_type: str) -> str:
    schema = PipelineParams.model_json_schema()
    defs = schema.get("$defs", {})
    node: Optional[Dict[str, Any]] = schema
    parent = None
    for part in loc:
        node = _resolve(node, defs) if node else None
        if node and "anyOf" in node:
            node = next((_resolve(s, defs) for s in node["anyOf"] if s.get("type") != "null"), node)
        parent = node
        if node is None:
            break
        if isinstance(part, int):
            node = node.get("items")
        else:
            node = node.get("properties", {}).get(part)
    if err_type == "extra_forbidden" and parent is not None:
        return "allowed keys: " + ", ".join(parent.get("properties", {}))
    return "" if node is None else "allowed: " + _describe(node, defs)


def _lookup(data: Any, loc: Tuple[Union[str, int], ...]) -> Any:
    for part in loc:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return "<missing>"
    return data


def _format_error(err: ValidationError, data: Any, source: str) -> str:
    lines = [f"invalid parameters in {source} ({err.error_count()} problem{'s' if err.error_count() > 1 else ''}):"]
    for e in err.errors():
        loc = tuple(e["loc"])
        path = ".".join(str(p) for p in loc) or "<root>"
        msg = e["msg"].removeprefix("Value error, ")
        if not loc:  # model-level validator: the message names the key itself
            lines.append(f"  {msg}")
            continue
        value = _lookup(data, loc)
        if e["type"] == "value_error":  # custom validators: the message already says what is allowed
            lines.append(f"  {msg}" if msg.startswith(path + ".") else f"  {path} = {value!r}: {msg}")
            continue
        allowed = _allowed(loc, e["type"])
        shown = "" if e["type"] == "extra_forbidden" else f" = {value!r}"
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"  {path}{shown}: {msg}" + (f" ({allowed})" if allowed else ""))
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------ loading
class _Loader(yaml.SafeLoader):
    """SafeLoader that also reads ``1e4`` as a float (YAML 1.2 behaviour, as DVC does)."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
        |\.[0-9_]+(?:[eE][-+][0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$""",
        re.X,
    ),
    list("-+0123456789."),
)


def parse_params(data: Any, source: str = "params") -> PipelineParams:
    """Validate a mapping (e.g. parsed YAML); ``ParamsError`` with one message on any problem."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ParamsError(f"invalid parameters in {source}: the top level must be a mapping, got {type(data).__name__}")
    try:
        return PipelineParams.model_validate(data)
    except ValidationError as err:
        raise ParamsError(_format_error(err, data, source)) from None


def load_params(path: Union[str, Path] = "params.yaml") -> PipelineParams:
    """Read and validate a YAML parameter file; ``ParamsError`` if it is missing, malformed or invalid."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as err:
        raise ParamsError(f"cannot read parameter file {p}: {err.strerror or err}") from None
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 - SafeLoader subclass
    except yaml.YAMLError as err:
        raise ParamsError(f"invalid YAML in {p}: {err}") from None
    return parse_params(data, source=str(p))
