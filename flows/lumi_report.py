"""Flow ``lumi_report``: ``metrics/lumi.json``, CSVs for ``dvc plots``, PNGs under ``plots/lumi/`` (penalty landscapes of
the 12, xy and xy-with-noise cases with the optimiser's path, the relative luminosity error per iteration of those
inversions, relative-error and pull histograms, estimate vs truth) and a Prefect markdown artifact with the metrics
table."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from config import PipelineParams
from tasks.artifacts import Progress, publish_images
from tasks.lumi_report import (
    LANDSCAPE_CASES,
    build_lumi_metrics,
    landscape_case,
    lumi_metrics_markdown,
    render_iteration_plot,
    render_scan_plots,
)

from .paths import PipelinePaths

__all__ = ["lumi_report_flow"]


@flow(name="lumi_report", flow_run_name="lumi-report-seed{params.lumi_scan.seed}", log_prints=False)
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
        str(paths.lumi_scan), str(paths.lumi_metrics), {k: str(v) for k, v in paths.lumi_csvs.items()}, rep, landscapes
    )
    progress.finish()
    publish_images(plots, key="lumi-report-images", title="Luminosity penalty landscapes and estimate distributions")
    create_markdown_artifact(
        markdown=lumi_metrics_markdown(metrics), key="lumi-report", description="Luminosity inversion metrics"
    )
    log.info("lumi report written: %s; plots under %s", paths.lumi_metrics, paths.lumi_plots["penalty_12"].parent)
    return metrics
