"""Memory, disk and work a parameter set asks for, estimated per stage before anything runs, and the limits it must fit.

The estimates are deliberately simple linear models of the quantities that drive each stage (muons, voxels,
residuals, concurrent tasks), with coefficients measured on the default pipeline (1 torch thread, CPU):

- irradiation: ~1.1 kB of peak memory per muon in flight (no autograd), ~360 B per kept muon in a merged record
  (float32 hits of 8 panels), ~200 B per muon on disk (chunk files and the merged HDF5), ~2e-4 s per muon;
- reconstruction: ~3 kB per muon of a chunk, ~200 B per row of the scatter table, ~3e-5 s per muon;
- training (autograd through the inference): ~(2 kB + 25 B x voxels) per muon of a volume, ~5e-4 s per muon-epoch;
- evaluation (no autograd): ~(3 kB + 10 B x voxels) per muon, ~3e-4 s per muon and detector;
- luminosity scan: ~10 x residuals x unknowns x 8 B per inversion of a solver batch, ~4e-5 s per residual-inversion
  plus ~1e-3 s per inversion.

They are meant to catch parameter sets that are orders of magnitude too big for the machine (10 M muons per volume in
million-muon chunks, ten million inversions, a hundred thousand volumes), not to predict the peak to 10 %. A set
that does not fit gets one message per stage with the estimate, the parameters behind it and the limit;
``runtime.limits`` raises the limits on bigger machines (or for longer runs).
"""

from __future__ import annotations

import math
import shutil
from dataclasses import dataclass
from pathlib import Path

from .base import ParamsError
from .limits import LimitsParams
from .pipeline import PipelineParams

__all__ = [
    "LimitsParams",
    "StageEstimate",
    "Limits",
    "estimate_stage",
    "machine_limits",
    "resource_problems",
    "check_resources",
]

GB = 1e9
BASE_PROCESS_BYTES = 0.4 * GB
"""A stage process before any data: Python, torch, Prefect client."""


@dataclass(frozen=True)
class StageEstimate:
    """What one stage asks for: peak memory [B], disk written [B] and wall time [s] on its workers, and what drives it."""

    stage: str
    memory_bytes: float
    disk_bytes: float
    seconds: float
    drivers: str


@dataclass(frozen=True)
class Limits:
    """The limits an estimate is checked against, with where each comes from."""

    memory_bytes: float
    disk_bytes: float
    seconds: float
    memory_source: str
    disk_source: str


def _voxels(p: PipelineParams) -> int:
    v = p.volume
    return max(1, round(v.lw[0] / v.voxel_size)) * max(1, round(v.lw[1] / v.voxel_size)) * v.passive_n_layers


def _workers(p: PipelineParams) -> int:
    return p.runtime.task_workers


