"""Luminosity-scan tasks: seeded true emittances x ONE batched inversion per chunk -> Parquet part -> one table.

A chunk ``c`` draws its true emittances (uniform in ``eps_nominal (1 +- eps_spread)``) and its measurement noise
from a generator seeded with ``derive_seed(seed, 7001, c)``: results depend on ``seed`` and ``chunk_size`` only, not
on the task runner or on the order in which chunks finish.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import torch
from prefect import task
from prefect.cache_policies import NO_CACHE

from config import LumiBaseParams, LumiPlanParams, LumiScanParams
from lumi_lib.config import IPConfig
from lumi_lib.design import Design, design_scan, solve_shifts
from lumi_lib.inversion import InversionResult, base_config, invert, mode_matrix, noise_phrase
from lumi_lib.solver import uncertainty_message
from tomopt_lib.io import DataFileError, read_parquet, write_json, write_parquet
from tomopt_lib.runtime import resolve_device

from .common import derive_seed, task_logger

__all__ = [
    "SCAN_STAGE_KEY",
    "chunk_plan",
    "build_base",
    "scan_shifts",
    "build_design",
    "scan_warning",
    "scan_columns",
    "result_table",
    "read_scan",
    "run_scan_chunk",
    "merge_scan",
]

SCAN_STAGE_KEY = 7001
"""Key mixed into every chunk seed of the ``lumi_scan`` stage."""


def chunk_plan(n_inversions: int, chunk_size: int) -> list[tuple[int, int, int]]:
    """``[(chunk, start, n), ...]`` covering ``n_inversions`` in chunks of at most ``chunk_size``."""
    return [(c, s, min(chunk_size, n_inversions - s)) for c, s in enumerate(range(0, n_inversions, chunk_size))]


def build_base(base: LumiBaseParams) -> IPConfig:
    """One base configuration (:func:`lumi_lib.inversion.base_config`): LHC default with ``crossing_plane``, then
    ``overrides``, then beta*_u2 = ratio beta*_u1."""
    return base_config(base.crossing_plane, base.beta2_ratio, base.overrides)


def scan_shifts(plan: LumiPlanParams, *, eps_nominal: float) -> list[Any]:
    """The plan's shift sizes (n_bases x P, or n_bases x P x T for T targets; SI units) solved once at
    ``eps_nominal`` on the CPU, as plain nested lists of floats that every chunk of a scan receives (so no chunk
    solves the design again)."""
    bases = [build_base(b) for b in plan.bases]
    solved = [solve_shifts(bases, list(plan.parameters), target=t, eps_nominal=eps_nominal) for t in plan.targets]
    shifts = solved[0] if len(solved) == 1 else torch.stack(solved, dim=-1)
    return shifts.tolist()


def build_design(
    plan: LumiPlanParams,
    *,
    eps_nominal: float,
    device: torch.device | None = None,
    shifts: Sequence[Any] | None = None,
) -> Design:
    """The measurement plan of a ``lumi_scan.plan`` section: shift sizes ``shifts`` (from :func:`scan_shifts`) or,
    if None, solved here at ``eps_nominal``."""
    return design_scan(
        [build_base(b) for b in plan.bases],
        list(plan.parameters),
        target=plan.target,
        n_shifts=plan.n_shifts,
        product=plan.product,
        eps_nominal=eps_nominal,
        shifts=None if shifts is None else torch.tensor(shifts, dtype=torch.float64),
        device=device,
    )


def scan_columns(names: Sequence[str]) -> dict[str, str]:
    """Columns (name -> dtype) of ``data/lumi/scan.parquet`` for the unknowns ``names``."""
    cols: dict[str, str] = {"inversion_id": "int64", "chunk": "int32", "chunk_seed": "int64"}
    for prefix in ("true", "est", "rel_err", "sigma", "null"):
        cols.update({f"{prefix}_{n}": "float64" for n in names})
    cols.update(
        {
            "residual_norm": "float64",
            "iterations": "int32",
            "converged": "bool",
            "at_bound": "bool",
            "status": "int32",
            "cond": "float64",
        }
    )
    return cols


def result_table(res: InversionResult, *, start: int, chunk: int, chunk_seed: int) -> pd.DataFrame:
    """One row per inversion of ``res``: truth, estimate, relative error, sigma (covariance), least-determined direction
    (``null_*``, scaled unknowns), diagnostics (``status``: :data:`lumi_lib.solver.STATUS`). No wall-clock values: the
    table is a versioned output (timings go to ``timings/lumi_scan.json``, the logs and the Prefect artifact)."""
    n = res.estimate.shape[0]
    data: dict[str, Any] = {
        "inversion_id": np.arange(start, start + n, dtype=np.int64),
        "chunk": np.full(n, chunk, dtype=np.int32),
        "chunk_seed": np.full(n, chunk_seed, dtype=np.int64),
    }
    arrays = {"true": res.truth, "est": res.estimate, "rel_err": res.rel_error, "sigma": res.std, "null": res.null_direction}
    for prefix, t in arrays.items():
        a = t.detach().cpu().numpy() if t is not None else np.full((n, len(res.names)), np.nan)
        for j, name in enumerate(res.names):
            data[f"{prefix}_{name}"] = a[:, j].astype(np.float64)
    data.update(
        {
            "residual_norm": res.residual_norm.detach().cpu().numpy().astype(np.float64),
            "iterations": res.iterations.cpu().numpy().astype(np.int32),
            "converged": res.converged.cpu().numpy().astype(bool),
            "at_bound": (res.at_bound if res.at_bound is not None else torch.zeros(n, dtype=torch.bool)).cpu().numpy(),
            "status": (res.status if res.status is not None else torch.zeros(n, dtype=torch.int64))
            .cpu()
            .numpy()
            .astype(np.int32),
            "cond": res.cond.detach().cpu().numpy().astype(np.float64),
        }
    )
    return pd.DataFrame(data).astype(scan_columns(res.names))


def read_scan(path: str) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The scan table and its metadata (``mode``, ``names``, ``n_configs``, ``params``, ...)."""
    df = read_parquet(path)
    raw = pq.read_schema(path).metadata or {}
    try:
        meta = json.loads(raw[b"tomoflow.lumi"].decode())
    except (KeyError, ValueError) as err:
        raise DataFileError(f"{path}: not a lumi_scan table (no 'tomoflow.lumi' metadata)") from err
    return df, meta


