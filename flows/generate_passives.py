"""Flow ``generate-passives``: random passive volumes -> ``data/passives.h5``."""

from __future__ import annotations

from typing import Any, Dict, Mapping

from prefect import flow, get_run_logger

from tasks.artifacts import publish_summary
from tasks.passives import generate_passives

from .params import parse_params
from .paths import PipelinePaths

__all__ = ["generate_passives_flow"]


@flow(name="generate-passives", flow_run_name="generate-passives-seed{params[seed]}", log_prints=False)
def generate_passives_flow(params: Dict[str, Any], workdir: str = ".") -> Mapping[str, Any]:
    """Generate ``passives.n_volumes`` passive X0 cubes and their targets into ``data/passives.h5``."""
    p = parse_params(params)
    paths = PipelinePaths.at(workdir)
    log = get_run_logger()
    log.info("generating %d %s passive volumes", p.passives.n_volumes, p.passives.generator)
    out = generate_passives(
        str(paths.passives), p.passives.n_volumes, p.volume.model_dump(), p.passives.model_dump(), p.seed, p.runtime.device
    )
    publish_summary("Passive volumes", {"n_volumes": p.passives.n_volumes, "generator": p.passives.generator, **out},
                    key="tomoflow-generate-passives")
    return out
