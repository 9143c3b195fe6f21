"""Flow ``evaluate``: the trained detector and fixed baselines predict X0 on held-out passives; metrics and images."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Mapping

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, update_progress_artifact

from tasks.artifacts import publish_images
from tasks.detector import build_reference_volume, build_start_volume, load_detector
from tasks.evaluation import compare_detectors, eval_seed, evaluate_markdown, make_heldout, predict_detector
from tasks.plot_io import save_png
from tomopt_lib.plotting_compare import plot_layouts_overlay

from .params import parse_params
from .paths import PipelinePaths

__all__ = ["evaluate_flow"]


def _publish_layouts(p: Any, paths: PipelinePaths, png: Path) -> None:
    """Start, trained and reference detectors overlaid (side and top view)."""
    vol, budget = p.volume.model_dump(), p.optimise.budget
    start = p.optimise.start.model_dump()
    trained = load_detector(build_start_volume(vol, start, budget=budget), str(paths.optimise_outputs["detector_pt"]))
    vols = {"start": build_start_volume(vol, start, budget=budget), "trained": trained,
            "reference": build_reference_volume(vol, budget=budget)}
    save_png(plot_layouts_overlay(vols), png)


@flow(name="evaluate", flow_run_name="evaluate-seed{params[seed]}", log_prints=False)
def evaluate_flow(params: Dict[str, Any], workdir: str = ".") -> Mapping[str, Any]:
    """Held-out passives (evaluation seed) -> predictions of ``trained`` and each ``evaluate.baselines`` detector
    (submitted in parallel on the task runner) -> ``metrics/evaluate.json``, per-volume CSV, PNGs."""
    p = parse_params(params)
    paths = PipelinePaths.at(workdir)
    log = get_run_logger()
    vol, pas, opt, ev = p.volume.model_dump(), p.passives.model_dump(), p.optimise.model_dump(), p.evaluate.model_dump()
    out = {k: str(v) for k, v in paths.evaluate_outputs.items()}
    heldout = str(paths.heldout_passives)
    make_heldout(heldout, p.seed, vol, pas, ev)
    names = ["trained", *p.evaluate.baselines]
    progress = create_progress_artifact(0.0, key="evaluate-progress", description="evaluate: detectors predicted [%]")
    pred_dir = paths.data_dir / "evaluate"
    futures = {n: predict_detector.submit(n, heldout, str(pred_dir / f"pred_{n}.h5"), p.seed, vol, opt, ev,
                                          str(paths.optimise_outputs["detector_pt"])) for n in names}
    costs = {}
    for i, (n, f) in enumerate(futures.items(), 1):
        costs[n] = f.result()["total_cost"]
        update_progress_artifact(progress, 100.0 * i / (len(names) + 1))
    metrics = compare_detectors(heldout, {n: str(pred_dir / f"pred_{n}.h5") for n in names}, costs, out, p.evaluate.n_images,
                                p.evaluate.n_bootstrap, eval_seed(p.seed, ev), p.volume.voxel_size)
    _publish_layouts(p, paths, Path(out["plots_dir"]) / "layouts.png")
    update_progress_artifact(progress, 100.0)
    pngs = sorted(Path(out["plots_dir"]).glob("*.png")) if Path(out["plots_dir"]).is_dir() else []
    if pngs:
        publish_images({f.stem: f for f in pngs}, key="tomoflow-evaluate-images", title="Held-out evaluation: X0 prediction vs truth and curves")
    create_markdown_artifact(markdown=evaluate_markdown(metrics), key="tomoflow-evaluate", description="Held-out evaluation")
    for k, v in metrics.items():
        if k.startswith("trained_vs_"):
            log.info("%s: MSE(log X0) ratio %.3g, MSE(X0) ratio %.3g (better on %d and %d of %d volumes)", k,
                     v["mean_mse_log_x0_ratio"], v["mean_mse_x0_ratio"], v["volumes_better_mse_log_x0"],
                     v["volumes_better_mse_x0"], metrics["n_volumes"])
    return metrics