def scan_warning(df: pd.DataFrame, names: Sequence[str], scan: LumiScanParams) -> str | None:
    """The identifiability warning of a whole scan table (:func:`lumi_lib.solver.uncertainty_message`: relative
    uncertainty above ``scan.rel_uncertainty_warn`` or condition number above ``scan.cond_warn``, naming the worst
    unknown and the least-determined combination), or None."""
    if df.empty:
        return None
    est = df[[f"est_{n}" for n in names]].to_numpy(float)
    sig = df[[f"sigma_{n}" for n in names]].to_numpy(float)
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = torch.tensor(sig / np.abs(est))
    return uncertainty_message(
        rel,
        names,
        scan.rel_uncertainty_warn,
        null_direction=torch.tensor(df[[f"null_{n}" for n in names]].to_numpy(float)),
        cond=torch.tensor(df["cond"].to_numpy(float)),
        cond_threshold=scan.cond_warn,
        noise=noise_phrase(scan.rel_noise),
    )


def _set_threads(threads: int | None) -> None:
    if threads and torch.get_num_threads() != int(threads):
        torch.set_num_threads(int(threads))


@task(name="lumi-scan-chunk", task_run_name="lumi-scan-chunk{chunk}", cache_policy=NO_CACHE, persist_result=False)
def run_scan_chunk(
    scan: LumiScanParams,
    chunk: int,
    start: int,
    n: int,
    out_path: str,
    device: str | None = "cpu",
    threads: int | None = None,
    shifts: list[Any] | None = None,
) -> dict[str, Any]:
    """Draw ``n`` true emittances for chunk ``chunk``, simulate the measurements, run ONE batched inversion and write
    the rows (inversion ids ``start`` .. ``start + n - 1``) to the Parquet file ``out_path``. ``shifts``: the plan's
    shift sizes from :func:`scan_shifts` (solved once per scan by the flow); None solves them here.

    Returns ``{"path", "chunk", "n", "wall_s", "design_s", "n_converged", "n_configs", "warning"}``.
    """
    _set_threads(threads)
    log = task_logger()
    dev = resolve_device(device)
    names, _ = mode_matrix(scan.mode)
    seed = derive_seed(scan.seed, SCAN_STAGE_KEY, int(chunk))
    gen = torch.Generator().manual_seed(seed)
    nominal = scan.eps_nominal
    truth = nominal * (1.0 + scan.eps_spread * (2.0 * torch.rand(n, len(names), generator=gen, dtype=torch.float64) - 1.0))
    t0 = time.perf_counter()
    design = build_design(scan.plan, eps_nominal=nominal, device=dev, shifts=shifts)
    t1 = time.perf_counter()
    lo, hi = scan.bounds
    res = invert(
        scan.mode,
        truth.to(dev),
        design=design,
        rel_noise=scan.rel_noise,
        generator=gen,
        device=dev,
        x0=nominal,
        lower=lo,
        upper=hi,
        chunk_size=scan.solver_batch,
        max_iter=scan.max_iter,
        jacobian=scan.jacobian,
        cond_warn=math.inf,
        rel_uncertainty_warn=math.inf,
    )
    wall = time.perf_counter() - t1
    warning = res.identifiability_warning(scan.cond_warn, scan.rel_uncertainty_warn)
    if warning:
        log.warning("chunk %d: %s", chunk, warning)
    df = result_table(res, start=start, chunk=chunk, chunk_seed=seed)
    write_parquet(df, out_path)
    n_conv = int(df["converged"].sum())
    log.info(
        "chunk %d: %d inversions x %d residuals in %.2f s (design %.2f s), %d converged",
        chunk,
        n,
        design.n_configs,
        wall,
        t1 - t0,
        n_conv,
    )
    return {
        "path": str(out_path),
        "chunk": int(chunk),
        "n": int(n),
        "wall_s": wall,
        "design_s": t1 - t0,
        "n_converged": n_conv,
        "n_configs": design.n_configs,
        "warning": warning,
    }


