"""Flow ``optimise``: train the detector, one checkpointed task per epoch, then write the trained detector and metrics.

Training passives are generated in-stage from the ``passives`` settings with a seed derived from (seed, stage 5) or
``optimise.seed`` (not read from ``data/passives.h5``: training and the irradiation demo stay independent, and the
held-out set of ``evaluate`` uses yet another seed). Epochs already checkpointed under ``models/checkpoints`` with the
same parameters are skipped, so a killed run resumes from its last complete epoch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prefect import State, flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from config import PipelineParams
from tasks.artifacts import Progress, publish_images, publish_table
from tasks.caching import hold_lock
from tasks.optimisation import prepare_optimisation, run_epoch
from tasks.optimise_report import finalise_optimisation, train_markdown
from tasks.summaries import optimise_table, write_summary

from .naming import run_name_from_context
from .paths import PipelinePaths

__all__ = ["optimise_flow"]


@flow(name="optimise", flow_run_name=run_name_from_context("optimise"), log_prints=False)
def optimise_flow(params: PipelineParams, workdir: str = ".") -> Mapping[str, Any]:
    """Optimise the panels for ``optimise.n_epochs`` epochs; outputs under ``models/``, ``metrics/``, ``plots/optimise``."""
    paths = PipelinePaths.at(workdir)
    log = get_run_logger()
    vol, pas, opt = params.volume, params.passives, params.optimise
    ckpt = str(paths.checkpoints)
    dev = params.runtime.device
    with hold_lock(paths.models_dir / "checkpoints.lock", "the checkpoints of stage 'optimise'"):  # one run at a time
        prep = prepare_optimisation(ckpt, params.seed, vol, pas, opt, dev)
        n = params.optimise.n_epochs
        progress = Progress("optimise-progress", n, "optimise: epochs done [%]")
        rows: list[dict[str, Any]] = []
        previous: State | None = None  # each epoch waits for the previous one: a chain in the UI's task graph
        for epoch in range(prep["last_epoch"] + 1, n + 1):
            state = run_epoch(
                ckpt, epoch, vol, opt, prep["fingerprint"], dev, wait_for=[previous] if previous else None, return_state=True
            )
            rows.append(state.result())
            previous = state
            progress.set(epoch)
        progress.finish()
        if prep["last_epoch"] >= n:
            log.info("all %d epochs were already checkpointed (resumed run)", n)
        res = finalise_optimisation(
            ckpt, n, prep["fingerprint"], vol, opt, {k: str(v) for k, v in paths.optimise_outputs.items()}
        )
    outs = paths.optimise_outputs
    write_summary("optimise", res["metrics"], paths.summaries["optimise"])
    publish_images(
        {"detector layout": outs["layout_png"], "loss curve": outs["loss_png"], "panels per epoch": outs["panels_png"]},
        key="tomoflow-optimise-images",
        title="Optimised detector layout and loss curve",
    )
    create_markdown_artifact(
        markdown=train_markdown(res["metrics"], res["history"]),
        key="tomoflow-optimise",
        description="Detector optimisation summary",
    )
    publish_table(optimise_table(res["history"]), key="tomoflow-optimise-table", description="Optimisation per epoch")
    log.info("optimise: %d epochs (%d run now), final train loss %s", n, len(rows), res["metrics"]["loss"]["train_last"])
    return res["metrics"]
