"""Stage registry, the ``skeleton`` parent flow and ``run_stage`` (task runner sized from the parameters)."""

from __future__ import annotations

from typing import Any, Callable, Dict, Mapping

from prefect import flow, get_run_logger
from prefect.task_runners import ThreadPoolTaskRunner

from .generate_passives import generate_passives_flow
from .irradiate import irradiate_flow
from .params import PipelineParams, parse_params
from .reconstruct import reconstruct_flow
from .report import report_flow

__all__ = ["STAGES", "skeleton_flow", "run_stage"]

STAGES: Dict[str, Any] = {
    "generate_passives": generate_passives_flow,
    "irradiate": irradiate_flow,
    "reconstruct": reconstruct_flow,
    "report": report_flow,
}
"""DVC stage name -> Prefect flow, in pipeline order."""


def _sized(fl: Any, p: PipelineParams) -> Any:
    return fl.with_options(task_runner=ThreadPoolTaskRunner(max_workers=p.runtime.task_workers))


@flow(name="skeleton", flow_run_name="skeleton-seed{params[seed]}", log_prints=False)
def skeleton_flow(params: Dict[str, Any], workdir: str = ".") -> Dict[str, Any]:
    """Run every stage in order as subflows; returns ``{stage: result}``."""
    p = parse_params(params)
    out: Dict[str, Any] = {}
    for name, fl in STAGES.items():
        get_run_logger().info("stage %s", name)
        out[name] = _sized(fl, p)(params=params, workdir=workdir)
    return out


def run_stage(stage: str, p: PipelineParams, workdir: str = ".") -> Mapping[str, Any]:
    """Run one stage (or ``"all"`` via the ``skeleton`` flow) with validated parameters ``p``."""
    fl: Callable[..., Any] = skeleton_flow if stage == "all" else STAGES[stage]
    return _sized(fl, p)(params=p.model_dump(mode="json"), workdir=str(workdir))
