"""Final task of ``optimise``: trained detector files, training metrics, loss / panel CSVs, plots, markdown."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from config import OptimiseParams, VolumeParams
from tomopt_lib.io import write_json
from tomopt_lib.plotting import plot_detector_layout
from tomopt_lib.plotting.study import plot_loss_history, plot_panels_per_epoch

from .common import task_logger
from .detector import build_start_volume, describe_detector, write_detector
from .optimisation import checkpoint_path, load_checkpoint
from .outputs import save_csv, save_png

__all__ = ["finalise_optimisation", "train_markdown"]


@task(name="optimise-finalise", cache_policy=NO_CACHE, persist_result=False)
def finalise_optimisation(
    ckpt_dir: str, n_epochs: int, fingerprint: str, volume_cfg: VolumeParams, opt: OptimiseParams, out: Mapping[str, str]
) -> dict[str, Any]:
    """From the checkpoint of ``n_epochs``: ``out["detector_pt"]``, ``out["detector_json"]``, ``out["metrics"]``,
    ``out["loss_csv"]``, ``out["panels_csv"]``, ``out["layout_png"]``, ``out["loss_png"]`` (and ``out["panels_png"]``: the
    panels per epoch, if given); returns
    ``{"metrics", "history"}`` (scalars only)."""
    state = load_checkpoint(checkpoint_path(ckpt_dir, n_epochs), fingerprint)
    start = build_start_volume(volume_cfg, opt.start, budget=opt.budget)
    start_desc = describe_detector(start)
    vol = build_start_volume(volume_cfg, opt.start, budget=opt.budget)
    vol.load_state_dict(state["volume"])
    hist = pd.DataFrame(state["history"][:n_epochs])
    # no run fingerprint here: it hashes all of tomopt_lib/tasks (checkpoint safety), more than the stage's DVC deps,
    # so a versioned output carrying it would change in a fresh clone after an unrelated code change
    desc = write_detector(vol, out["detector_pt"], out["detector_json"], extra={"trained_epochs": n_epochs})
    save_csv(hist[["epoch", "train_loss", "valid_loss"]], out["loss_csv"])
    panels = pd.DataFrame([r for r in state["panels"] if r["epoch"] <= n_epochs])
    save_csv(panels, out["panels_csv"])
    if "panels_png" in out and not panels.empty:
        save_png(plot_panels_per_epoch(panels), out["panels_png"], dpi=80)
    save_png(plot_detector_layout(vol), out["layout_png"], dpi=80)
    save_png(plot_loss_history(hist), out["loss_png"], dpi=80)

    def fin(x: Any) -> Any:
        return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else x

    spans = np.array([p["span"] for p in desc["panels"]])
    centre_off = np.array([p["xy"] for p in desc["panels"]]) - np.asarray(volume_cfg.lw) / 2
    metrics = {
        "epochs": n_epochs,
        "inferrer": opt.inferrer,
        "optimiser": opt.optimiser,
        "loss": {
            "train_first": fin(float(hist["train_loss"].iloc[0])),
            "train_last": fin(float(hist["train_loss"].iloc[-1])),
            "valid_first": fin(float(hist["valid_loss"].iloc[0])),
            "valid_last": fin(float(hist["valid_loss"].iloc[-1])),
            "valid_best": fin(float(hist["valid_loss"].min())) if hist["valid_loss"].notna().any() else None,
        },
        "updates": {
            "applied": int(hist["n_updates"].sum()),
            "rejected": int(hist["n_rejected"].sum()),
            "recoveries": int(hist["n_recoveries"].sum()),
        },
        "detector": {
            "total_cost_start": start_desc["total_cost"],
            "total_cost": desc["total_cost"],
            "mean_span": float(spans.mean()),
            "mean_abs_centre_offset": float(np.abs(centre_off).mean()),
        },
    }
    write_json(metrics, out["metrics"])
    write_json({"seconds_per_epoch": float(hist["seconds"].mean()), "seconds": hist["seconds"].tolist()}, out["timings"])
    task_logger().info("trained detector (%d epochs) written to %s", n_epochs, out["detector_pt"])
    return {
        "metrics": metrics,
        "history": [{k: fin(v) if isinstance(v, float) else v for k, v in r.items()} for r in hist.to_dict("records")],
    }


def train_markdown(m: Mapping[str, Any], rows: list[Mapping[str, Any]]) -> str:
    """Markdown summary: headline metrics, then the per-epoch table."""
    lines = ["# Detector optimisation", "", "| metric | value |", "| --- | --- |"]
    for sec in ("loss", "updates", "detector"):
        for k, v in m[sec].items():
            lines.append(f"| {sec}.{k} | {v if not isinstance(v, float) else f'{v:.4g}'} |")
    lines += ["", "| epoch | train loss | valid loss | updates | s |", "| --- | --- | --- | --- | --- |"]

    def f(v: Any) -> str:
        return "n/a" if v is None else f"{v:.4g}"

    lines += [
        f"| {r['epoch']} | {f(r['train_loss'])} | {f(r['valid_loss'])} | {r['n_updates']} | {r['seconds']:.1f} |" for r in rows
    ]
    return "\n".join(lines)
