"""CLI: ``python -m flows <stage> [--params params.yaml] [--workdir .]``; stages as in ``dvc.yaml`` plus ``all``.

Parameters are validated before anything else: a bad ``params.yaml`` prints one message and exits with status 2
without touching any output. Then the torch thread count and the Prefect environment defaults are set, and only then
is Prefect imported (the flow runs on the ephemeral server unless ``PREFECT_API_URL`` is set).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .env import apply_env_defaults
from .stages import STAGE_NAMES, STAGES


def dask_scheduler_problem(address: str, timeout_s: float = 5.0) -> str | None:
    """Why the Dask scheduler at ``address`` (``tcp://host:port``) cannot be used, or None if a TCP connection opens."""
    import socket

    host, _, port = address.split("://", 1)[1].rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            return None
    except OSError as err:
        return f"no Dask scheduler reachable there ({type(err).__name__}: {err}); start one (dask scheduler) or fix the address"


def main(argv: list[str] | None = None) -> int:
    stages = "\n".join(f"  {n:<18} {s.description}" for n, s in STAGES.items())
    parser = argparse.ArgumentParser(
        prog="python -m flows",
        description="Run a pipeline stage as a Prefect flow (dvc repro runs them in order; see dvc.yaml).",
        epilog=f"stages:\n{stages}\n  {'all':<18} every stage in order (one parent flow, no DVC)\n"
        f"  {'check':<18} only validate the parameter file (exit 2 with every problem listed)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "stage", choices=[*STAGE_NAMES, "all", "check"], help="a stage, all of them, or check: only validate the parameters"
    )
    parser.add_argument("--params", default=None, help="parameter file (default: <workdir>/params.yaml)")
    parser.add_argument("--workdir", default=".", help="root of data/, metrics/, plots/ (default: .)")
    args = parser.parse_args(argv)
    params_path = Path(args.params) if args.params else Path(args.workdir) / "params.yaml"
    from config import ParamsError, load_params  # after argument parsing: --help stays fast (no torch import)

    try:
        p = load_params(params_path)
        from tomopt_lib.runtime import resolve_device, set_threads

        try:
            resolve_device(p.runtime.device)
        except ValueError as err:
            raise ParamsError(f"invalid parameters in {params_path}:\n  runtime.device = {p.runtime.device!r}: {err}") from None
        if p.runtime.task_runner == "dask_address" and p.runtime.dask_address:
            problem = dask_scheduler_problem(p.runtime.dask_address)
            if problem:
                raise ParamsError(
                    f"invalid parameters in {params_path}:\n  runtime.dask_address = {p.runtime.dask_address!r}: {problem}"
                )
    except ParamsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.stage == "check":
        print(f"{params_path}: valid", file=sys.stderr)
        return 0
    set_threads(p.runtime.threads)
    apply_env_defaults()
    from .pipeline import run_stage  # imports prefect: after the environment is set

    t0 = time.perf_counter()
    try:
        run_stage(args.stage, p, args.workdir)
    except Exception as err:  # noqa: BLE001 - report and exit non-zero; Prefect already logged the traceback
        print(f"error: stage {args.stage!r} failed: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    print(f"stage {args.stage!r} finished in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return 0


def cli() -> None:
    """Console-script entry point (``tomoflow <stage>``)."""
    sys.exit(main())


if __name__ == "__main__":
    sys.exit(main())
