"""Flow ``study``: the benchmark study named by ``study`` (generate -> irradiate -> optimise -> evaluate).

``study: default`` selects the main stages (generate_passives ... evaluate) as the study; this stage then only writes
placeholders (``write_idle_outputs``, called by the CLI without starting Prefect). ``study: ladle_furnace`` runs
TomOpt's ladle-furnace protocol (``tasks.study_ladle``): layouts, one checkpointed task per training epoch (a killed
run resumes from its last epoch), one prediction task per detector (trained, initial, two hand-designed baselines, in
parallel on the task runner), the comparison with bootstrap intervals, plots and UI artifacts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import State, flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.futures import PrefectFuture

from config import PipelineParams
from tasks.artifacts import Progress, publish_images, publish_table
from tasks.caching import hold_lock
from tasks.outputs import save_csv, save_png
from tasks.study_ladle import (
    DETECTORS,
    compare_ladle,
    finalise_ladle,
    ladle_volume,
    predict_ladle,
    prepare_ladle,
    run_ladle_epoch,
)
from tasks.study_small_walls import (
    WALLS_DETECTORS,
    compare_walls,
    finalise_walls,
    predict_walls,
    prepare_walls,
    run_walls_epoch,
    walls_volume,
)
from tasks.study_u_lorry import (
    U_LORRY_DETECTORS,
    compare_u_lorry,
    finalise_u_lorry,
    predict_u_lorry,
    prepare_u_lorry,
    run_u_lorry_epoch,
    u_lorry_volume,
)
from tasks.summaries import write_summary
from tomopt_lib.io import write_json

from .naming import run_name_from_context
from .paths import PipelinePaths
from .study_idle import write_idle_outputs

__all__ = ["study_flow", "ladle_markdown"]


def ladle_markdown(m: Mapping[str, Any]) -> str:
    """Markdown table of the ladle-furnace comparison (ours beside the published numbers)."""
    lines = [
        "# Ladle-furnace study: fill-height MSE after linear de-biasing [m^2]",
        "",
        f"{m['n_test']} test layouts; de-biasing fitted on the training layouts (out of sample)",
        "",
        "| detector | MSE | 95 % interval | raw MSE | within 5 cm | pull RMS | published |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, d in m["detectors"].items():
        lo, hi = d["mse_ci95"]
        pull = "-" if d["pull_rms"] is None else f"{d['pull_rms']:.2f}"
        lines.append(
            f"| {name} | {d['mse']:.5f} | [{lo:.5f}, {hi:.5f}] | {d['mse_raw']:.5f} | {d['within_5cm']:.2f} | {pull} | "
            f"{d['published_mse']} |"
        )
    for k, v in m.items():
        if k.startswith("trained_vs_"):
            lo, hi = v["mse_ratio_ci95"]
            lines.append(f"\n**{k}**: MSE ratio {v['mse_ratio']:.3g}, 95 % interval [{lo:.3g}, {hi:.3g}]")
    return "\n".join(lines)


@dataclass(frozen=True)
class _Trained:
    """What the shared train-and-predict part hands to a study's comparison: the history, costs, prediction files."""

    history: list[dict[str, Any]]
    costs: dict[str, float]
    csvs: dict[str, str]
    progress: Progress


def _train_and_predict(
    paths: PipelinePaths,
    study: str,
    n_epochs: int,
    detectors: Sequence[str],
    *,
    prepare: Callable[[str, str], Mapping[str, Any]],
    run_epoch: Callable[[str, str, int, str, list[State] | None], State],
    finalise: Callable[[str, str], Mapping[str, Any]],
    predict: Callable[[str, str, str], PrefectFuture[Any]],
) -> _Trained:
    """Layouts and the epoch-0 checkpoint (``prepare(ckpt, data)``), one chained checkpointed task per remaining epoch
    (``run_epoch(ckpt, data, epoch, fingerprint, wait_for)``), the trained detector (``finalise(ckpt, fingerprint)``),
    then one prediction task per detector in parallel (``predict(name, data, csv)``); wall times to timings/."""
    outs = paths.study_outputs
    data, ckpt = str(outs["data_dir"]), str(paths.study_checkpoints / study)
    Path(data).mkdir(parents=True, exist_ok=True)
    progress = Progress("study-progress", n_epochs + len(detectors), f"study {study}: epochs and detectors done [%]")
    timings: dict[str, Any] = {"epoch_seconds": {}}
    t0 = time.perf_counter()
    with hold_lock(paths.models_dir / "study_checkpoints.lock", "the checkpoints of stage 'study'"):
        prep = prepare(ckpt, data)
        previous: State | None = None
        for epoch in range(int(prep["last_epoch"]) + 1, n_epochs + 1):
            state = run_epoch(ckpt, data, epoch, str(prep["fingerprint"]), [previous] if previous else None)
            timings["epoch_seconds"][epoch] = state.result()["seconds"]
            previous = state
            progress.set(epoch)
        res = finalise(ckpt, str(prep["fingerprint"]))
    csvs = {name: str(Path(data) / f"pred_{name}.csv") for name in detectors}
    futures = {name: predict(name, data, csvs[name]) for name in detectors}
    costs = {}
    for i, (name, fut) in enumerate(futures.items(), 1):
        costs[name] = float(fut.result()["total_cost"])
        progress.set(n_epochs + i)
    timings["train_and_predict_s"] = round(time.perf_counter() - t0, 2)
    write_json(timings, paths.timings_dir / "study.json")
    return _Trained(list(res["history"]), costs, csvs, progress)


