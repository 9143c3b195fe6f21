"""Flow ``report``: metrics JSON, histogram CSV, PNG plots and a Prefect markdown artifact."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from config import PipelineParams
from tasks.artifacts import Progress, publish_images, publish_table, table_rows
from tasks.reporting import build_metrics, metrics_markdown, render_plots
from tasks.summaries import write_summary

from .naming import run_name_from_context
from .paths import PipelinePaths

__all__ = ["report_flow"]


@flow(name="report", flow_run_name=run_name_from_context("report"), log_prints=False)
def report_flow(params: PipelineParams, workdir: str = ".") -> Mapping[str, Any]:
    """Summarise ``data/scatters.parquet`` into ``metrics/report.json``, ``metrics/scatter_angle_hist.csv`` and plots."""
    paths = PipelinePaths.at(workdir)
    log = get_run_logger()
    vol, rep = params.volume, params.report
    progress = Progress("report-progress", 2, "report: metrics and plots done [%]")
    metrics_f = build_metrics.submit(
        str(paths.passives), str(paths.irradiated), str(paths.scatters), str(paths.metrics), str(paths.angle_hist_csv), vol, rep
    )
    plots_f = render_plots.submit(str(paths.passives), str(paths.scatters), {k: str(v) for k, v in paths.plots.items()}, vol, rep)
    metrics = metrics_f.result()
    write_summary("report", metrics, paths.summaries["report"])
    progress.step()
    plots = plots_f.result()
    progress.finish()
    publish_images(
        plots, key="tomoflow-report-images", title="Skeleton report plots (PoCA density, scatter angles, detector layout)"
    )
    create_markdown_artifact(
        markdown=metrics_markdown(metrics), key="tomoflow-skeleton-report", description="Skeleton pipeline metrics"
    )
    publish_table(table_rows(metrics, "metric"), key="tomoflow-report-table", description="Report metrics (every value)")
    log.info("report written: %s; plots: %s", paths.metrics, ", ".join(plots.values()))
    return metrics
