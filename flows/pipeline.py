"""``run_stage`` (one stage, or ``all`` through the ``skeleton`` parent flow) with a task runner sized from the
parameters. Stage flows are imported on demand from the registry (``flows.stages``), so running one stage loads only
that stage's code."""

from __future__ import annotations

import importlib
import logging
import os
import shlex
from collections.abc import Mapping
from typing import Any, cast

from prefect import Flow, flow, get_run_logger, tags
from prefect.task_runners import ThreadPoolTaskRunner

from config import JobqueueParams, PipelineParams, RuntimeParams
from config.sections import walltime_seconds

from .naming import run_tags
from .stages import STAGES

__all__ = [
    "stage_flow",
    "skeleton_flow",
    "run_stage",
    "make_task_runner",
    "jobqueue_runner_kwargs",
    "quiet_dashboard_links",
]


def stage_flow(stage: str) -> Flow[..., Any]:
    """The Prefect flow of DVC stage ``stage`` (imported from its registry module)."""
    spec = STAGES[stage]
    flow_obj: Flow[..., Any] = getattr(importlib.import_module(spec.module), spec.flow)
    return flow_obj


class _NoDashboardLink(logging.Filter):
    """Drops the "dashboard at" / "The Dask dashboard is available at" lines of a cluster started without a dashboard:
    distributed registers its scheduler's HTTP server (health checks; no bokeh, ``dashboard=False``) as service
    "dashboard", so both lines would advertise a page that does not exist."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "dashboard" not in record.getMessage().lower()


_DASHBOARD_LOGGERS = ("distributed.scheduler", "prefect.task_runner.dask")


def quiet_dashboard_links() -> None:
    """Install :class:`_NoDashboardLink` on the loggers that announce a dashboard (idempotent)."""
    for name in _DASHBOARD_LOGGERS:
        lg = logging.getLogger(name)
        if not any(isinstance(f, _NoDashboardLink) for f in lg.filters):
            lg.addFilter(_NoDashboardLink())


def _thread_env(threads: int) -> dict[str, str]:
    n = str(threads)
    return {"OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n, "OPENBLAS_NUM_THREADS": n}


def jobqueue_runner_kwargs(jq: JobqueueParams, threads: int = 1, workdir: str | None = None) -> dict[str, Any]:
    """``DaskTaskRunner`` keyword arguments of ``runtime.task_runner: dask_jobqueue``: the ``dask_jobqueue`` cluster
    class of ``jq.system``, its job keywords (cores, memory, walltime, queue, ...), and ``adapt_kwargs`` when
    ``jq.max_jobs`` is set. Each job first changes to ``workdir`` (default: this process's working directory; the
    tasks' relative paths resolve there, so it must be on a file system the batch nodes share), exports the thread
    counts of ``runtime.threads``, then runs ``jq.setup``. The scheduler runs in this process, without dashboard."""
    cwd = os.path.abspath(workdir if workdir is not None else os.getcwd())
    prologue = [f"cd {shlex.quote(cwd)}", *(f"export {k}={v}" for k, v in _thread_env(threads).items()), *jq.setup]
    kw: dict[str, Any] = {
        "cores": jq.cores,
        "processes": jq.processes,
        "memory": jq.memory,
        "job_name": "tomoflow-worker",
        "job_script_prologue": prologue,
        "scheduler_options": {"dashboard": False, "dashboard_address": "127.0.0.1:0"},
    }
    directives = list(jq.job_directives)
    if jq.system == "htcondor":
        kw["disk"] = jq.disk
        header = dict(line.split("=", 1) for line in directives)
        kw["job_extra_directives"] = {k.strip(): v.strip() for k, v in header.items()}
        if jq.walltime is not None:  # CERN-style pools; other pools set their own key through job_directives
            kw["job_extra_directives"].setdefault("+MaxRuntime", str(walltime_seconds(jq.walltime)))
    else:
        kw["job_extra_directives"] = directives
        for key in ("walltime", "queue", "account"):
            if getattr(jq, key) is not None:
                kw[key] = getattr(jq, key)
    for key in ("python", "interface", "log_directory"):
        if getattr(jq, key) is not None:
            kw[key] = getattr(jq, key)
    out: dict[str, Any] = {"cluster_class": jq.cluster_class, "cluster_kwargs": kw}
    if jq.max_jobs is None:
        kw["n_workers"] = jq.n_jobs * jq.processes  # dask_jobqueue counts workers: processes per job
    else:
        out["adapt_kwargs"] = {"minimum_jobs": jq.n_jobs, "maximum_jobs": jq.max_jobs}
    return out


def make_task_runner(rt: RuntimeParams) -> Any:
    """Task runner of ``runtime.task_runner``: a thread pool of ``task_workers`` threads (default), a local Dask
    cluster of ``task_workers`` single-threaded worker processes (torch and OpenMP threads per worker =
    ``runtime.threads``; no dashboard, nothing on port 8787), the existing Dask cluster at ``runtime.dask_address``,
    or Dask workers in batch jobs (``dask_jobqueue``: SLURM, HTCondor, PBS; see :func:`jobqueue_runner_kwargs`). Dask
    workers run Prefect's task engine themselves: they must reach the Prefect API and the files the tasks read and
    write."""
    if rt.task_runner == "threads":
        return ThreadPoolTaskRunner(max_workers=rt.task_workers)
    from prefect_dask import DaskTaskRunner

    if rt.task_runner == "dask_address":
        return DaskTaskRunner(address=rt.dask_address)
    if rt.task_runner == "dask_jobqueue":
        quiet_dashboard_links()
        return DaskTaskRunner(**jobqueue_runner_kwargs(rt.jobqueue, rt.threads))
    env = _thread_env(rt.threads)
    quiet_dashboard_links()
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
        with tags(*run_tags(name, params)):
            out[name] = _sized(stage_flow(name), params)(params=params, workdir=workdir)
    return out


def run_stage(stage: str, p: PipelineParams, workdir: str = ".") -> Mapping[str, Any]:
    """Run one stage (or ``"all"`` via the ``skeleton`` flow) with validated parameters ``p``."""
    if stage == "all":  # each subflow gets its stage's tags
        return cast(Mapping[str, Any], _sized(skeleton_flow, p)(params=p, workdir=str(workdir)))
    with tags(*run_tags(stage, p)):  # named by the flow itself (flows.naming.run_name_from_context)
        return cast(Mapping[str, Any], _sized(stage_flow(stage), p)(params=p, workdir=str(workdir)))
