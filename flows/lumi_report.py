"""Flow ``lumi_report``: ``metrics/lumi.json`` (and its DVC summary), CSVs, PNGs under ``plots/lumi/`` (penalty landscapes of
the 12, xy and xy-with-noise cases with the optimiser's path, the relative luminosity error per iteration of those
inversions, relative-error and pull histograms, estimate vs truth) and a Prefect markdown artifact with the metrics
table."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from config import PipelineParams
from tasks.artifacts import Progress, publish_images, publish_table
from tasks.lumi_report import (
    LANDSCAPE_CASES,
    build_lumi_metrics,
    landscape_case,
    lumi_metrics_markdown,
    render_iteration_plot,
    render_scan_plots,
)
from tasks.summaries import lumi_table, write_summary

from .naming import run_name_from_context
from .paths import PipelinePaths

__all__ = ["lumi_report_flow"]


def _scan_timings(paths: PipelinePaths) -> dict[str, Any] | None:
    """The untracked timings of the scan (``timings/lumi_scan.json``) if the scan ran here, else None."""
    try:
        return dict(json.loads(paths.lumi_scan_timings.read_text()))
    except (OSError, ValueError):
        return None


@flow(name="lumi_report", flow_run_name=run_name_from_context("lumi_report"), log_prints=False)
def lumi_report_flow(params: PipelineParams, workdir: str = ".") -> Mapping[str, Any]:
    """Summarise ``data/lumi/scan.parquet`` and draw the three penalty landscapes; returns the metrics."""
    paths = PipelinePaths.at(workdir)
    log = get_run_logger()
    rep = params.lumi_report
    plots = {k: str(v) for k, v in paths.lumi_plots.items()}
    progress = Progress("lumi-report-progress", len(LANDSCAPE_CASES) + 2, "lumi_report: tasks done [%]")
    land_f = {
        case: landscape_case.submit(case, plots[f"penalty_{case}"], rep, params.runtime.device, params.runtime.threads)
        for case in LANDSCAPE_CASES
    }
    dist_f = render_scan_plots.submit(str(paths.lumi_scan), plots, rep)
    landscapes = {}
    for i, (case, fut) in enumerate(land_f.items(), start=1):
        landscapes[case] = fut.result()
        progress.set(i)
    dist_f.result()
    render_iteration_plot(landscapes, plots["rel_lumi_error"])
    progress.set(len(land_f) + 1)
    metrics = build_lumi_metrics(
        str(paths.lumi_scan),
        str(paths.lumi_metrics),
        {k: str(v) for k, v in paths.lumi_csvs.items()},
        rep,
        landscapes,
        timings_path=str(paths.lumi_report_timings),
    )
    write_summary("lumi_report", metrics, paths.summaries["lumi_report"])
    progress.finish()
    publish_images(plots, key="lumi-report-images", title="Luminosity penalty landscapes and estimate distributions")
    create_markdown_artifact(
        markdown=lumi_metrics_markdown(metrics, _scan_timings(paths)),
        key="lumi-report",
        description="Luminosity inversion metrics",
    )
    publish_table(lumi_table(metrics), key="lumi-report-table", description="Luminosity inversion errors per unknown")
    log.info("lumi report written: %s; plots under %s", paths.lumi_metrics, paths.lumi_plots["penalty_12"].parent)
    return metrics
