"""Flow ``irradiate``: muons through every passive volume, one task per chunk -> ``data/irradiated.h5``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prefect import flow, get_run_logger

from config import PipelineParams
from tasks.artifacts import Progress, publish_summary
from tasks.caching import locked_stage_workdir, records_dir, remove_stage_workdir
from tasks.irradiation import chunk_sizes, irradiate_chunk, merge_irradiation
from tomopt_lib.io import read_h5_attrs

from .naming import run_name_from_context
from .paths import PipelinePaths

__all__ = ["irradiate_flow"]


@flow(name="irradiate", flow_run_name=run_name_from_context("irradiate"), log_prints=False)
def irradiate_flow(params: PipelineParams, workdir: str = ".") -> Mapping[str, Any]:
    """Irradiate each volume of ``data/passives.h5`` with ``irradiate.n_muons_per_volume`` muons (in chunks)."""
    paths = PipelinePaths.at(workdir)
    log = get_run_logger()
    n_volumes = int(read_h5_attrs(paths.passives, "passives")["n_volumes"])
    sizes = chunk_sizes(params.irradiate.n_muons_per_volume, params.irradiate.chunk_size)
    log.info(
        "irradiating %d volumes with %d muons each in %d chunk(s)", n_volumes, params.irradiate.n_muons_per_volume, len(sizes)
    )
    paths.data_dir.mkdir(parents=True, exist_ok=True)
    # chunk files and their cache records persist in .work/irradiate until the merged file is written: a killed
    # run resumes from its finished chunks (tasks/caching.py)
    with locked_stage_workdir(workdir, "irradiate") as work:  # a second run of this stage here: clear error
        chunk_task = irradiate_chunk.with_options(result_storage=records_dir(work))
        futures = [
            chunk_task.submit(
                str(paths.passives),
                vid,
                cid,
                n,
                f"{work}/vol{vid:03d}_chunk{cid:04d}.h5",
                params.volume,
                params.irradiate,
                params.seed,
                params.runtime.device,
            )
            for vid in range(n_volumes)
            for cid, n in enumerate(sizes)
        ]
        progress = Progress("irradiate-progress", len(futures), "irradiate: chunks done [%]")
        results = []
        for f in futures:
            results.append(f.result())
            progress.step()
        attrs = {
            "flux_model": params.irradiate.flux_model,
            "realistic_panels": params.irradiate.realistic_panels,
            "seed": params.seed,
        }
        merged = merge_irradiation(results, str(paths.irradiated), attrs=attrs)
        remove_stage_workdir(work)
    publish_summary("Irradiation", {"n_volumes": n_volumes, "n_chunks": len(futures), **merged}, key="tomoflow-irradiate")
    return merged
