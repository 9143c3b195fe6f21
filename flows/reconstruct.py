"""Flow ``reconstruct``: ``ScatterBatch`` per volume -> PoCA / scatter table ``data/scatters.parquet``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prefect import flow, get_run_logger

from config import PipelineParams
from tasks.artifacts import Progress, publish_summary
from tasks.caching import locked_stage_workdir, records_dir, remove_stage_workdir
from tasks.reconstruction import merge_scatters, reconstruct_volume
from tomopt_lib.io import read_h5_attrs

from .naming import run_name_from_context
from .paths import PipelinePaths

__all__ = ["reconstruct_flow"]


@flow(name="reconstruct", flow_run_name=run_name_from_context("reconstruct"), log_prints=False)
def reconstruct_flow(params: PipelineParams, workdir: str = ".") -> Mapping[str, Any]:
    """Reconstruct every muon of ``data/irradiated.h5``, one task per volume, into ``data/scatters.parquet``."""
    paths = PipelinePaths.at(workdir)
    log = get_run_logger()
    n_volumes = int(read_h5_attrs(paths.irradiated, "muon_hits")["n_volumes"])
    log.info("reconstructing the muons of %d volumes", n_volumes)
    # per-volume parts and their cache records persist in .work/reconstruct until the merged table is written
    with locked_stage_workdir(workdir, "reconstruct") as work:  # a second run of this stage here: clear error
        volume_task = reconstruct_volume.with_options(result_storage=records_dir(work))
        futures = [
            volume_task.submit(
                str(paths.irradiated),
                vid,
                f"{work}/vol{vid:03d}.parquet",
                params.volume,
                params.reconstruct,
                params.runtime.device,
            )
            for vid in range(n_volumes)
        ]
        progress = Progress("reconstruct-progress", len(futures), "reconstruct: volumes done [%]")
        parts = []
        for f in futures:
            parts.append(f.result())
            progress.step()
        merged = merge_scatters(parts, str(paths.scatters))
        remove_stage_workdir(work)
    publish_summary("Reconstruction", {"n_volumes": n_volumes, **merged}, key="tomoflow-reconstruct")
    return merged
