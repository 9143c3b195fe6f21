"""Flow ``evaluate``: the trained detector and fixed baselines predict X0 on held-out passives; metrics and images."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from config import PipelineParams
from tasks.artifacts import Progress, publish_images, publish_table
from tasks.detector import build_reference_volume, build_start_volume, load_detector
from tasks.evaluation import compare_detectors, eval_seed, evaluate_markdown, make_heldout, predict_detector
from tasks.outputs import save_png
from tasks.summaries import evaluate_table, write_summary
from tomopt_lib.plotting.study import plot_layouts_overlay

from .naming import run_name_from_context
from .paths import PipelinePaths

__all__ = ["evaluate_flow"]


def _publish_layouts(params: PipelineParams, paths: PipelinePaths, png: Path) -> None:
    """Start, trained and reference detectors overlaid (side and top view)."""
    vol, budget = params.volume, params.optimise.budget
    start = params.optimise.start
    trained = load_detector(build_start_volume(vol, start, budget=budget), str(paths.optimise_outputs["detector_pt"]))
    vols = {
        "start": build_start_volume(vol, start, budget=budget),
        "trained": trained,
        "reference": build_reference_volume(vol, budget=budget),
    }
    save_png(plot_layouts_overlay(vols), png)


@flow(name="evaluate", flow_run_name=run_name_from_context("evaluate"), log_prints=False)
def evaluate_flow(params: PipelineParams, workdir: str = ".") -> Mapping[str, Any]:
    """Held-out passives (evaluation seed) -> predictions of ``trained`` and each ``evaluate.baselines`` detector
    (submitted in parallel on the task runner) -> ``metrics/evaluate.json``, per-volume CSV, PNGs."""
    paths = PipelinePaths.at(workdir)
    log = get_run_logger()
    vol, pas, opt, ev = params.volume, params.passives, params.optimise, params.evaluate
    out = {k: str(v) for k, v in paths.evaluate_outputs.items()}
    heldout = str(paths.heldout_passives)
    make_heldout(heldout, params.seed, vol, pas, ev)
    names = ["trained", *params.evaluate.baselines]
    progress = Progress("evaluate-progress", len(names) + 1, "evaluate: detectors predicted [%]")
    pred_dir = paths.evaluate_predictions
    futures = {
        n: predict_detector.submit(
            n,
            heldout,
            str(pred_dir / f"pred_{n}.h5"),
            params.seed,
            vol,
            opt,
            ev,
            str(paths.optimise_outputs["detector_pt"]),
            params.runtime.device,
        )
        for n in names
    }
    costs = {}
    for i, (n, f) in enumerate(futures.items(), 1):
        costs[n] = f.result()["total_cost"]
        progress.set(i)
    metrics = compare_detectors(
        heldout,
        {n: str(pred_dir / f"pred_{n}.h5") for n in names},
        costs,
        out,
        params.evaluate.n_images,
        params.evaluate.n_bootstrap,
        eval_seed(params.seed, ev),
        params.volume.voxel_size,
    )
    write_summary("evaluate", metrics, paths.summaries["evaluate"])
    _publish_layouts(params, paths, Path(out["plots_dir"]) / "layouts.png")
    progress.finish()
    pngs = sorted(Path(out["plots_dir"]).glob("*.png")) if Path(out["plots_dir"]).is_dir() else []
    if pngs:
        publish_images(
            {f.stem: f for f in pngs},
            key="tomoflow-evaluate-images",
            title="Held-out evaluation: X0 prediction vs truth and curves",
        )
    create_markdown_artifact(markdown=evaluate_markdown(metrics), key="tomoflow-evaluate", description="Held-out evaluation")
    publish_table(evaluate_table(metrics), key="tomoflow-evaluate-table", description="Held-out evaluation per detector")
    for k, v in metrics.items():
        if k.startswith("trained_vs_"):
            log.info(
                "%s: MSE(log X0) ratio %.3g, MSE(X0) ratio %.3g (better on %d and %d of %d volumes)",
                k,
                v["mean_mse_log_x0_ratio"],
                v["mean_mse_x0_ratio"],
                v["volumes_better_mse_log_x0"],
                v["volumes_better_mse_x0"],
                metrics["n_volumes"],
            )
    return metrics
