"""Plumbing shared by the benchmark studies' tasks: checkpoints, start-or-resume, layout files, per-epoch rates.

A study's checkpoint ``<ckpt_dir>/epoch_NNNN.pt`` holds the wrapper's training state, the history rows and the panel
rows (written atomically); ``run.json`` holds the fingerprint of the parameters and code that shaped the epochs: a
mismatch starts the run afresh, a match resumes after the last readable epoch.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tomopt_lib.io import read_json, read_passives, save_torch, write_json
from tomopt_lib.optimisation.callbacks import Callback, NoMoreNaNs
from tomopt_lib.optimisation.data import PassiveYielder
from tomopt_lib.optimisation.wrapper import PanelVolumeWrapper
from tomopt_lib.volume import Volume
from tomopt_lib.volume.builders import rad_length_func_from_cube

from .common import task_logger
from .detector import panel_rows, write_detector
from .optimisation import LossRecorder, checkpoint_path, last_complete_epoch, load_checkpoint

__all__ = [
    "save_study_checkpoint",
    "start_or_resume",
    "study_layouts",
    "set_epoch_rates",
    "train_study_epoch",
    "finalise_study",
    "ci95",
    "trained_versus",
    "OPTIMISER_GROUPS",
]

OPTIMISER_GROUPS = ("xy_pos_opt", "z_pos_opt", "xy_span_opt", "budget_opt")
"""The wrapper's optimiser names, in the order of a ``StudyRates`` (xy, z, xy_span, budget)."""


def save_study_checkpoint(
    vw: PanelVolumeWrapper, path: Path, epoch: int, fingerprint: str, history: list[dict[str, Any]], panels: list[dict[str, Any]]
) -> None:
    """Atomically write the wrapper's training state with the run's history and panel rows."""
    state = {"schema_version": 1, "fingerprint": fingerprint, "epoch": epoch, **vw.training_state()}
    save_torch({**state, "history": history, "panels": panels}, path)


def start_or_resume(ckpt_dir: str, fingerprint: str, seed: int, n_epochs: int, start: Callable[[], PanelVolumeWrapper]) -> int:
    """Checkpoints of another fingerprint are removed; without ``run.json`` the epoch-0 checkpoint of ``start()`` (the
    untrained wrapper) is written. Returns the last consecutive readable epoch (<= ``n_epochs``)."""
    log, d = task_logger(), Path(ckpt_dir)
    meta = d / "run.json"
    if d.exists() and (not meta.is_file() or read_json(meta).get("fingerprint") != fingerprint):
        log.info("checkpoints in %s belong to other parameters or code; starting afresh", d)
        shutil.rmtree(d)
    d.mkdir(parents=True, exist_ok=True)
    if not meta.is_file():
        vw = start()
        save_study_checkpoint(vw, checkpoint_path(ckpt_dir, 0), 0, fingerprint, [], panel_rows(vw.volume, 0))
        write_json({"fingerprint": fingerprint, "seed": seed}, meta)
    last = last_complete_epoch(ckpt_dir, fingerprint, n_epochs)
    if last:
        log.info("resuming the training in %s after epoch %d", d, last)
    return last


def study_layouts(path: str, vol: Volume, *, with_target: bool = True) -> list[tuple[Any, torch.Tensor | None]]:
    """``(layout function, target)`` pairs of a layouts file for ``PassiveYielder`` (target: the record's scalar as a
    (1,) tensor, or None)."""
    bottom = float(vol.get_passive_z_range()[0].reshape(-1)[0])
    return [
        (
            rad_length_func_from_cube(r.x0, z_bottom=bottom, size=vol.passive_size),
            torch.tensor([r.target], dtype=torch.float32) if with_target else None,
        )
        for r in read_passives(path)
    ]


def set_epoch_rates(vw: PanelVolumeWrapper, peaks: Mapping[str, float | None], factor: float, only: str | None = None) -> None:
    """Set each optimiser's rate to ``peak x factor`` (plain floats: they are stored in the checkpoints); with ``only``
    every other optimiser gets rate 0 (a stage in which only that group moves)."""
    for name, peak in peaks.items():
        if name in vw.opts and peak is not None:
            rate = 0.0 if only is not None and name != only else float(peak) * float(factor)
            for g in vw.opts[name].param_groups:
                g["lr"] = rate


