"""Flow ``generate-passives``: random passive volumes -> ``data/passives.h5``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prefect import flow, get_run_logger

from config import PipelineParams
from tasks.artifacts import publish_summary
from tasks.passives import generate_passives

from .naming import run_name_from_context
from .paths import PipelinePaths

__all__ = ["generate_passives_flow"]


@flow(name="generate-passives", flow_run_name=run_name_from_context("generate_passives"), log_prints=False)
def generate_passives_flow(params: PipelineParams, workdir: str = ".") -> Mapping[str, Any]:
    """Generate ``passives.n_volumes`` passive X0 cubes and their targets into ``data/passives.h5``."""
    paths = PipelinePaths.at(workdir)
    log = get_run_logger()
    log.info("generating %d %s passive volumes", params.passives.n_volumes, params.passives.generator)
    out = generate_passives(
        str(paths.passives), params.passives.n_volumes, params.volume, params.passives, params.seed, params.runtime.device
    )
    publish_summary(
        "Passive volumes",
        {"n_volumes": params.passives.n_volumes, "generator": params.passives.generator, **out},
        key="tomoflow-generate-passives",
    )
    return out