def estimate_stage(p: PipelineParams, stage: str) -> StageEstimate:
    """Estimated peak memory, disk and wall time of ``stage`` (a name of ``flows.stages``) for parameters ``p``."""
    nv, vox, w = p.passives.n_volumes, _voxels(p), _workers(p)
    if stage == "generate_passives":
        return StageEstimate(stage, BASE_PROCESS_BYTES + nv * vox * 24, nv * vox * 8, nv * 1e-3, f"passives.n_volumes={nv}")
    if stage == "irradiate":
        n, chunk = p.irradiate.n_muons_per_volume, min(p.irradiate.chunk_size, max(1, p.irradiate.n_muons_per_volume))
        total = nv * n
        mem = BASE_PROCESS_BYTES + max(w * chunk * 1100, total * 360 + n * 720)
        return StageEstimate(
            stage,
            mem,
            2 * total * 200,
            total * 2e-4 / w,
            f"passives.n_volumes={nv} x irradiate.n_muons_per_volume={n} muons, irradiate.chunk_size={chunk} "
            f"x runtime.task_workers={w} in flight",
        )
    if stage in ("reconstruct", "report"):
        n = p.irradiate.n_muons_per_volume
        total = nv * n
        drivers = f"passives.n_volumes={nv} x irradiate.n_muons_per_volume={n} muons"
        if stage == "report":
            return StageEstimate(stage, BASE_PROCESS_BYTES + total * 400, 0.0, total * 5e-6, drivers)
        chunk = min(p.reconstruct.chunk_size, max(1, n))
        mem = BASE_PROCESS_BYTES + max(w * (n * 560 + chunk * 3000), total * 400)
        return StageEstimate(stage, mem, 2 * total * 100, total * 3e-5 / w, f"{drivers}, reconstruct.chunk_size={chunk}")
    if stage == "optimise":
        o = p.optimise
        per_mu = 2000 + 25 * vox
        mem = BASE_PROCESS_BYTES + o.n_mu_per_volume * per_mu + (o.n_volumes + o.n_val_volumes) * vox * 24
        seconds = o.n_epochs * (o.n_volumes + o.n_val_volumes) * o.n_mu_per_volume * 5e-4
        return StageEstimate(
            stage,
            mem,
            o.n_epochs * 1e5,
            seconds,
            f"optimise.n_epochs={o.n_epochs} x (n_volumes={o.n_volumes} + n_val_volumes={o.n_val_volumes}) x "
            f"n_mu_per_volume={o.n_mu_per_volume} muons, {vox} voxels",
        )
    if stage == "evaluate":
        e = p.evaluate
        n_det = 1 + len(e.baselines)
        mem = BASE_PROCESS_BYTES + e.n_mu_per_volume * (3000 + 10 * vox) + 3 * e.n_bootstrap * e.n_volumes * 8 * n_det
        return StageEstimate(
            stage,
            mem,
            n_det * e.n_volumes * vox * 16,
            n_det * e.n_volumes * e.n_mu_per_volume * 3e-4 + e.n_bootstrap * e.n_volumes * 1e-7,
            f"{n_det} detectors x evaluate.n_volumes={e.n_volumes} x n_mu_per_volume={e.n_mu_per_volume} muons, "
            f"{vox} voxels, n_bootstrap={e.n_bootstrap}",
        )
    if stage in ("lumi_scan", "lumi_report"):
        s = p.lumi_scan
        n_res, n_unk = s.plan.n_configs, 4 if s.mode == "xy12" else 2
        rows = s.n_inversions * (40 + 2 * n_unk) * 8
        if stage == "lumi_report":
            grid = p.lumi_report.landscape_grid
            return StageEstimate(
                stage,
                BASE_PROCESS_BYTES + 3 * rows + 20_000 * 64 * 8 * 4,
                0.0,
                s.n_inversions * 1e-5 + 3 * grid**2 * 2e-6,
                f"lumi_scan.n_inversions={s.n_inversions}, lumi_report.landscape_grid={grid}",
            )
        batch = min(s.solver_batch or s.chunk_size, s.chunk_size)
        mem = BASE_PROCESS_BYTES + w * batch * n_res * n_unk * 8 * 10 + 2 * rows
        return StageEstimate(
            stage,
            mem,
            2 * rows,
            s.n_inversions * (n_res * 4e-5 + 1e-3) / w,
            f"lumi_scan.n_inversions={s.n_inversions} x {n_res} residuals (lumi_scan.plan), "
            f"{batch} inversions per solve (chunk_size / solver_batch) x runtime.task_workers={w}",
        )
    if stage == "study":
        if p.study == "default":
            return StageEstimate(stage, BASE_PROCESS_BYTES, 1e5, 1.0, "study=default (placeholders only)")
        if p.study == "small_walls":
            sw = p.studies.small_walls
            muons = (sw.n_epochs * sw.n_train + 3 * sw.n_test) * sw.n_mu_per_volume
            return StageEstimate(
                stage,
                BASE_PROCESS_BYTES + sw.passive_bs * sw.n_mu_per_volume * 30_000,
                (sw.n_train + sw.n_test) * 8e3 + sw.n_epochs * 1e5,
                muons * 2e-4,
                f"study=small_walls: n_epochs={sw.n_epochs} x n_train={sw.n_train} + 3 detectors x n_test={sw.n_test} "
                f"volumes, x n_mu_per_volume={sw.n_mu_per_volume} muons",
            )
        if p.study == "u_lorry":
            u = p.studies.u_lorry
            muons = (u.n_epochs * u.n_train + 3 * u.n_test) * u.n_mu_per_volume
            return StageEstimate(
                stage,
                BASE_PROCESS_BYTES + u.passive_bs * u.n_mu_per_volume * (2000 + 25 * vox),
                (u.n_train + u.n_test) * vox * 8 + u.n_epochs * 1e5,
                muons * 5e-4,
                f"study=u_lorry: n_epochs={u.n_epochs} x n_train={u.n_train} + 3 detectors x n_test={u.n_test} loads, "
                f"x n_mu_per_volume={u.n_mu_per_volume} muons",
            )
        c = p.studies.ladle_furnace
        n_trn, n_tst = 8 * c.n_train_per_height, 8 * c.n_test_per_height
        muons = (c.n_epochs * n_trn + 4 * (n_trn + n_tst)) * c.n_mu_per_volume
        return StageEstimate(
            stage,
            BASE_PROCESS_BYTES + c.mu_bs * 100 * 16 * 8 * 4 + c.passive_bs * c.n_mu_per_volume * 20_000,
            (n_trn + n_tst) * 1e4 + c.n_epochs * 1e5,
            muons * 5e-4,
            f"study=ladle_furnace: n_epochs={c.n_epochs} x {n_trn} training layouts + 4 detectors x "
            f"{n_trn + n_tst} layouts, x n_mu_per_volume={c.n_mu_per_volume} muons",
        )
    raise ValueError(f"no resource estimate for stage {stage!r}")


