"""Reconstruction tasks: ``ScatterBatch`` per volume (in chunks) -> one row per muon -> one Parquet table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from prefect import task
from prefect.cache_policies import NO_CACHE

from config import ReconstructParams, VolumeParams
from tomopt_lib.inference.scattering import ScatterBatch
from tomopt_lib.io import (
    SCATTER_COLUMNS,
    SCATTER_SCHEMA,
    SCATTER_TRUE,
    SCATTER_VARS,
    MuonRecord,
    read_muon_records,
    read_parquet,
    write_parquet,
)
from tomopt_lib.muon.muon_batch import MuonBatch
from tomopt_lib.runtime import resolve_device
from tomopt_lib.volume.volume import Volume

from .caching import PLAIN_JSON, FileCachePolicy, with_output_hashes
from .common import task_logger
from .volumes import build_volume

__all__ = [
    "VOLUME_CACHE",
    "SCATTER_COLUMNS",
    "empty_scatter_table",
    "record_to_muon_batch",
    "scatter_table",
    "reconstruct_volume",
    "merge_scatters",
]

_VARS = SCATTER_VARS  # scatter variable -> column names (tomopt_lib/io/schema.py: the scatter table format)
_TRUE = SCATTER_TRUE
_ROOT = Path(__file__).resolve().parents[1]
VOLUME_CACHE = FileCachePolicy(input_files=("irradiated_path",), code_paths=(str(_ROOT / "tomopt_lib"), str(_ROOT / "tasks")))
"""Cache of per-volume reconstructions: content of the irradiated file, parameters, task and library code."""


def empty_scatter_table(n: int = 0) -> pd.DataFrame:
    """A table of ``n`` rows with every scatter column (NaN / False / 0)."""
    data = {}
    for col, dtype in SCATTER_COLUMNS.items():
        fill = np.nan if dtype.startswith("float") else 0
        data[col] = np.full(n, fill, dtype=dtype)
    return pd.DataFrame(data)


def record_to_muon_batch(rec: MuonRecord, start: int = 0, stop: int | None = None, device: Any = None) -> MuonBatch:
    """Rebuild the ``MuonBatch`` (final states and hits, rows ``start:stop``) written by the irradiation stage."""
    final = torch.as_tensor(rec.final[start:stop])
    mu = MuonBatch(final[:, [0, 1, 3, 4, 5]], init_z=final[:, 2], device=device)
    for group, hits in rec.hits.items():
        n_hits = next(iter(hits.values())).shape[1] if hits else 0
        for i in range(n_hits):
            mu.append_hits({var: torch.as_tensor(arr[start:stop, i]).to(mu.device) for var, arr in hits.items()}, group)
    return mu


def scatter_table(rec: MuonRecord, volume: Volume, volume_id: int, chunk_size: int, device: Any = None) -> pd.DataFrame:
    """One row per muon of ``rec``: reconstructed scatter variables with uncertainties, flags and true values."""
    n = rec.n_kept
    df = empty_scatter_table(n)
    df["volume_id"] = np.int32(volume_id)
    df["muon_id"] = np.arange(n, dtype=np.int64)
    df["mom"] = rec.final[:, 3].astype(np.float32)
    if "chunk" in rec.extra:
        df["chunk"] = rec.extra["chunk"].astype(np.int32)
    for col in _TRUE:
        if col in rec.extra:
            df[col] = rec.extra[col].astype(np.float32)
    if n == 0 or not rec.hits:
        return df
    flat = [c for cs in _VARS.values() for c in cs]
    cols = {c: np.full(n, np.nan, dtype=np.float32) for c in [*flat, *(f"{c}_unc" for c in flat)]}
    reco_ok = np.zeros(n, dtype=bool)
    inside = np.zeros(n, dtype=bool)
    for start in range(0, n, chunk_size):
        stop = min(n, start + chunk_size)
        sb = ScatterBatch(record_to_muon_batch(rec, start, stop, device), volume)
        keep = sb.keep_mask.cpu().numpy()
        idx = np.arange(start, stop)[keep]
        reco_ok[idx] = True
        if len(idx) == 0:
            continue
        inside[idx] = sb.get_scatter_mask().cpu().numpy()
        for var, names in _VARS.items():
            val = getattr(sb, var).detach().cpu().numpy().reshape(len(idx), -1)
            unc = getattr(sb, f"{var}_unc").detach().cpu().numpy().reshape(len(idx), -1)
            for j, name in enumerate(names):
                cols[name][idx] = val[:, j]
                cols[f"{name}_unc"][idx] = unc[:, j]
    for name, arr in cols.items():
        df[name] = arr.astype(np.float32)
    df["reco_ok"] = reco_ok
    df["poca_inside"] = inside
    return df


@task(
    name="reconstruct-volume",
    task_run_name="reconstruct-vol{volume_id}",
    cache_policy=VOLUME_CACHE,
    persist_result=True,
    result_serializer=PLAIN_JSON,
)
def reconstruct_volume(
    irradiated_path: str,
    volume_id: int,
    out_path: str,
    volume_cfg: VolumeParams,
    reconstruct: ReconstructParams,
    device: str | None = "cpu",
) -> dict[str, Any]:
    """Reconstruct every muon of volume ``volume_id`` and write the rows to the Parquet file ``out_path``.

    Returns ``{"path", "volume_id", "n_rows", "n_reco", "n_inside", "output_sha256"}``; cached with ``VOLUME_CACHE``.
    """
    log = task_logger()
    dev = resolve_device(device)
    volume = build_volume(volume_cfg, dev)
    rec = read_muon_records(irradiated_path, [volume_id])[volume_id]
    with torch.no_grad():
        df = scatter_table(rec, volume, volume_id, reconstruct.chunk_size, dev)
    write_parquet(df, out_path, metadata={"table": "scatters"})
    n_reco, n_inside = int(df["reco_ok"].sum()), int(df["poca_inside"].sum())
    log.info("volume %d: %d muons, %d reconstructed, %d with PoCA inside the passive block", volume_id, len(df), n_reco, n_inside)
    res = {"path": str(out_path), "volume_id": volume_id, "n_rows": len(df), "n_reco": n_reco, "n_inside": n_inside}
    return with_output_hashes(res, out_path)


@task(name="merge-scatters", task_run_name="merge-scatters", cache_policy=NO_CACHE, persist_result=False)
def merge_scatters(part_results: Sequence[Mapping[str, Any]], out_path: str, cleanup: bool = True) -> dict[str, Any]:
    """Concatenate the per-volume Parquet parts (by volume id) into ``out_path``; returns ``{"path", "n_rows", "n_reco"}``."""
    parts = sorted(part_results, key=lambda r: int(r["volume_id"]))
    frames = [read_parquet(p["path"], schema=SCATTER_SCHEMA) for p in parts]
    df = pd.concat(frames, ignore_index=True) if frames else empty_scatter_table()
    df = df.astype(SCATTER_COLUMNS)
    write_parquet(df, out_path, metadata={"table": "scatters"})
    if cleanup:
        for p in parts:
            Path(p["path"]).unlink(missing_ok=True)
    task_logger().info("merged %d volume tables (%d rows) into %s", len(parts), len(df), out_path)
    return {"path": str(out_path), "n_rows": len(df), "n_reco": int(df["reco_ok"].sum())}
