"""Flow ``irradiate``: muons through every passive volume, one task per chunk -> ``data/irradiated.h5``."""

from __future__ import annotations

import shutil
import tempfile
from typing import Any, Dict, Mapping

from prefect import flow, get_run_logger

from tasks.irradiation import chunk_sizes, irradiate_chunk, merge_irradiation
from tomopt_lib.io import read_h5_attrs

from .params import parse_params
from .paths import PipelinePaths

__all__ = ["irradiate_flow"]


@flow(name="irradiate", flow_run_name="irradiate-seed{params[seed]}", log_prints=False)
def irradiate_flow(params: Dict[str, Any], workdir: str = ".") -> Mapping[str, Any]:
    """Irradiate each volume of ``data/passives.h5`` with ``irradiate.n_muons_per_volume`` muons (in chunks)."""
    p = parse_params(params)
    paths = PipelinePaths.at(workdir)
    log = get_run_logger()
    n_volumes = int(read_h5_attrs(paths.passives, "passives")["n_volumes"])
    sizes = chunk_sizes(p.irradiate.n_muons_per_volume, p.irradiate.chunk_size)
    log.info("irradiating %d volumes with %d muons each in %d chunk(s)", n_volumes, p.irradiate.n_muons_per_volume, len(sizes))
    paths.data_dir.mkdir(parents=True, exist_ok=True)
    work = tempfile.mkdtemp(dir=paths.data_dir, prefix=".irradiate-")
    try:
        futures = [
            irradiate_chunk.submit(
                str(paths.passives), vid, cid, n, f"{work}/vol{vid:03d}_chunk{cid:04d}.h5",
                p.volume.model_dump(), p.irradiate.model_dump(), p.seed, p.runtime.device,
            )
            for vid in range(n_volumes)
            for cid, n in enumerate(sizes)
        ]
        results = [f.result() for f in futures]
        attrs = {"flux_model": p.irradiate.flux_model, "realistic_panels": p.irradiate.realistic_panels, "seed": p.seed}
        return merge_irradiation(results, str(paths.irradiated), attrs=attrs)
    finally:
        shutil.rmtree(work, ignore_errors=True)
