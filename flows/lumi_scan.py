"""Flow ``lumi_scan``: seeded random true emittances x batched inversion, in coarse chunks -> ``data/lumi/scan.parquet``.

Replaces the reference's tree_maker workflow (folders, run.sh, a cron loop and ~100 MB JSON per leaf): each chunk is
ONE Prefect task running one batched inversion on the selected task runner and writing a Parquet part; a merge task
writes the table atomically. A progress artifact follows the chunks; a markdown artifact summarises the scan.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Mapping
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.futures import as_completed

from config import PipelineParams
from tasks.artifacts import Progress, publish_table, table_rows
from tasks.caching import locked_stage_workdir, remove_stage_workdir
from tasks.lumi import chunk_plan, merge_scan, run_scan_chunk, scan_shifts

from .naming import run_name_from_context
from .paths import PipelinePaths

__all__ = ["lumi_scan_flow", "scan_markdown"]


def scan_markdown(summary: Mapping[str, Any], chunks: list[Mapping[str, Any]]) -> str:
    """Markdown summary of a scan (for a Prefect artifact)."""
    lines = [
        f"# Luminosity scan: mode {summary['mode']}",
        "",
        "| quantity | value |",
        "|---|---|",
        f"| inversions | {summary['n_inversions']} |",
        f"| residuals per inversion | {summary['n_configs']} |",
        f"| chunks (tasks) | {summary['n_chunks']} |",
        f"| converged | {summary['converged']} |",
        f"| on a bound (not converged) | {summary.get('at_bound', 0)} |",
        f"| solve time per inversion [s] | {summary['time_per_inversion_s']:.4g} |",
    ]
    lines += [f"| mean abs rel. error {n} | {v:.3g} |" for n, v in summary["mean_abs_rel_error"].items()]
    warning = summary.get("warning") or next((c["warning"] for c in chunks if c.get("warning")), None)
    if warning:
        lines += ["", "**Identifiability:** " + warning]
    return "\n".join(lines) + "\n"


@flow(name="lumi_scan", flow_run_name=run_name_from_context("lumi_scan"), log_prints=False)
def lumi_scan_flow(params: PipelineParams, workdir: str = ".") -> Mapping[str, Any]:
    """Run ``lumi_scan.n_inversions`` inversions in chunks of ``lumi_scan.chunk_size``; returns the merge summary."""
    cfg = params.lumi_scan
    paths = PipelinePaths.at(workdir)
    log = get_run_logger()
    plan = chunk_plan(params.lumi_scan.n_inversions, params.lumi_scan.chunk_size)
    log.info(
        "lumi scan: mode %s, %d inversions x %d residuals in %d chunks (%s task runner)",
        params.lumi_scan.mode,
        params.lumi_scan.n_inversions,
        params.lumi_scan.plan.n_configs,
        len(plan),
        params.runtime.task_runner,
    )
    paths.lumi_scan.parent.mkdir(parents=True, exist_ok=True)
    for legacy in paths.lumi_scan.parent.glob(".lumi-scan-*"):  # chunk folders of killed runs of older versions
        shutil.rmtree(legacy, ignore_errors=True)
    progress = Progress("lumi-scan-progress", len(plan), "lumi_scan: chunks done [%]")
    t0 = time.perf_counter()
    shifts = scan_shifts(cfg.plan, eps_nominal=cfg.eps_nominal)  # the design is solved once; chunks get plain data
    design_s = time.perf_counter() - t0
    with locked_stage_workdir(workdir, "lumi_scan") as work:  # chunk parts of a killed run are overwritten, then removed
        futures = [
            run_scan_chunk.submit(
                cfg, c, start, n, f"{work}/chunk{c:05d}.parquet", params.runtime.device, params.runtime.threads, shifts
            )
            for c, start, n in plan
        ]
        done: list[Mapping[str, Any]] = []
        for fut in as_completed(futures):
            done.append(fut.result())
            progress.set(len(done))
        summary = merge_scan(done, str(paths.lumi_scan), cfg, design_s=design_s, timings_path=str(paths.lumi_scan_timings))
        remove_stage_workdir(work)
    create_markdown_artifact(markdown=scan_markdown(summary, done), key="lumi-scan-summary", description="lumi_scan summary")
    publish_table(
        table_rows({k: v for k, v in summary.items() if k != "path"}), key="lumi-scan-table", description="lumi_scan summary"
    )
    log.info(
        "lumi scan written: %s (%.3g s per inversion; timings in %s)",
        paths.lumi_scan,
        summary["time_per_inversion_s"],
        paths.lumi_scan_timings,
    )
    return summary
