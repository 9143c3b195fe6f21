"""Report tasks: metrics (JSON + histogram CSV for ``dvc plots``), PNG plots and a markdown summary."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from config import ReportParams, VolumeParams
from tomopt_lib.io import SCATTER_SCHEMA, CorruptInputError, read_h5_attrs, read_parquet, read_passives, write_json
from tomopt_lib.metrics import MRAD, poca_materials, scatter_metrics
from tomopt_lib.plotting import plot_detector_layout, plot_poca_density_per_layer, plot_scatter_angle_hist
from tomopt_lib.volume.builders import panel_volume_heights

from .common import task_logger
from .outputs import save_csv, save_png
from .volumes import build_volume, passive_shape

__all__ = ["write_angle_hist_csv", "metrics_markdown", "build_metrics", "render_plots"]


def write_angle_hist_csv(df: pd.DataFrame, path: str, *, bins: int, max_angle: float) -> Path:
    """Histogram of reconstructed and true total scatter of reconstructed muons (overflow in the last bin) as CSV."""
    edges = np.linspace(0.0, max_angle, bins + 1)
    reco = df[df["reco_ok"]] if len(df) else df
    cols = {"angle_mrad": np.round((edges[:-1] + edges[1:]) / 2 * MRAD, 6)}
    for name, col in (("reco", "total_scatter"), ("true", "true_total_scatter")):
        a = reco[col].to_numpy(float)
        a = np.clip(a[np.isfinite(a)], 0.0, max_angle * (1 - 1e-9))
        cols[name] = np.histogram(a, bins=edges)[0]
    save_csv(pd.DataFrame(cols), path)
    return Path(path)


def metrics_markdown(metrics: Mapping[str, Any]) -> str:
    """Markdown tables of the report metrics (for a Prefect artifact)."""

    def fmt(v: Any) -> str:
        return "n/a" if v is None else (f"{v:.4g}" if isinstance(v, float) else str(v))

    lines = ["# Muon-tomography skeleton report", "", "| metric | value |", "|---|---|"]
    for section in ("muons", "fractions", "scatter_mrad", "resolution"):
        for k, v in metrics.get(section, {}).items():
            lines.append(f"| {section}.{k} | {fmt(v)} |")
    lines.append(f"| mean_momentum_gev | {fmt(metrics.get('mean_momentum_gev'))} |")
    per = metrics.get("per_material", {})
    if per:
        lines += ["", "| material (PoCA voxel) | n | mean [mrad] | median [mrad] | true median [mrad] |", "|---|---|---|---|---|"]
        for name, m in per.items():
            lines.append(
                f"| {name} | {m['n_poca']} | {fmt(m['mean_scatter_mrad'])} | {fmt(m['median_scatter_mrad'])} | {fmt(m['median_true_scatter_mrad'])} |"
            )
    return "\n".join(lines) + "\n"


def _load(passives_path: str, scatters_path: str, volume_cfg: VolumeParams):
    cubes = [r.x0 for r in read_passives(passives_path, shape=passive_shape(volume_cfg))]
    df = read_parquet(scatters_path, schema=SCATTER_SCHEMA)
    vid = df["volume_id"].to_numpy()
    if len(vid) and (vid.min() < 0 or vid.max() >= len(cubes)):
        raise CorruptInputError(
            f"{scatters_path}: volume_id outside 0..{len(cubes) - 1} (the volumes of {passives_path}); "
            "re-run the stages that write them"
        )
    _, _, z_bottom = panel_volume_heights(volume_cfg.passive_n_layers, volume_cfg.voxel_size)
    return cubes, df, poca_materials(df, cubes, voxel_size=volume_cfg.voxel_size, z_bottom=z_bottom)


@task(name="build-metrics", task_run_name="build-metrics", cache_policy=NO_CACHE, persist_result=False)
def build_metrics(
    passives_path: str,
    irradiated_path: str,
    scatters_path: str,
    metrics_path: str,
    hist_csv_path: str,
    volume_cfg: VolumeParams,
    report: ReportParams,
) -> dict[str, Any]:
    """Write ``metrics_path`` (JSON) and ``hist_csv_path`` (scatter-angle histogram); return the metrics."""
    cubes, df, materials = _load(passives_path, scatters_path, volume_cfg)
    n_generated = int(read_h5_attrs(irradiated_path, "muon_hits").get("n_generated", 0))
    metrics = scatter_metrics(df, materials, n_generated, len(cubes))
    write_json(metrics, metrics_path)
    write_angle_hist_csv(df, hist_csv_path, bins=report.angle_bins, max_angle=report.max_angle)
    task_logger().info(
        "report: %d generated, %d reconstructed, %d PoCAs inside",
        n_generated,
        metrics["muons"]["reconstructed"],
        metrics["muons"]["poca_inside"],
    )
    return metrics


@task(name="render-plots", task_run_name="render-plots", cache_policy=NO_CACHE, persist_result=False)
def render_plots(
    passives_path: str,
    scatters_path: str,
    plot_paths: Mapping[str, str],
    volume_cfg: VolumeParams,
    report: ReportParams,
) -> dict[str, str]:
    """Write the PoCA-density, scatter-angle and detector-layout PNGs to ``plot_paths`` (keys ``poca_density``,
    ``scatter_angle``, ``detector_layout``); returns the paths."""
    cubes, df, materials = _load(passives_path, scatters_path, volume_cfg)
    size, n_layers = volume_cfg.voxel_size, volume_cfg.passive_n_layers
    _, _, z_bottom = panel_volume_heights(n_layers, size)
    ins = df["poca_inside"].to_numpy(bool)
    reco = df["reco_ok"].to_numpy(bool)
    series = {"all (reco)": df.loc[reco, "total_scatter"].to_numpy(), "all (true)": df.loc[reco, "true_total_scatter"].to_numpy()}
    for m in sorted(set(materials[ins])):
        series[f"PoCA in {m}"] = df.loc[ins & (materials == m), "total_scatter"].to_numpy()
    figs = {
        "poca_density": plot_poca_density_per_layer(
            df.loc[ins, ["poca_x", "poca_y", "poca_z"]].to_numpy(float),
            lw=list(volume_cfg.lw),
            z_bottom=z_bottom,
            size=size,
            n_layers=n_layers,
            bins_per_voxel=report.poca_bins_per_voxel,
        ),
        "scatter_angle": plot_scatter_angle_hist(series, bins=report.angle_bins, max_angle=report.max_angle),
        "detector_layout": plot_detector_layout(build_volume(volume_cfg, "cpu"), x0_cube=cubes[0] if cubes else None),
    }
    for key, fig in figs.items():
        save_png(fig, plot_paths[key], dpi=80)
    return dict(plot_paths)
