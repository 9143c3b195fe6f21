"""Flows run on cron schedules (served by ``flows.serve``): nightly re-evaluation and the weekly full pipeline.

``nightly_evaluate``: the current trained detector (``models/``) and the baselines predict X0 on held-out passives
freshly generated with a seed derived from the scheduled date; everything is written under
``reports/scheduled/<date>/`` (a private work directory), never into DVC outputs.
``weekly_pipeline``: ``dvc repro`` in a subprocess (``python -m flows.repro``; DVC decides what is stale).
"""

from __future__ import annotations

import datetime as dt
import shutil
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger

from config import load_params

from .evaluate import evaluate_flow
from .paths import PipelinePaths

__all__ = ["nightly_evaluate_flow", "weekly_pipeline_flow", "scheduled_date", "date_seed"]


def scheduled_date() -> dt.date:
    """The run's scheduled start date (UTC), or today outside a scheduled run."""
    from prefect.runtime import flow_run

    t = flow_run.scheduled_start_time
    return (t if t is not None else dt.datetime.now(dt.UTC)).date()


def date_seed(base_seed: int, day: dt.date) -> int:
    """Seed of the held-out passives of ``day``: differs every day, reproducible for a given date."""
    return (int(base_seed) * 100_003 + int(day.strftime("%Y%m%d"))) % (2**31 - 1)


def _nightly_run_name() -> str:
    from prefect.runtime import flow_run

    return f"nightly-evaluate-{flow_run.parameters.get('date') or scheduled_date().isoformat()}"


@flow(name="nightly_evaluate", flow_run_name=_nightly_run_name, log_prints=False)
def nightly_evaluate_flow(params_path: str = "params.yaml", workdir: str = ".", date: str | None = None) -> Mapping[str, Any]:
    """Re-evaluate ``<workdir>/models`` on fresh held-out passives into ``<workdir>/reports/scheduled/<date>/``."""
    log = get_run_logger()
    day = dt.date.fromisoformat(date) if date else scheduled_date()
    p = load_params(Path(workdir) / params_path if not Path(params_path).is_absolute() else params_path)
    src = PipelinePaths.at(workdir).optimise_outputs["detector_pt"]
    if not src.is_file():
        raise FileNotFoundError(f"no trained detector at {src}: run the optimise stage (dvc repro optimise) first")
    out_root = Path(workdir) / "reports" / "scheduled" / day.isoformat()
    dst = PipelinePaths.at(out_root).optimise_outputs["detector_pt"]
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, dst)
    params = p.model_copy(update={"evaluate": p.evaluate.model_copy(update={"seed": date_seed(p.seed, day)})})
    log.info("nightly evaluation of %s on %s, held-out seed %d -> %s", src, day, params.evaluate.seed, out_root)
    return evaluate_flow.with_options(flow_run_name=f"evaluate-scheduled-{day.isoformat()}")(params=params, workdir=str(out_root))


@flow(name="weekly_pipeline", flow_run_name="weekly-pipeline", log_prints=False)
def weekly_pipeline_flow(workdir: str = ".") -> int:
    """``dvc repro`` in ``workdir`` (``python -m flows.repro`` in a subprocess, the venv's ``bin`` first on ``PATH``, one
    Prefect server for all stages); raises if it fails."""
    import os

    log = get_run_logger()
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    check = subprocess.run([sys.executable, "-m", "flows", "check"], cwd=workdir, env=env, capture_output=True, text=True)
    if check.returncode != 0:  # validate before DVC, which deletes a stage's outputs before running it
        raise ValueError(f"params.yaml is invalid; dvc repro not started:\n{check.stderr.strip()}")
    # flows.repro: `dvc repro` on this deployment's PREFECT_API_URL (set when served), else on one local server it
    # starts for all the stages and stops afterwards (not one embedded server per stage)
    proc = subprocess.run([sys.executable, "-m", "flows.repro"], cwd=workdir, env=env, capture_output=True, text=True)
    log.info("dvc repro exited %d:\n%s", proc.returncode, (proc.stdout + proc.stderr)[-4000:])
    if proc.returncode != 0:
        raise RuntimeError(f"dvc repro failed with exit status {proc.returncode}")
    return proc.returncode