def train_study_epoch(
    ckpt_dir: str,
    epoch: int,
    fingerprint: str,
    wrapper: PanelVolumeWrapper,
    *,
    set_rates: Callable[[PanelVolumeWrapper], float],
    layouts_path: str,
    with_target: bool,
    fit_sizes: tuple[int, int, int],
    cbs_before: Sequence[Callback] = (),
    cbs_after: Sequence[Callback] = (),
    extra_row: Callable[[], Mapping[str, Any]] | None = None,
    label: str = "study",
) -> dict[str, Any]:
    """One epoch of a study: ``wrapper`` (freshly built) takes the state of the checkpoint of ``epoch - 1``, gets its
    rates from ``set_rates`` (which returns the rate factor), fits one epoch on the layouts file (``fit_sizes`` =
    passive_bs, n_mu_per_volume, mu_bs), and the checkpoint of ``epoch`` is written with the history row
    (epoch, rate factor, mean train loss, updates, ``extra_row()``). Returns the row plus its wall time ``seconds``
    (which stays out of the versioned history)."""
    t0 = time.perf_counter()
    state = load_checkpoint(checkpoint_path(ckpt_dir, epoch - 1), fingerprint)
    wrapper.load_training_state(state)
    factor = set_rates(wrapper)
    trn = study_layouts(layouts_path, wrapper.volume, with_target=with_target)
    rec = LossRecorder()
    passive_bs, n_mu, mu_bs = fit_sizes
    cbs = [*cbs_before, NoMoreNaNs(), rec, *cbs_after]
    wrapper.fit(1, passive_bs, n_mu, mu_bs, PassiveYielder(trn, shuffle=True), cbs=cbs, cb_savepath=ckpt_dir)
    row = {
        "epoch": epoch,
        "rate_factor": round(float(factor), 6),
        "train_loss": rec.mean("train"),
        "n_updates": int(wrapper.fit_params.n_updates),
        **(dict(extra_row()) if extra_row is not None else {}),
    }
    history, panels = [*state["history"], row], [*state["panels"], *panel_rows(wrapper.volume, epoch)]
    save_study_checkpoint(wrapper, checkpoint_path(ckpt_dir, epoch), epoch, fingerprint, history, panels)
    seconds = time.perf_counter() - t0
    task_logger().info("%s epoch %d: train loss %.4g (rates x %.3g), %.1f s", label, epoch, row["train_loss"], factor, seconds)
    return {**row, "seconds": round(seconds, 3)}


def finalise_study(ckpt_dir: str, n_epochs: int, fingerprint: str, vol: Volume, study: str, pt: str, js: str) -> dict[str, Any]:
    """Load the checkpoint of epoch ``n_epochs`` (of run ``fingerprint``) into ``vol`` (the study's trained layout),
    write it as the study's detector (``pt``, ``js``) and return the checkpoint's state (history, panel rows)."""
    state = load_checkpoint(checkpoint_path(ckpt_dir, n_epochs), fingerprint)
    vol.load_state_dict(state["volume"])
    write_detector(vol, pt, js, extra={"study": study, "epochs": n_epochs})
    return state


def ci95(samples: np.ndarray) -> list[float]:
    """[2.5 %, 97.5 %] percentile interval of the finite bootstrap ``samples``."""
    x = np.asarray(samples, dtype=float)
    x = x[np.isfinite(x)]
    return [float(np.quantile(x, 0.025)), float(np.quantile(x, 0.975))]


def trained_versus(point: Mapping[str, float], boot: Mapping[str, np.ndarray], key: str) -> dict[str, Any]:
    """``trained_vs_<name>`` for every other detector: the difference of the statistic ``key`` (trained - other), the
    interval of the paired bootstrap differences (the same resampled volumes in ``boot[name]``) and whether it
    excludes 0."""
    out: dict[str, Any] = {}
    for name in point:
        if name != "trained":
            ci = ci95(boot["trained"] - boot[name])
            out[f"trained_vs_{name}"] = {
                f"{key}_difference": point["trained"] - point[name],
                f"{key}_difference_ci95": ci,
                "significant": bool(ci[0] > 0 or ci[1] < 0),
            }
    return out
