"""CLI: ``python -m flows <stage> [--params params.yaml] [--workdir .]``; stages as in ``dvc.yaml`` plus ``all``.

Parameters are validated before anything else: a bad ``params.yaml`` prints one message and exits with status 2
without touching any output. Then the torch thread count and the Prefect environment defaults are set, and only then
is Prefect imported. The flow reports to ``PREFECT_API_URL`` when set (``make run`` sets it: one server for the whole
``dvc repro``, see ``flows.repro``), else to a local server that this process starts and that dies with it
(``flows.server``; unlike Prefect's embedded server, it never outlives a killed stage).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from .env import apply_env_defaults
from .stages import STAGE_NAMES, STAGES

if TYPE_CHECKING:
    from config import PipelineParams


def dask_scheduler_problem(address: str, timeout_s: float = 5.0) -> str | None:
    """Why the Dask scheduler at ``address`` (``tcp://host:port``) cannot be used, or None if a TCP connection opens."""
    import socket

    host, _, port = address.split("://", 1)[1].rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            return None
    except OSError as err:
        return f"no Dask scheduler reachable there ({type(err).__name__}: {err}); start one (dask scheduler) or fix the address"


def jobqueue_problem(submit_command: str, api_url: str | None) -> str | None:
    """Why ``runtime.task_runner: dask_jobqueue`` cannot work from here, or None: the batch system's submit command is
    not on PATH, or the Prefect API that the workers on the batch nodes must call is unset (embedded server) or
    a loopback address."""
    import shutil
    from urllib.parse import urlsplit

    if shutil.which(submit_command) is None:
        return (
            f"{submit_command} (runtime.jobqueue.system's submit command) is not on PATH: run on a login / submit node "
            "of that batch system, or choose another runtime.task_runner"
        )
    host = urlsplit(api_url).hostname if api_url else None
    if host is None or host == "localhost" or host.startswith("127.") or host == "::1":
        return (
            f"the batch workers run Prefect tasks and must reach the Prefect API, but PREFECT_API_URL is "
            f"{'unset (embedded server)' if host is None else repr(api_url) + ' (loopback)'}: start "
            "'prefect server start --host 0.0.0.0' on this node and export PREFECT_API_URL=http://<this host>:4200/api"
        )
    return None


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
        if p.runtime.task_runner == "dask_jobqueue":
            import os

            problem = jobqueue_problem(p.runtime.jobqueue.submit_command, os.environ.get("PREFECT_API_URL"))
            if problem:
                raise ParamsError(f"invalid parameters in {params_path}:\n  runtime.task_runner = 'dask_jobqueue': {problem}")
        if args.stage == "check" and (Path(args.workdir) / "dvc.yaml").exists():  # the file DVC reads
            import yaml

            from .stages import missing_tracked_params

            missing = missing_tracked_params(yaml.safe_load(params_path.read_text()))
            if missing:
                raise ParamsError(
                    f"invalid parameters in {params_path}: it lacks {', '.join(missing)}, which dvc.yaml tracks (DVC "
                    "cannot run a stage without them); restore them, e.g. from git (git checkout params.yaml)"
                )
        from config.resources import check_resources  # estimated memory, disk and work against runtime.limits

        check_resources(p, list(STAGE_NAMES) if args.stage in ("check", "all") else [args.stage], args.workdir, params_path)
    except ParamsError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.stage == "check":
        print(f"{params_path}: valid", file=sys.stderr)
        return 0
    if args.stage in STAGES:  # damaged inputs: one line, exit 1, within seconds, before Prefect starts or anything is written
        from tomopt_lib.io import DataFileError, verify_data_file

        try:
            for rel in STAGES[args.stage].inputs:
                verify_data_file(Path(args.workdir) / rel)
        except DataFileError as err:
            print(f"error: stage {args.stage!r} cannot read its input: {err}", file=sys.stderr)
            return 1
    if args.stage == "study" and p.study == "default":  # placeholders only: no Prefect flow start (make run stays fast)
        from .paths import PipelinePaths
        from .study_idle import write_idle_outputs

        write_idle_outputs(PipelinePaths.at(args.workdir))
        print("stage 'study': study=default, nothing to run (placeholders written)", file=sys.stderr)
        return 0
    set_threads(p.runtime.threads)
    apply_env_defaults()
    return _run_with_api(args.stage, p, args.workdir)


def _run_with_api(stage: str, p: PipelineParams, workdir: str) -> int:
    """Run ``stage`` against the configured Prefect API, or else against a local server child of this process (not
    Prefect's embedded server, which outlives a SIGKILLed stage): it boots while prefect and torch are imported, and
    it dies with this process however that ends (``flows.server``)."""
    import contextlib
    import os

    from .server import UI_URL, LocalServer, configured_api_url, drain_prefect_workers

    server = None if configured_api_url() else LocalServer().start()
    saved = os.environ.get("PREFECT_API_URL")
    if server is not None:
        os.environ["PREFECT_API_URL"] = server.api_url  # for child processes (Dask workers)
    t0 = time.perf_counter()
    try:
        from .pipeline import run_stage  # imports prefect: after the environment is set

        with contextlib.ExitStack() as stack:
            if server is not None:  # prefect may have read its settings already (croniter in config): set it here too
                from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, temporary_settings

                ui = os.environ.get("PREFECT_UI_URL", UI_URL)  # no UI here: links to where `make server` shows the run
                stack.enter_context(temporary_settings({PREFECT_API_URL: server.api_url, PREFECT_UI_URL: ui}))
                server.wait()
            t0 = time.perf_counter()
            run_stage(stage, p, workdir)
    except Exception as err:  # noqa: BLE001 - report and exit non-zero; Prefect already logged the traceback
        print(f"error: stage {stage!r} failed: {type(err).__name__}: {err}", file=sys.stderr)
        return 1
    finally:
        if server is not None:
            drain_prefect_workers()  # the run's last logs and events, while the server still answers
            server.stop()
            if saved is None:
                os.environ.pop("PREFECT_API_URL", None)
            else:
                os.environ["PREFECT_API_URL"] = saved
    print(f"stage {stage!r} finished in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return 0


def exit_now(rc: int) -> NoReturn:
    """End the ``python -m flows`` process with status ``rc`` right after its work: the Prefect logs and events still
    queued are sent and stdout/stderr flushed, then ``os._exit`` skips the interpreter's teardown (torch, Prefect's
    client threads), which took 2.5-4 s per stage and writes nothing (every output is already renamed into place)."""
    import os

    from .server import drain_prefect_workers

    drain_prefect_workers()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)


def cli() -> None:
    """Console-script entry point (``tomoflow <stage>``)."""
    exit_now(main())


if __name__ == "__main__":
    exit_now(main())