def machine_limits(p: PipelineParams, workdir: str | Path = ".") -> Limits:
    """``runtime.limits`` with its nulls filled from this machine: 90 % of the memory available now and of the free
    space of the file system holding ``workdir``."""
    import psutil

    lim = p.runtime.limits
    if lim.memory_gb is None:
        mem, mem_src = 0.9 * psutil.virtual_memory().available, "runtime.limits.memory_gb: null = 90 % of the available memory"
    else:
        mem, mem_src = lim.memory_gb * GB, "runtime.limits.memory_gb"
    if lim.disk_gb is None:
        folder = Path(workdir).resolve()
        while not folder.exists():
            folder = folder.parent
        disk, disk_src = 0.9 * shutil.disk_usage(folder).free, "runtime.limits.disk_gb: null = 90 % of the free disk"
    else:
        disk, disk_src = lim.disk_gb * GB, "runtime.limits.disk_gb"
    return Limits(mem, disk, lim.stage_hours * 3600.0, mem_src, disk_src)


def _size(n_bytes: float) -> str:
    return f"{n_bytes / GB:.3g} GB"


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.3g} h" if seconds >= 3600 else f"{seconds / 60:.3g} min"


def resource_problems(p: PipelineParams, stages: list[str], limits: Limits) -> list[str]:
    """One message per stage of ``stages`` whose estimate exceeds ``limits`` (empty when everything fits)."""
    problems = []
    for stage in stages:
        est = estimate_stage(p, stage)
        over = []
        if est.memory_bytes > limits.memory_bytes:
            over.append(f"~{_size(est.memory_bytes)} of memory > {_size(limits.memory_bytes)} ({limits.memory_source})")
        if est.disk_bytes > limits.disk_bytes:
            over.append(f"~{_size(est.disk_bytes)} of disk > {_size(limits.disk_bytes)} ({limits.disk_source})")
        if est.seconds > limits.seconds and math.isfinite(est.seconds):
            over.append(f"~{_duration(est.seconds)} of work > {_duration(limits.seconds)} (runtime.limits.stage_hours)")
        if over:
            problems.append(
                f"stage {stage} would need " + "; ".join(over) + f" [from {est.drivers}]: make the run smaller, "
                "or raise runtime.limits on a machine that has it"
            )
    return problems


def check_resources(p: PipelineParams, stages: list[str], workdir: str | Path, params_path: str | Path) -> None:
    """Raise one ``ParamsError`` listing every stage of ``stages`` that does not fit this machine's limits."""
    problems = resource_problems(p, stages, machine_limits(p, workdir))
    if problems:
        raise ParamsError(f"parameters in {params_path} ask for more than this machine allows:\n  " + "\n  ".join(problems))
