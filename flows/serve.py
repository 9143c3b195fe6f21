"""``python -m flows.serve [--params params.yaml] [--workdir .]`` (``make serve``): serve the cron deployments of
the ``schedules`` section against a persistent Prefect server (``PREFECT_API_URL``; ``make server`` starts one).

``build_deployments`` only builds the deployments (tests inspect their schedules without serving).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from config import ParamsError, PipelineParams, load_params

__all__ = ["build_deployments", "main"]

NO_SERVER = (
    "error: PREFECT_API_URL is not set. Schedules need a persistent Prefect server (an ephemeral one has no scheduler):\n"
    "  make server   # or: prefect server start --host 127.0.0.1 --port 4200\n"
    "  export PREFECT_API_URL=http://127.0.0.1:4200/api\n"
    "  make serve"
)


def build_deployments(p: PipelineParams, params_path: str = "params.yaml", workdir: str = ".") -> list[Any]:
    """One ``RunnerDeployment`` per enabled entry of ``p.schedules``, with a ``Cron`` schedule (cron + time zone)."""
    from prefect import Flow
    from prefect.schedules import Cron

    from .scheduled import nightly_evaluate_flow, weekly_pipeline_flow

    workdir = str(Path(workdir).resolve())
    specs: dict[str, tuple[Flow[..., Any], dict[str, Any], str]] = {
        "nightly_evaluate": (
            nightly_evaluate_flow,
            {"params_path": str(params_path), "workdir": workdir},
            "Re-evaluate the trained detector on fresh held-out passives (reports/scheduled/<date>/)",
        ),
        "weekly_pipeline": (weekly_pipeline_flow, {"workdir": workdir}, "Full pipeline: dvc repro"),
    }
    deps = []
    for name, (fl, parameters, desc) in specs.items():
        entry = getattr(p.schedules, name)
        if entry is None or not entry.enabled:
            continue
        deps.append(
            fl.to_deployment(
                name=name.replace("_", "-"),
                schedules=[Cron(entry.cron, timezone=entry.timezone)],
                parameters=parameters,
                description=desc,
                tags=["tomoflow", "scheduled"],
            )
        )
    return deps


def main(argv: list[str] | None = None) -> int:
    """Validate the parameters, refuse without ``PREFECT_API_URL``, then serve (blocks until interrupted)."""
    parser = argparse.ArgumentParser(prog="python -m flows.serve", description="Serve the cron-scheduled deployments.")
    parser.add_argument("--params", default="params.yaml", help="parameter file, relative to --workdir (default: params.yaml)")
    parser.add_argument("--workdir", default=".", help="project root the scheduled flows run in (default: .)")
    parser.add_argument("--dry-run", action="store_true", help="print the deployments and next fire times, do not serve")
    args = parser.parse_args(argv)
    path = Path(args.params) if Path(args.params).is_absolute() else Path(args.workdir) / args.params
    try:
        p = load_params(path)
    except ParamsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    deps = build_deployments(p, args.params, args.workdir)
    for d in deps:
        s = d.schedules[0].schedule
        print(f"deployment {d.flow_name}/{d.name}: cron {s.cron!r} ({s.timezone})", file=sys.stderr)
    if args.dry_run:
        return 0
    if not os.environ.get("PREFECT_API_URL"):
        from prefect.settings import PREFECT_API_URL

        if not PREFECT_API_URL.value():
            print(NO_SERVER, file=sys.stderr)
            return 3
    if not deps:
        print("error: no enabled schedule in the 'schedules' section; nothing to serve", file=sys.stderr)
        return 2
    from prefect import serve

    serve(*deps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
