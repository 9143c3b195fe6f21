"""Passive-generation task: a batch of random passive X0 cubes (and targets) -> one HDF5 file."""

from __future__ import annotations

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from config import PassiveParams, VolumeParams
from tomopt_lib.core import X0
from tomopt_lib.io import PassiveRecord, write_passives
from tomopt_lib.optimisation.data.passives import RandomBlockPassiveGenerator, VoxelPassiveGenerator
from tomopt_lib.runtime import resolve_device
from tomopt_lib.volume.volume import Volume

from .common import derive_seed, task_logger
from .volumes import build_volume

__all__ = ["PASSIVES_STAGE_KEY", "make_passive_generator", "generate_passive_records", "generate_passives"]

PASSIVES_STAGE_KEY = 1
"""Stage key mixed into the seeds of this stage."""


def make_passive_generator(
    volume: Volume, passives: PassiveParams, seed: int
) -> RandomBlockPassiveGenerator | VoxelPassiveGenerator:
    """The passive generator named by ``passives.generator`` (``random_block`` or ``voxel``), seeded."""
    if passives.generator == "random_block":
        return RandomBlockPassiveGenerator(
            volume,
            materials=list(passives.materials),
            seed=seed,
            block_size=passives.block_size,
            sort_x0=passives.sort_x0,
            enforce_diff_mat=passives.enforce_diff_mat,
            block_size_max_half=passives.block_size_max_half,
        )
    return VoxelPassiveGenerator(volume, materials=list(passives.materials), seed=seed)


def _material_names(cube: np.ndarray) -> list[str]:
    by_x0 = {np.float32(v): k for k, v in X0.items()}
    return sorted({by_x0.get(np.float32(v), f"X0={v:.4g}") for v in np.unique(cube)})


def generate_passive_records(
    volume_cfg: VolumeParams,
    passives: PassiveParams,
    seed: int,
    first: int = 0,
    n: int | None = None,
    device: str | None = "cpu",
) -> list[PassiveRecord]:
    """Passive volumes ``first ... first + n - 1`` (default: all ``passives.n_volumes``); volume i depends only on
    (seed, i)."""
    dev = resolve_device(device)
    volume = build_volume(volume_cfg, dev)
    n = passives.n_volumes - first if n is None else n
    records = []
    for i in range(first, first + n):
        gen = make_passive_generator(volume, passives, derive_seed(seed, PASSIVES_STAGE_KEY, i))
        func, target = gen.get_data()
        volume.load_rad_length(func, target)
        cube = volume.get_rad_cube().detach().cpu().numpy()
        tgt = float("nan") if target is None else float(target.reshape(-1)[0])
        records.append(PassiveRecord(x0=cube, target=tgt, attrs={"materials": _material_names(cube), "index": i}))
    return records


@task(name="generate-passives", task_run_name="generate-passives-{n_volumes}", cache_policy=NO_CACHE, persist_result=False)
def generate_passives(
    out_path: str,
    n_volumes: int,
    volume: VolumeParams,
    passives: PassiveParams,
    seed: int,
    device: str | None = "cpu",
) -> dict[str, object]:
    """Generate ``n_volumes`` passive volumes and write them to ``out_path``; returns ``{"path", "n_volumes", "materials"}``."""
    records = generate_passive_records(volume, passives, seed, 0, n_volumes, device)
    attrs = {"generator": passives.generator, "materials": list(passives.materials), "seed": int(seed)}
    write_passives(out_path, records, attrs=attrs)
    counts: dict[str, int] = {}
    for r in records:
        for m in r.attrs["materials"]:
            counts[m] = counts.get(m, 0) + 1
    task_logger().info("wrote %d passive volumes to %s (volumes per material: %s)", len(records), out_path, counts)
    return {"path": str(out_path), "n_volumes": len(records), "materials": counts}
