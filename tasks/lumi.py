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
from lumi_lib.design import Design, design_scan
from lumi_lib.inversion import InversionResult, invert, mode_matrix
from tomopt_lib.io import DataFileError, read_parquet, write_parquet
from tomopt_lib.runtime import resolve_device

from .common import derive_seed, task_logger

__all__ = [
    "SCAN_STAGE_KEY",
    "chunk_plan",
    "build_base",
    "build_design",
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
    """One base configuration: LHC default with ``crossing_plane``, then ``overrides``, then beta*_u2 = ratio beta*_u1."""
    cfg = IPConfig.lhc_default(base.crossing_plane, **base.overrides)
    if base.beta2_ratio != 1.0:
        cfg = cfg.replace(beta_x2=base.beta2_ratio * cfg.beta_x1, beta_y2=base.beta2_ratio * cfg.beta_y1)
    return cfg


def build_design(plan: LumiPlanParams, *, eps_nominal: float, device: torch.device | None = None) -> Design:
    """The measurement plan of a ``lumi_scan.plan`` section (shift sizes solved at ``eps_nominal``)."""
    return design_scan(
        [build_base(b) for b in plan.bases],
        list(plan.parameters),
        target=plan.target,
        n_shifts=plan.n_shifts,
        product=plan.product,
        eps_nominal=eps_nominal,
        device=device,
    )


def scan_columns(names: Sequence[str]) -> dict[str, str]:
    """Columns (name -> dtype) of ``data/lumi/scan.parquet`` for the unknowns ``names``."""
    cols: dict[str, str] = {"inversion_id": "int64", "chunk": "int32", "chunk_seed": "int64"}
    for prefix in ("true", "est", "rel_err", "sigma"):
        cols.update({f"{prefix}_{n}": "float64" for n in names})
    cols.update(
        {
            "residual_norm": "float64",
            "iterations": "int32",
            "converged": "bool",
            "cond": "float64",
            "time_per_inversion_s": "float64",
            "chunk_wall_s": "float64",
        }
    )
    return cols


def result_table(res: InversionResult, *, start: int, chunk: int, chunk_seed: int, wall_s: float) -> pd.DataFrame:
    """One row per inversion of ``res``: truth, estimate, relative error, sigma (covariance), diagnostics, timing."""
    n = res.estimate.shape[0]
    data: dict[str, Any] = {
        "inversion_id": np.arange(start, start + n, dtype=np.int64),
        "chunk": np.full(n, chunk, dtype=np.int32),
        "chunk_seed": np.full(n, chunk_seed, dtype=np.int64),
    }
    arrays = {"true": res.truth, "est": res.estimate, "rel_err": res.rel_error, "sigma": res.std}
    for prefix, t in arrays.items():
        a = t.detach().cpu().numpy() if t is not None else np.full((n, len(res.names)), np.nan)
        for j, name in enumerate(res.names):
            data[f"{prefix}_{name}"] = a[:, j].astype(np.float64)
    data.update(
        {
            "residual_norm": res.residual_norm.detach().cpu().numpy().astype(np.float64),
            "iterations": res.iterations.cpu().numpy().astype(np.int32),
            "converged": res.converged.cpu().numpy().astype(bool),
            "cond": res.cond.detach().cpu().numpy().astype(np.float64),
            "time_per_inversion_s": np.full(n, wall_s / max(n, 1)),
            "chunk_wall_s": np.full(n, wall_s),
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
) -> dict[str, Any]:
    """Draw ``n`` true emittances for chunk ``chunk``, simulate the measurements, run ONE batched inversion and write
    the rows (inversion ids ``start`` .. ``start + n - 1``) to the Parquet file ``out_path``.

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
    design = build_design(scan.plan, eps_nominal=nominal, device=dev)
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
    )
    wall = time.perf_counter() - t1
    warning = res.identifiability_warning(scan.cond_warn)
    if warning:
        log.warning("chunk %d: %s", chunk, warning)
    df = result_table(res, start=start, chunk=chunk, chunk_seed=seed, wall_s=wall)
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
    part_results: list[Mapping[str, Any]], out_path: str, scan: LumiScanParams, cleanup: bool = True
) -> dict[str, Any]:
    """Concatenate the chunk parts (by chunk) into ``out_path`` (atomic) with the scan metadata; returns a summary."""
    parts = sorted(part_results, key=lambda r: int(r["chunk"]))
    names, _ = mode_matrix(scan.mode)
    df = pd.concat([read_parquet(p["path"]) for p in parts], ignore_index=True).astype(scan_columns(names))
    meta: dict[str, Any] = {
        "mode": scan.mode,
        "names": list(names),
        "n_configs": int(parts[0]["n_configs"]) if parts else 0,
        "n_chunks": len(parts),
        "solve_wall_s": float(sum(p["wall_s"] for p in parts)),
        "design_wall_s": float(sum(p["design_s"] for p in parts)),
        "params": scan.model_dump(mode="json"),
    }
    write_parquet(df, out_path, metadata={"lumi": json.dumps(meta, sort_keys=True)})
    if cleanup:
        for p in parts:
            Path(p["path"]).unlink(missing_ok=True)
    summary = {
        "path": str(out_path),
        "n_inversions": len(df),
        "n_chunks": len(parts),
        "n_configs": meta["n_configs"],
        "mode": meta["mode"],
        "converged": int(df["converged"].sum()),
        "solve_wall_s": meta["solve_wall_s"],
        "time_per_inversion_s": meta["solve_wall_s"] / max(len(df), 1),
        "mean_abs_rel_error": {n: float(df[f"rel_err_{n}"].abs().mean()) for n in names},
    }
    task_logger().info("merged %d chunk tables (%d inversions) into %s", len(parts), len(df), out_path)
    return summary