@task(name="lumi-merge-scan", task_run_name="lumi-merge-scan", cache_policy=NO_CACHE, persist_result=False)
def merge_scan(
    part_results: list[Mapping[str, Any]],
    out_path: str,
    scan: LumiScanParams,
    cleanup: bool = True,
    design_s: float = 0.0,
    timings_path: str | None = None,
) -> dict[str, Any]:
    """Concatenate the chunk parts (by chunk) into ``out_path`` (atomic) with the scan metadata; returns a summary.
    The table and its metadata hold no wall-clock values (a versioned output: identical on every run); the solve and
    design times (``design_s``: the design solved once, plus the chunks' construction times) are in the summary and,
    if ``timings_path`` is given, in that untracked JSON file. The summary's and metadata's ``warning`` is
    :func:`scan_warning` of the whole table."""
    parts = sorted(part_results, key=lambda r: int(r["chunk"]))
    names, _ = mode_matrix(scan.mode)
    df = pd.concat([read_parquet(p["path"]) for p in parts], ignore_index=True).astype(scan_columns(names))
    warning = scan_warning(df, names, scan)
    meta: dict[str, Any] = {
        "mode": scan.mode,
        "names": list(names),
        "n_configs": int(parts[0]["n_configs"]) if parts else 0,
        "n_chunks": len(parts),
        "warning": warning,
        "params": scan.model_dump(mode="json"),
    }
    write_parquet(df, out_path, metadata={"lumi": json.dumps(meta, sort_keys=True)})
    if cleanup:
        for p in parts:
            Path(p["path"]).unlink(missing_ok=True)
    solve_s = float(sum(p["wall_s"] for p in parts))
    timings = {
        "time_per_inversion_s": solve_s / max(len(df), 1),
        "solve_wall_s": solve_s,
        "design_wall_s": float(design_s + sum(p["design_s"] for p in parts)),
        "chunk_wall_s": {str(int(p["chunk"])): float(p["wall_s"]) for p in parts},
    }
    if timings_path is not None:
        write_json(timings, timings_path)
    summary = {
        "path": str(out_path),
        "n_inversions": len(df),
        "n_chunks": len(parts),
        "n_configs": meta["n_configs"],
        "mode": meta["mode"],
        "converged": int(df["converged"].sum()),
        "at_bound": int(df["at_bound"].sum()),
        "warning": warning,
        "solve_wall_s": solve_s,
        "time_per_inversion_s": timings["time_per_inversion_s"],
        "mean_abs_rel_error": {n: float(df[f"rel_err_{n}"].abs().mean()) for n in names},
    }
    task_logger().info("merged %d chunk tables (%d inversions) into %s", len(parts), len(df), out_path)
    return summary
