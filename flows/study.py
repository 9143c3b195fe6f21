"""Flow ``study``: the benchmark study named by ``study`` (generate -> irradiate -> optimise -> evaluate).

``study: default`` selects the main stages (generate_passives ... evaluate) as the study; this stage then only writes
placeholders (``write_idle_outputs``, called by the CLI without starting Prefect). ``study: ladle_furnace`` runs
TomOpt's ladle-furnace protocol (``tasks.study_ladle``): layouts, one checkpointed task per training epoch (a killed
run resumes from its last epoch), one prediction task per detector (trained, initial, two hand-designed baselines, in
parallel on the task runner), the comparison with bootstrap intervals, plots and UI artifacts.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from prefect import State, flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

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


def _ladle_plots(params: PipelineParams, paths: PipelinePaths, history: list[dict[str, Any]]) -> None:
    import pandas as pd

    from tasks.detector import load_detector
    from tomopt_lib.benchmarks.ladle_furnace import compare_init_to_optimised, compare_optimised_to_baselines
    from tomopt_lib.plotting.study import plot_layouts_overlay

    outs = paths.study_outputs
    plots, data = Path(outs["plots_dir"]), Path(outs["data_dir"])
    cfg = params.studies.ladle_furnace
    frames = {n: pd.read_csv(data / f"pred_{n}.csv") for n in DETECTORS}
    test = {n: f[f["set"] == "test"] for n, f in frames.items()}
    plots.mkdir(parents=True, exist_ok=True)
    save_png(
        compare_optimised_to_baselines(test["baseline_1"], test["baseline_2"], test["trained"], None), plots / "baselines.png"
    )
    save_png(compare_init_to_optimised(test["initial"], test["trained"], None), plots / "initial_vs_trained.png")
    vols = {n: ladle_volume(n, cfg) for n in ("initial", "baseline_1", "baseline_2")}
    vols["trained"] = load_detector(ladle_volume("trained", cfg), str(outs["detector_pt"]))
    save_png(plot_layouts_overlay(vols), plots / "layouts.png")
    from tomopt_lib.plotting.study import plot_metric_intervals

    m = __import__("json").loads(Path(outs["metrics"]).read_text())
    intervals = {n: (d["mse"], *d["mse_ci95"]) for n, d in m["detectors"].items()}
    save_png(
        plot_metric_intervals(intervals, label="fill-height MSE after de-biasing [m$^2$]", title="Ladle furnace, 95 % intervals"),
        plots / "mse.png",
    )
    save_csv(pd.DataFrame(history), outs["history_csv"])


def _ladle(params: PipelineParams, paths: PipelinePaths) -> Mapping[str, Any]:
    log = get_run_logger()
    cfg, dev = params.studies.ladle_furnace, params.runtime.device
    outs = paths.study_outputs
    data, ckpt = str(outs["data_dir"]), str(paths.study_checkpoints / "ladle_furnace")
    Path(data).mkdir(parents=True, exist_ok=True)
    n = cfg.n_epochs
    progress = Progress("study-progress", n + len(DETECTORS), "study ladle_furnace: epochs and detectors done [%]")
    with hold_lock(paths.models_dir / "study_checkpoints.lock", "the checkpoints of stage 'study'"):
        prep = prepare_ladle(ckpt, data, params.seed, cfg, dev)
        previous: State | None = None
        timings: dict[str, Any] = {"epoch_seconds": {}}
        t0 = time.perf_counter()
        for epoch in range(prep["last_epoch"] + 1, n + 1):
            state = run_ladle_epoch(
                ckpt, data, epoch, cfg, prep["fingerprint"], dev, wait_for=[previous] if previous else None, return_state=True
            )
            timings["epoch_seconds"][epoch] = state.result()["seconds"]
            previous = state
            progress.set(epoch)
        res = finalise_ladle(ckpt, n, prep["fingerprint"], cfg, str(outs["detector_pt"]), str(outs["detector_json"]))
    futures = {
        name: predict_ladle.submit(
            name, data, str(Path(data) / f"pred_{name}.csv"), params.seed, cfg, str(outs["detector_pt"]), dev
        )
        for name in DETECTORS
    }
    costs = {}
    for i, (name, fut) in enumerate(futures.items(), 1):
        costs[name] = fut.result()["total_cost"]
        progress.set(n + i)
    timings["train_and_predict_s"] = round(time.perf_counter() - t0, 2)
    write_json(timings, paths.timings_dir / "study.json")
    metrics = compare_ladle(
        {name: str(Path(data) / f"pred_{name}.csv") for name in DETECTORS},
        costs,
        cfg.n_bootstrap,
        params.seed,
        str(Path(data) / "per_volume.csv"),
    )
    metrics["training"] = {"epochs": n, "history": res["history"]}
    write_json(metrics, outs["metrics"])
    det = metrics["detectors"]
    summary = write_summary("study", metrics, outs["summary"])
    _ladle_plots(params, paths, res["history"])
    progress.finish()
    pngs = sorted(Path(outs["plots_dir"]).glob("*.png"))
    publish_images({f.stem: f for f in pngs}, key="tomoflow-study-images", title="Ladle-furnace study")
    create_markdown_artifact(markdown=ladle_markdown(metrics), key="tomoflow-study", description="Ladle-furnace study")
    publish_table(
        [{"detector": k, **{kk: vv for kk, vv in v.items() if not isinstance(vv, list)}} for k, v in det.items()],
        key="tomoflow-study-table",
        description="Ladle-furnace study per detector",
    )
    log.info(
        "ladle furnace: de-biased fill-height MSE trained %.5f, initial %.5f, baselines %.5f / %.5f m^2",
        det["trained"]["mse"],
        det["initial"]["mse"],
        det["baseline_1"]["mse"],
        det["baseline_2"]["mse"],
    )
    return summary


def _u_lorry(params: PipelineParams, paths: PipelinePaths) -> Mapping[str, Any]:
    import pandas as pd

    from tasks.detector import load_detector
    from tomopt_lib.plotting.study import plot_layouts_overlay, plot_metric_intervals, plot_roc_curves

    log = get_run_logger()
    cfg, vol_cfg, dev = params.studies.u_lorry, params.volume, params.runtime.device
    outs = paths.study_outputs
    data, ckpt = str(outs["data_dir"]), str(paths.study_checkpoints / "u_lorry")
    Path(data).mkdir(parents=True, exist_ok=True)
    n = cfg.n_epochs
    progress = Progress("study-progress", n + len(U_LORRY_DETECTORS), "study u_lorry: epochs and detectors done [%]")
    timings: dict[str, Any] = {"epoch_seconds": {}}
    t0 = time.perf_counter()
    with hold_lock(paths.models_dir / "study_checkpoints.lock", "the checkpoints of stage 'study'"):
        prep = prepare_u_lorry(ckpt, data, params.seed, vol_cfg, cfg, dev)
        previous: State | None = None
        for epoch in range(prep["last_epoch"] + 1, n + 1):
            state = run_u_lorry_epoch(
                ckpt,
                data,
                epoch,
                vol_cfg,
                cfg,
                prep["fingerprint"],
                dev,
                wait_for=[previous] if previous else None,
                return_state=True,
            )
            timings["epoch_seconds"][epoch] = state.result()["seconds"]
            previous = state
            progress.set(epoch)
        res = finalise_u_lorry(ckpt, n, prep["fingerprint"], vol_cfg, cfg, str(outs["detector_pt"]), str(outs["detector_json"]))
    csvs = {name: str(Path(data) / f"pred_{name}.csv") for name in U_LORRY_DETECTORS}
    futures = {
        name: predict_u_lorry.submit(name, data, csvs[name], params.seed, vol_cfg, cfg, str(outs["detector_pt"]), dev)
        for name in U_LORRY_DETECTORS
    }
    costs = {}
    for i, (name, fut) in enumerate(futures.items(), 1):
        costs[name] = fut.result()["total_cost"]
        progress.set(n + i)
    timings["train_and_predict_s"] = round(time.perf_counter() - t0, 2)
    write_json(timings, paths.timings_dir / "study.json")
    metrics = compare_u_lorry(csvs, costs, cfg.n_bootstrap, params.seed)
    metrics["training"] = {"epochs": n, "history": res["history"]}
    write_json(metrics, outs["metrics"])
    summary = write_summary("study", metrics, outs["summary"])
    plots = Path(outs["plots_dir"])
    frames = {name: pd.read_csv(p) for name, p in csvs.items()}
    save_png(
        plot_roc_curves({k: (f["score"].to_numpy(), f["target"].to_numpy()) for k, f in frames.items()}, title="U-lorry"),
        plots / "roc.png",
    )
    det = metrics["detectors"]
    intervals = {k: (d["auc"], *d["auc_ci95"]) for k, d in det.items()}
    save_png(
        plot_metric_intervals(intervals, label="ROC AUC (higher is better)", title="U-lorry, 95 % intervals"), plots / "auc.png"
    )
    vols = {name: u_lorry_volume(name, vol_cfg, cfg) for name in ("start", "reference")}
    vols["trained"] = load_detector(u_lorry_volume("trained", vol_cfg, cfg), str(outs["detector_pt"]))
    save_png(plot_layouts_overlay(vols), plots / "layouts.png")
    save_csv(pd.DataFrame(res["history"]), outs["history_csv"])
    progress.finish()
    publish_images({f.stem: f for f in sorted(plots.glob("*.png"))}, key="tomoflow-study-images", title="U-lorry study")
    lines = [
        "# U-lorry study: ROC AUC of the uranium-block probability",
        "",
        "| detector | AUC | 95 % interval |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {k} | {d['auc']:.3f} | [{d['auc_ci95'][0]:.3f}, {d['auc_ci95'][1]:.3f}] |" for k, d in det.items()]
    create_markdown_artifact(markdown="\n".join(lines), key="tomoflow-study", description="U-lorry study")
    log.info("u-lorry: ROC AUC %s", {k: round(d["auc"], 3) for k, d in det.items()})
    return summary


def _small_walls(params: PipelineParams, paths: PipelinePaths) -> Mapping[str, Any]:
    import pandas as pd

    from tasks.detector import load_detector
    from tomopt_lib.plotting.study import plot_layouts_overlay, plot_metric_intervals

    log = get_run_logger()
    cfg, dev = params.studies.small_walls, params.runtime.device
    outs = paths.study_outputs
    data, ckpt = str(outs["data_dir"]), str(paths.study_checkpoints / "small_walls")
    Path(data).mkdir(parents=True, exist_ok=True)
    n = cfg.n_epochs
    progress = Progress("study-progress", n + len(WALLS_DETECTORS), "study small_walls: epochs and detectors done [%]")
    timings: dict[str, Any] = {"epoch_seconds": {}}
    t0 = time.perf_counter()
    with hold_lock(paths.models_dir / "study_checkpoints.lock", "the checkpoints of stage 'study'"):
        prep = prepare_walls(ckpt, data, params.seed, cfg, dev)
        previous: State | None = None
        for epoch in range(prep["last_epoch"] + 1, n + 1):
            state = run_walls_epoch(
                ckpt, data, epoch, cfg, prep["fingerprint"], dev, wait_for=[previous] if previous else None, return_state=True
            )
            timings["epoch_seconds"][epoch] = state.result()["seconds"]
            previous = state
            progress.set(epoch)
        res = finalise_walls(ckpt, n, prep["fingerprint"], cfg, str(outs["detector_pt"]), str(outs["detector_json"]))
    csvs = {name: str(Path(data) / f"pred_{name}.csv") for name in WALLS_DETECTORS}
    futures = {
        name: predict_walls.submit(name, data, csvs[name], params.seed, cfg, str(outs["detector_pt"]), dev)
        for name in WALLS_DETECTORS
    }
    costs = {}
    for i, (name, fut) in enumerate(futures.items(), 1):
        costs[name] = fut.result()["total_cost"]
        progress.set(n + i)
    timings["train_and_predict_s"] = round(time.perf_counter() - t0, 2)
    write_json(timings, paths.timings_dir / "study.json")
    metrics = compare_walls(csvs, costs, cfg.n_bootstrap, params.seed)
    metrics["training"] = {"epochs": n, "history": res["history"]}
    write_json(metrics, outs["metrics"])
    summary = write_summary("study", metrics, outs["summary"])
    plots = Path(outs["plots_dir"])
    det = metrics["detectors"]
    intervals = {k: (d["mean_iou"], *d["mean_iou_ci95"]) for k, d in det.items()}
    save_png(
        plot_metric_intervals(intervals, label="mean wall-mask IoU (higher is better)", title="Small walls, 95 % intervals"),
        plots / "iou.png",
    )
    vols = {name: walls_volume(name, cfg) for name in ("start", "hand")}
    vols["trained"] = load_detector(walls_volume("trained", cfg), str(outs["detector_pt"]))
    save_png(plot_layouts_overlay(vols), plots / "layouts.png")
    save_csv(pd.DataFrame(res["history"]), outs["history_csv"])
    progress.finish()
    publish_images({f.stem: f for f in sorted(plots.glob("*.png"))}, key="tomoflow-study-images", title="Small-walls study")
    lines = ["# Small-walls study: wall-mask IoU", "", "| detector | mean IoU | 95 % interval |", "| --- | --- | --- |"]
    lines += [
        f"| {k} | {d['mean_iou']:.3f} | [{d['mean_iou_ci95'][0]:.3f}, {d['mean_iou_ci95'][1]:.3f}] |" for k, d in det.items()
    ]
    create_markdown_artifact(markdown="\n".join(lines), key="tomoflow-study", description="Small-walls study")
    log.info("small walls: mean IoU %s", {k: round(d["mean_iou"], 3) for k, d in det.items()})
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