def _publish(paths: PipelinePaths, metrics: dict[str, Any], run: _Trained, title: str, markdown: str) -> Mapping[str, Any]:
    """Full metrics (with the training history), DVC summary, history CSV, PNG and markdown artifacts."""
    import pandas as pd

    outs = paths.study_outputs
    metrics["training"] = {"epochs": len(run.history), "history": run.history}
    write_json(metrics, outs["metrics"])
    summary = write_summary("study", metrics, outs["summary"])
    save_csv(pd.DataFrame(run.history), outs["history_csv"])
    run.progress.finish()
    pngs = sorted(Path(outs["plots_dir"]).glob("*.png"))
    publish_images({f.stem: f for f in pngs}, key="tomoflow-study-images", title=title)
    create_markdown_artifact(markdown=markdown, key="tomoflow-study", description=title)
    return summary


def _layouts_png(paths: PipelinePaths, vols: dict[str, Any], trained: Any) -> None:
    from tasks.detector import load_detector
    from tomopt_lib.plotting.study import plot_layouts_overlay

    vols["trained"] = load_detector(trained, str(paths.study_outputs["detector_pt"]))
    save_png(plot_layouts_overlay(vols), Path(paths.study_outputs["plots_dir"]) / "layouts.png")


def _intervals_png(
    paths: PipelinePaths, values: dict[str, tuple[float, float, float]], label: str, title: str, name: str
) -> None:
    from tomopt_lib.plotting.study import plot_metric_intervals

    save_png(plot_metric_intervals(values, label=label, title=title), Path(paths.study_outputs["plots_dir"]) / name)


def _interval_markdown(title: str, column: str, detectors: Mapping[str, Mapping[str, Any]], key: str) -> str:
    """Markdown table of one metric per detector, ``detectors[name][key]`` with its ``<key>_ci95`` interval."""
    lines = [f"# {title}", "", f"| detector | {column} | 95 % interval |", "| --- | --- | --- |"]
    for name, d in detectors.items():
        lo, hi = d[f"{key}_ci95"]
        lines.append(f"| {name} | {d[key]:.3f} | [{lo:.3f}, {hi:.3f}] |")
    return "\n".join(lines)


def _ladle(params: PipelineParams, paths: PipelinePaths) -> Mapping[str, Any]:
    import pandas as pd

    from tomopt_lib.benchmarks.ladle_furnace import compare_init_to_optimised, compare_optimised_to_baselines

    cfg, dev, pt = params.studies.ladle_furnace, params.runtime.device, str(paths.study_outputs["detector_pt"])
    run = _train_and_predict(
        paths,
        "ladle_furnace",
        cfg.n_epochs,
        DETECTORS,
        prepare=lambda ckpt, data: prepare_ladle(ckpt, data, params.seed, cfg, dev),
        run_epoch=lambda ckpt, data, e, fp, wait: run_ladle_epoch(ckpt, data, e, cfg, fp, dev, wait_for=wait, return_state=True),
        finalise=lambda ckpt, fp: finalise_ladle(ckpt, cfg.n_epochs, fp, cfg, pt, str(paths.study_outputs["detector_json"])),
        predict=lambda name, data, csv: predict_ladle.submit(name, data, csv, params.seed, cfg, pt, dev),
    )
    data = Path(paths.study_outputs["data_dir"])
    metrics = compare_ladle(run.csvs, run.costs, cfg.n_bootstrap, params.seed, str(data / "per_volume.csv"))
    plots = Path(paths.study_outputs["plots_dir"])
    test = {n: (f := pd.read_csv(p))[f["set"] == "test"] for n, p in run.csvs.items()}
    save_png(
        compare_optimised_to_baselines(test["baseline_1"], test["baseline_2"], test["trained"], None), plots / "baselines.png"
    )
    save_png(compare_init_to_optimised(test["initial"], test["trained"], None), plots / "initial_vs_trained.png")
    det = metrics["detectors"]
    _intervals_png(
        paths,
        {n: (d["mse"], *d["mse_ci95"]) for n, d in det.items()},
        "fill-height MSE after de-biasing [m$^2$]",
        "Ladle furnace, 95 % intervals",
        "mse.png",
    )
    _layouts_png(paths, {n: ladle_volume(n, cfg) for n in ("initial", "baseline_1", "baseline_2")}, ladle_volume("trained", cfg))
    summary = _publish(paths, metrics, run, "Ladle-furnace study", ladle_markdown(metrics))
    publish_table(
        [{"detector": k, **{kk: vv for kk, vv in v.items() if not isinstance(vv, list)}} for k, v in det.items()],
        key="tomoflow-study-table",
        description="Ladle-furnace study per detector",
    )
    get_run_logger().info(
        "ladle furnace: de-biased fill-height MSE trained %.5f, initial %.5f, baselines %.5f / %.5f m^2",
        det["trained"]["mse"],
        det["initial"]["mse"],
        det["baseline_1"]["mse"],
        det["baseline_2"]["mse"],
    )
    return summary


