"""Irradiation tasks: muons through one loaded passive volume per chunk, then one merged HDF5 file."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from prefect import task
from prefect.cache_policies import NO_CACHE

from config import IrradiateParams, VolumeParams
from tomopt_lib.inference.scattering import GenScatterBatch
from tomopt_lib.io import MuonRecord, read_muon_records, read_passives, write_muon_records
from tomopt_lib.muon.generation import MuonGenerator2015, MuonGenerator2016
from tomopt_lib.muon.muon_batch import MuonBatch
from tomopt_lib.runtime import make_generator, resolve_device
from tomopt_lib.volume.builders import rad_length_func_from_cube
from tomopt_lib.volume.volume import Volume

from .caching import PLAIN_JSON, FileCachePolicy, with_output_hashes
from .common import derive_seed, task_logger
from .volumes import build_volume, passive_shape

__all__ = ["CHUNK_CACHE", "chunk_sizes", "irradiate_chunk", "merge_irradiation", "IRRADIATE_STAGE_KEY"]

IRRADIATE_STAGE_KEY = 2
"""Stage key mixed into the seeds of this stage."""

_GENERATORS = {"2015": MuonGenerator2015, "2016": MuonGenerator2016}
_TRUE_VARS = ("theta_in", "theta_out", "total_scatter")
_ROOT = Path(__file__).resolve().parents[1]
CHUNK_CACHE = FileCachePolicy(input_files=("passives_path",), code_paths=(str(_ROOT / "tomopt_lib"), str(_ROOT / "tasks")))
"""Cache of irradiation chunks: content of the passives file, parameters, task and library code (tasks/caching.py)."""


def chunk_sizes(n_muons: int, chunk_size: int) -> list[int]:
    """Muons per chunk; a single empty chunk when ``n_muons`` is 0 (so that empty runs still produce every file)."""
    if n_muons <= 0:
        return [0]
    return [min(chunk_size, n_muons - start) for start in range(0, n_muons, chunk_size)]


def _true_scatter(mu: MuonBatch, volume: Volume) -> dict[str, np.ndarray]:
    """True theta_in / theta_out / total scatter [rad] per muon from the true hits (NaN where not computable)."""
    out = {f"true_{v}": np.full(len(mu), np.nan, dtype=np.float32) for v in _TRUE_VARS}
    if len(mu) == 0:
        return out
    gsb = GenScatterBatch(mu, volume)
    keep = gsb.keep_mask.cpu().numpy()
    for v in _TRUE_VARS:
        out[f"true_{v}"][keep] = getattr(gsb, v).detach().cpu().numpy().reshape(-1)
    return out


@task(
    name="irradiate-chunk",
    task_run_name="irradiate-vol{volume_id}-chunk{chunk_id}",
    cache_policy=CHUNK_CACHE,
    persist_result=True,
    result_serializer=PLAIN_JSON,
)
def irradiate_chunk(
    passives_path: str,
    volume_id: int,
    chunk_id: int,
    n_muons: int,
    out_path: str,
    volume_cfg: VolumeParams,
    irradiate: IrradiateParams,
    seed: int,
    device: str | None = "cpu",
) -> dict[str, Any]:
    """Generate ``n_muons`` muons, pass them through passive volume ``volume_id`` and write their hits to ``out_path``.

    Returns ``{"path", "volume_id", "chunk_id", "n_generated", "n_kept", "output_sha256"}`` (kept = still in the batch
    after the volume). Cached with ``CHUNK_CACHE``: a rerun of a killed stage reuses chunks whose file is intact.
    """
    log = task_logger()
    dev = resolve_device(device)
    volume = build_volume(volume_cfg, dev)
    volume.record_xyz_hist = False
    rec = read_passives(passives_path, [volume_id], shape=passive_shape(volume_cfg))[0]
    bottom = float(volume.get_passive_z_range()[0].reshape(-1)[0])
    volume.load_rad_length(rad_length_func_from_cube(rec.x0, z_bottom=bottom, size=volume.passive_size))
    volume.train(not irradiate.realistic_panels)
    gen_cls = _GENERATORS[irradiate.flux_model]
    mu_gen = gen_cls.from_volume(
        volume,
        min_angle=math.radians(irradiate.min_angle_deg),
        fixed_mom=irradiate.fixed_mom,
        theta_range=(0.0, math.radians(irradiate.theta_max_deg)),
        device=dev,
    )
    rng = make_generator(derive_seed(seed, IRRADIATE_STAGE_KEY, volume_id, chunk_id), dev)
    generated = mu_gen.generate_set(int(n_muons), generator=rng)
    mu = MuonBatch(generated, init_z=volume.h.detach(), device=dev)
    with torch.no_grad():
        volume(mu, rng)
        hits = {g: {k: v.detach().cpu().numpy() for k, v in d.items()} for g, d in mu.get_hits().items()}
        extra = _true_scatter(mu, volume)
    extra["chunk"] = np.full(len(mu), chunk_id, dtype=np.int32)
    record = MuonRecord(generated=generated.cpu().numpy(), final=mu.to_numpy(), hits=hits, extra=extra)
    write_muon_records(out_path, {volume_id: record}, attrs={"volume_id": volume_id, "chunk_id": chunk_id})
    log.info("volume %d chunk %d: %d muons generated, %d left the volume", volume_id, chunk_id, record.n_generated, record.n_kept)
    res = {
        "path": str(out_path),
        "volume_id": volume_id,
        "chunk_id": chunk_id,
        "n_generated": record.n_generated,
        "n_kept": record.n_kept,
    }
    return with_output_hashes(res, out_path)


def _concat(records: list[MuonRecord]) -> MuonRecord:
    first = records[0]
    hits = {g: {v: np.concatenate([r.hits[g][v] for r in records]) for v in first.hits[g]} for g in first.hits}
    return MuonRecord(
        generated=np.concatenate([r.generated for r in records]),
        final=np.concatenate([r.final for r in records]),
        hits=hits,
        extra={k: np.concatenate([r.extra[k] for r in records]) for k in first.extra},
        attrs={"n_chunks": len(records)},
    )


@task(name="merge-irradiation", task_run_name="merge-irradiation", cache_policy=NO_CACHE, persist_result=False)
def merge_irradiation(
    chunk_results: Sequence[Mapping[str, Any]], out_path: str, attrs: Mapping[str, Any] | None = None, cleanup: bool = True
) -> dict[str, Any]:
    """Concatenate chunk files (per volume, in chunk order) into ``out_path``; delete the chunk files if ``cleanup``.

    Returns ``{"path", "n_volumes", "n_generated", "n_kept"}``.
    """
    log = task_logger()
    by_volume: dict[int, list[Mapping[str, Any]]] = {}
    for res in chunk_results:
        by_volume.setdefault(int(res["volume_id"]), []).append(res)
    merged: dict[int, MuonRecord] = {}
    for vid, parts in sorted(by_volume.items()):
        parts = sorted(parts, key=lambda r: int(r["chunk_id"]))
        merged[vid] = _concat([read_muon_records(p["path"])[vid] for p in parts])
    all_attrs = {"n_generated": sum(r.n_generated for r in merged.values()), "n_kept": sum(r.n_kept for r in merged.values())}
    all_attrs.update(attrs or {})
    write_muon_records(out_path, merged, attrs=all_attrs)
    if cleanup:
        for res in chunk_results:
            Path(res["path"]).unlink(missing_ok=True)
    log.info("merged %d chunks of %d volumes into %s", len(chunk_results), len(merged), os.fspath(out_path))
    return {
        "path": str(out_path),
        "n_volumes": len(merged),
        "n_generated": all_attrs["n_generated"],
        "n_kept": all_attrs["n_kept"],
    }
