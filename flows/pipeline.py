"""Stage registry, the ``skeleton`` parent flow and ``run_stage`` (task runner sized from the parameters)."""

from __future__ import annotations

from typing import Any, Callable, Dict, Mapping

from prefect import flow, get_run_logger
from prefect.task_runners import ThreadPoolTaskRunner

from .evaluate import evaluate_flow
from .generate_passives import generate_passives_flow
from .irradiate import irradiate_flow
from .lumi_report import lumi_report_flow
from .lumi_scan import lumi_scan_flow
from .optimise import optimise_flow
from .params import PipelineParams, RuntimeParams, parse_params
from .reconstruct import reconstruct_flow
from .report import report_flow

__all__ = ["STAGES", "skeleton_flow", "run_stage", "make_task_runner"]

STAGES: Dict[str, Any] = {
    "generate_passives": generate_passives_flow,
    "irradiate": irradiate_flow,
    "reconstruct": reconstruct_flow,
    "report": report_flow,
    "optimise": optimise_flow,
    "evaluate": evaluate_flow,
    "lumi_scan": lumi_scan_flow,
    "lumi_report": lumi_report_flow,
}
"""DVC stage name -> Prefect flow, in pipeline order."""


def make_task_runner(rt: RuntimeParams) -> Any:
    """Task runner of ``runtime.task_runner``: a thread pool of ``task_workers`` threads (default), a local Dask
    cluster of ``task_workers`` single-threaded worker processes (torch and OpenMP threads per worker =
    ``runtime.threads``, dashboard off), or the existing Dask cluster at ``runtime.dask_address``. Dask workers run
    Prefect's task engine themselves: they must reach the Prefect API and the files the tasks read and write."""
    if rt.task_runner == "threads":
        return ThreadPoolTaskRunner(max_workers=rt.task_workers)
    from prefect_dask import DaskTaskRunner

    if rt.task_runner == "dask_address":
        return DaskTaskRunner(address=rt.dask_address)
    threads = str(rt.threads)
    env = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads}
    return DaskTaskRunner(
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={"n_workers": rt.task_workers, "threads_per_worker": 1, "processes": True, "dashboard_address": None, "env": env},
    )


def _sized(fl: Any, p: PipelineParams) -> Any:
    return fl.with_options(task_runner=make_task_runner(p.runtime))


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