def _u_lorry(params: PipelineParams, paths: PipelinePaths) -> Mapping[str, Any]:
    import pandas as pd

    from tomopt_lib.plotting.study import plot_roc_curves

    cfg, vol_cfg, dev = params.studies.u_lorry, params.volume, params.runtime.device
    pt = str(paths.study_outputs["detector_pt"])
    run = _train_and_predict(
        paths,
        "u_lorry",
        cfg.n_epochs,
        U_LORRY_DETECTORS,
        prepare=lambda ckpt, data: prepare_u_lorry(ckpt, data, params.seed, vol_cfg, cfg, dev),
        run_epoch=lambda ckpt, data, e, fp, wait: run_u_lorry_epoch(
            ckpt, data, e, vol_cfg, cfg, fp, dev, wait_for=wait, return_state=True
        ),
        finalise=lambda ckpt, fp: finalise_u_lorry(
            ckpt, cfg.n_epochs, fp, vol_cfg, cfg, pt, str(paths.study_outputs["detector_json"])
        ),
        predict=lambda name, data, csv: predict_u_lorry.submit(name, data, csv, params.seed, vol_cfg, cfg, pt, dev),
    )
    metrics = compare_u_lorry(run.csvs, run.costs, cfg.n_bootstrap, params.seed)
    frames = {name: pd.read_csv(p) for name, p in run.csvs.items()}
    curves = {k: (f["score"].to_numpy(), f["target"].to_numpy()) for k, f in frames.items()}
    save_png(plot_roc_curves(curves, title="U-lorry"), Path(paths.study_outputs["plots_dir"]) / "roc.png")
    det = metrics["detectors"]
    _intervals_png(
        paths,
        {k: (d["auc"], *d["auc_ci95"]) for k, d in det.items()},
        "ROC AUC (higher is better)",
        "U-lorry, 95 % intervals",
        "auc.png",
    )
    _layouts_png(
        paths, {n: u_lorry_volume(n, vol_cfg, cfg) for n in ("start", "reference")}, u_lorry_volume("trained", vol_cfg, cfg)
    )
    table = _interval_markdown("U-lorry study: ROC AUC of the uranium-block probability", "AUC", det, "auc")
    summary = _publish(paths, metrics, run, "U-lorry study", table)
    get_run_logger().info("u-lorry: ROC AUC %s", {k: round(d["auc"], 3) for k, d in det.items()})
    return summary


def _small_walls(params: PipelineParams, paths: PipelinePaths) -> Mapping[str, Any]:
    cfg, dev, pt = params.studies.small_walls, params.runtime.device, str(paths.study_outputs["detector_pt"])
    run = _train_and_predict(
        paths,
        "small_walls",
        cfg.n_epochs,
        WALLS_DETECTORS,
        prepare=lambda ckpt, data: prepare_walls(ckpt, data, params.seed, cfg, dev),
        run_epoch=lambda ckpt, data, e, fp, wait: run_walls_epoch(ckpt, data, e, cfg, fp, dev, wait_for=wait, return_state=True),
        finalise=lambda ckpt, fp: finalise_walls(ckpt, cfg.n_epochs, fp, cfg, pt, str(paths.study_outputs["detector_json"])),
        predict=lambda name, data, csv: predict_walls.submit(name, data, csv, params.seed, cfg, pt, dev),
    )
    metrics = compare_walls(run.csvs, run.costs, cfg.n_bootstrap, params.seed)
    det = metrics["detectors"]
    _intervals_png(
        paths,
        {k: (d["mean_iou"], *d["mean_iou_ci95"]) for k, d in det.items()},
        "mean wall-mask IoU (higher is better)",
        "Small walls, 95 % intervals",
        "iou.png",
    )
    _layouts_png(paths, {n: walls_volume(n, cfg) for n in ("start", "hand")}, walls_volume("trained", cfg))
    table = _interval_markdown("Small-walls study: wall-mask IoU", "mean IoU", det, "mean_iou")
    summary = _publish(paths, metrics, run, "Small-walls study", table)
    get_run_logger().info("small walls: mean IoU %s", {k: round(d["mean_iou"], 3) for k, d in det.items()})
    return summary


_RUNNERS: dict[str, Callable[[PipelineParams, PipelinePaths], Mapping[str, Any]]] = {
    "ladle_furnace": _ladle,
    "u_lorry": _u_lorry,
    "small_walls": _small_walls,
}
"""Study name -> its runner (``study: default`` never reaches one)."""


@flow(name="study", flow_run_name=run_name_from_context("study"), log_prints=False)
def study_flow(params: PipelineParams, workdir: str = ".") -> Mapping[str, Any]:
    """Run the study named by ``params.study`` (``default``: placeholders only)."""
    paths = PipelinePaths.at(workdir)
    if params.study == "default":
        return write_idle_outputs(paths)
    return _RUNNERS[params.study](params, paths)
