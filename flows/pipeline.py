"""``run_stage`` (one stage, or ``all`` through the ``skeleton`` parent flow) with a task runner sized from the
parameters. Stage flows are imported on demand from the registry (``flows.stages``), so running one stage loads only
that stage's code."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any, cast

from prefect import Flow, flow, get_run_logger
from prefect.task_runners import ThreadPoolTaskRunner

from config import PipelineParams, RuntimeParams

from .stages import STAGES

__all__ = ["stage_flow", "skeleton_flow", "run_stage", "make_task_runner"]


def stage_flow(stage: str) -> Flow[..., Any]:
    """The Prefect flow of DVC stage ``stage`` (imported from its registry module)."""
    spec = STAGES[stage]
    flow_obj: Flow[..., Any] = getattr(importlib.import_module(spec.module), spec.flow)
    return flow_obj


def make_task_runner(rt: RuntimeParams) -> Any:
    """Task runner of ``runtime.task_runner``: a thread pool of ``task_workers`` threads (default), a local Dask
    cluster of ``task_workers`` single-threaded worker processes (torch and OpenMP threads per worker =
    ``runtime.threads``; no dashboard, nothing on port 8787), or the existing Dask cluster at ``runtime.dask_address``. Dask workers run
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
        cluster_kwargs={
            "n_workers": rt.task_workers,
            "threads_per_worker": 1,
            "processes": True,
            "dashboard_address": None,
            # no dashboard, and the scheduler's small HTTP server (health checks) on a free localhost port instead
            # of distributed's default 0.0.0.0:8787
            "scheduler_kwargs": {"dashboard": False, "dashboard_address": "127.0.0.1:0"},
            "env": env,
        },
    )


def _sized(fl: Flow[..., Any], p: PipelineParams) -> Flow[..., Any]:
    return fl.with_options(task_runner=make_task_runner(p.runtime))


@flow(name="skeleton", flow_run_name="skeleton-seed{params.seed}", log_prints=False)
def skeleton_flow(params: PipelineParams, workdir: str = ".") -> dict[str, Any]:
    """Run every stage in order as subflows; returns ``{stage: result}``."""
    out: dict[str, Any] = {}
    for name in STAGES:
        get_run_logger().info("stage %s", name)
        out[name] = _sized(stage_flow(name), params)(params=params, workdir=workdir)
    return out


def run_stage(stage: str, p: PipelineParams, workdir: str = ".") -> Mapping[str, Any]:
    """Run one stage (or ``"all"`` via the ``skeleton`` flow) with validated parameters ``p``."""
    fl = skeleton_flow if stage == "all" else stage_flow(stage)
    return cast(Mapping[str, Any], _sized(fl, p)(params=p, workdir=str(workdir)))
