"""Optimisation tasks: prepare the run (passives, epoch-0 checkpoint) and run ONE checkpointed epoch.

A checkpoint ``<ckpt_dir>/epoch_NNNN.pt`` holds everything the next epoch needs: detector (volume state), optimiser
states, the loss's cost coefficient, the wrapper's torch generator state and last usable detector, and the history
(per-epoch losses, panel rows). It is written atomically (temporary file + rename), so a killed epoch leaves the
previous checkpoint intact and a rerun resumes from it; the result is bitwise that of an uninterrupted run on CPU.
``<ckpt_dir>/run.json`` records a fingerprint of the parameters that shape the run (all but ``optimise.n_epochs``) and
of the code: a mismatch discards the old checkpoints, so changing ``n_epochs`` extends or shortens a run without
retraining while any other change starts afresh.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from prefect import task
from prefect.cache_policies import NO_CACHE

from config import OptimiseParams, PassiveParams, VolumeParams
from tomopt_lib.io import read_json, save_torch, write_json
from tomopt_lib.optimisation.callbacks import Callback, NoMoreNaNs
from tomopt_lib.optimisation.wrapper import PanelVolumeWrapper
from tomopt_lib.runtime import resolve_device

from .common import derive_seed, task_logger
from .detector import build_start_volume, make_wrapper, panel_rows, passive_layouts, write_passive_set, yielder

__all__ = [
    "OPTIMISE_STAGE_KEY",
    "CHECKPOINT_SCHEMA_VERSION",
    "code_hash",
    "run_fingerprint",
    "checkpoint_path",
    "previous_dir",
    "train_seed",
    "prepare_optimisation",
    "run_epoch",
    "load_checkpoint",
    "last_complete_epoch",
    "restore_wrapper",
    "LossRecorder",
]

OPTIMISE_STAGE_KEY = 5
"""Stage key mixed into the seeds of this stage (training passives differ from ``generate_passives``' volumes)."""
CHECKPOINT_SCHEMA_VERSION = 1


def train_seed(seed: int, opt: OptimiseParams) -> int:
    """``optimise.seed`` or a seed derived from the pipeline seed."""
    return opt.seed if opt.seed is not None else derive_seed(seed, OPTIMISE_STAGE_KEY)


def code_hash() -> str:
    """Hash of the Python sources an epoch runs (``tomopt_lib`` and ``tasks``): new code never resumes old checkpoints."""
    root = Path(__file__).resolve().parents[1]
    h = hashlib.sha256()
    for f in sorted([*(root / "tomopt_lib").rglob("*.py"), *(root / "tasks").glob("*.py")]):
        h.update(f.relative_to(root).as_posix().encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def run_fingerprint(seed: int, volume_cfg: VolumeParams, passives: PassiveParams, opt: OptimiseParams) -> str:
    """Hash of everything that shapes the epochs (parameters except ``n_epochs``, which only says how many to run;
    the code)."""
    blob = json.dumps(
        {
            "v": CHECKPOINT_SCHEMA_VERSION,
            "seed": train_seed(seed, opt),
            "volume": volume_cfg.model_dump(mode="json"),
            "passives": passives.model_dump(mode="json"),
            "optimise": opt.model_dump(mode="json", exclude={"n_epochs"}),
            "code": code_hash(),
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def checkpoint_path(ckpt_dir: str, epoch: int) -> Path:
    return Path(ckpt_dir) / f"epoch_{epoch:04d}.pt"


class LossRecorder(Callback):
    """Volume-weighted mean loss per state (train / valid) over one fit call."""

    def __init__(self) -> None:
        super().__init__()
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def on_volume_batch_end(self) -> None:
        fp = self.wrapper.fit_params
        if fp.state in ("train", "valid") and fp.mean_loss is not None:
            v = float(fp.mean_loss)
            if math.isfinite(v):
                self.sums[fp.state] = self.sums.get(fp.state, 0.0) + v * fp.n_volumes_in_batch
                self.counts[fp.state] = self.counts.get(fp.state, 0) + fp.n_volumes_in_batch

    def mean(self, state: str) -> float:
        return self.sums[state] / self.counts[state] if self.counts.get(state) else float("nan")


def _save_checkpoint(
    vw: PanelVolumeWrapper, path: Path, epoch: int, fingerprint: str, history: list[dict[str, Any]], panels: list[dict[str, Any]]
) -> None:
    state = {
        "schema_version": CHECKPOINT_SCHEMA_VERSION,
        "fingerprint": fingerprint,
        "epoch": epoch,
        **vw.training_state(),
        "history": history,
        "panels": panels,
    }
    save_torch(state, path)


def load_checkpoint(path: Path, fingerprint: str | None = None) -> dict[str, Any]:
    """Read a checkpoint; ``ValueError`` if it is unreadable, of another schema or of another run."""
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)  # never unpickles objects
    except Exception as err:  # noqa: BLE001
        raise ValueError(f"{path}: unreadable checkpoint ({type(err).__name__}: {err})") from err
    if state.get("schema_version") != CHECKPOINT_SCHEMA_VERSION:
        raise ValueError(f"{path}: checkpoint schema {state.get('schema_version')!r}, expected {CHECKPOINT_SCHEMA_VERSION}")
    if fingerprint is not None and state.get("fingerprint") != fingerprint:
        raise ValueError(f"{path}: checkpoint of another run (fingerprint {state.get('fingerprint')} != {fingerprint})")
    return state


def restore_wrapper(vw: PanelVolumeWrapper, state: Mapping[str, Any]) -> None:
    """Load a checkpoint's training state (detector, optimisers, cost coefficient, generator, last usable detector)."""
    vw.load_training_state(dict(state))


def previous_dir(ckpt_dir: str | Path) -> Path:
    """Where the checkpoints of the previous parameters wait until the new run has written its first epoch."""
    d = Path(ckpt_dir)
    return d.with_name(d.name + ".previous")


def _fingerprint_of(d: Path) -> str | None:
    meta = d / "run.json"
    try:
        return str(read_json(meta).get("fingerprint")) if meta.is_file() else None
    except Exception:  # noqa: BLE001 - an unreadable run.json is "another run"
        return None


def _set_aside(d: Path, fp: str, log: Any) -> None:
    """Make room for run ``fp`` in ``d`` without losing trained epochs: the old run's folder moves to
    :func:`previous_dir` (deleted only once the new run has checkpointed epoch 1); if the folder set aside earlier
    belongs to ``fp`` it comes back instead. A folder without any trained epoch holds nothing worth keeping."""
    prev = previous_dir(d)
    if prev.is_dir() and _fingerprint_of(prev) == fp:
        log.info("checkpoints in %s belong to other parameters or code; restoring this run's from %s", d, prev)
        swap = d.with_name(d.name + ".swap")
        shutil.rmtree(swap, ignore_errors=True)
        d.rename(swap)
        prev.rename(d)
        if checkpoint_path(str(swap), 1).is_file():
            swap.rename(prev)
        else:
            shutil.rmtree(swap)
        return
    if checkpoint_path(str(d), 1).is_file():
        log.info("checkpoints in %s belong to other parameters or code; kept in %s until epoch 1 of this run", d, prev)
        shutil.rmtree(prev, ignore_errors=True)
        d.rename(prev)
    else:
        log.info("checkpoints in %s belong to other parameters or code (no trained epoch); starting afresh", d)
        shutil.rmtree(d)


@task(name="optimise-prepare", cache_policy=NO_CACHE, persist_result=False)
def prepare_optimisation(
    ckpt_dir: str,
    seed: int,
    volume_cfg: VolumeParams,
    passives: PassiveParams,
    opt: OptimiseParams,
    device: str | None = "cpu",
) -> dict[str, Any]:
    """Start or resume a run in ``ckpt_dir``: training/validation passives and the epoch-0 checkpoint (starting layout).

    Returns ``{"fingerprint", "last_epoch"}`` where ``last_epoch`` is the newest consecutive valid checkpoint.
    """
    log, d = task_logger(), Path(ckpt_dir)
    fp = run_fingerprint(seed, volume_cfg, passives, opt)
    meta = d / "run.json"
    if d.exists() and _fingerprint_of(d) != fp:
        _set_aside(d, fp, log)
    d.mkdir(parents=True, exist_ok=True)
    s = train_seed(seed, opt)
    if not meta.is_file():
        write_passive_set(str(d / "train_passives.h5"), volume_cfg, passives, opt.n_volumes, derive_seed(s, 1))
        if opt.n_val_volumes > 0:
            write_passive_set(str(d / "val_passives.h5"), volume_cfg, passives, opt.n_val_volumes, derive_seed(s, 2))
        start = build_start_volume(volume_cfg, opt.start, resolve_device(device), budget=opt.budget)
        vw = make_wrapper(start, opt, seed=derive_seed(s, 3))
        _save_checkpoint(vw, checkpoint_path(ckpt_dir, 0), 0, fp, [], panel_rows(vw.volume, 0))
        write_json({"fingerprint": fp, "seed": s}, meta)
    last = last_complete_epoch(ckpt_dir, fp)
    if last:
        log.info("resuming from the checkpoint of epoch %d in %s", last, d)
    return {"fingerprint": fp, "last_epoch": last}


def last_complete_epoch(ckpt_dir: str, fingerprint: str, n_max: int | None = None) -> int:
    """The newest epoch e such that the checkpoints of epochs 1 ... e all exist and belong to run ``fingerprint``
    (0: none; at most ``n_max``); an unreadable or foreign checkpoint ends the chain with a warning."""
    last = 0
    while (n_max is None or last < n_max) and checkpoint_path(ckpt_dir, last + 1).is_file():
        try:
            load_checkpoint(checkpoint_path(ckpt_dir, last + 1), fingerprint)
        except ValueError as err:
            task_logger().warning("ignoring %s", err)
            break
        last += 1
    return last


@task(name="optimise-epoch", task_run_name="epoch-{epoch}", cache_policy=NO_CACHE, persist_result=False)
def run_epoch(
    ckpt_dir: str, epoch: int, volume_cfg: VolumeParams, opt: OptimiseParams, fingerprint: str, device: str | None = "cpu"
) -> dict[str, Any]:
    """Load the checkpoint of ``epoch - 1``, train one epoch (``wrapper.fit(1, ...)``) on ``device``, write the
    checkpoint of ``epoch`` atomically; returns scalars ``{epoch, train_loss, valid_loss, n_updates, n_rejected, seconds}``."""
    t0 = time.perf_counter()
    d = Path(ckpt_dir)
    state = load_checkpoint(checkpoint_path(ckpt_dir, epoch - 1), fingerprint)
    vw = make_wrapper(build_start_volume(volume_cfg, opt.start, resolve_device(device), budget=opt.budget), opt, seed=0)
    restore_wrapper(vw, state)
    trn, _ = passive_layouts(str(d / "train_passives.h5"), vw.volume)
    val = passive_layouts(str(d / "val_passives.h5"), vw.volume)[0] if (d / "val_passives.h5").is_file() else None
    rec = LossRecorder()
    vw.fit(
        1,
        opt.passive_bs,
        opt.n_mu_per_volume,
        opt.mu_bs,
        yielder(trn, True),
        yielder(val, False) if val else None,
        cbs=[NoMoreNaNs(), rec],
        cb_savepath=d,
    )
    fit = vw.fit_params
    row = {
        "epoch": epoch,
        "train_loss": rec.mean("train"),
        "valid_loss": rec.mean("valid"),
        "n_updates": int(fit.n_updates),
        "n_rejected": int(fit.n_rejected_updates),
        "n_recoveries": int(fit.n_recoveries),
        "cost": float(vw.volume.get_cost().detach()),
        "seconds": round(time.perf_counter() - t0, 3),
    }
    _save_checkpoint(
        vw,
        checkpoint_path(ckpt_dir, epoch),
        epoch,
        fingerprint,
        [*state["history"], row],
        [*state["panels"], *panel_rows(vw.volume, epoch)],
    )
    shutil.rmtree(previous_dir(ckpt_dir), ignore_errors=True)  # this run now has a trained epoch of its own
    task_logger().info(
        "epoch %d: train loss %.4g, valid loss %.4g, %d updates (%.1f s)",
        epoch,
        row["train_loss"],
        row["valid_loss"],
        row["n_updates"],
        row["seconds"],
    )
    return row
