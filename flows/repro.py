"""``python -m flows.repro [dvc repro arguments]``: ``dvc repro`` with ONE Prefect server for all of its stages.

Each stage is a ``python -m flows <stage>`` process; on its own it would start (and stop) a Prefect server of its own,
about 10 s per stage. Here one local server (``flows.server``: the default Prefect home and database, so the records
stay browsable with ``make server``) is started for the whole ``dvc repro``, its URL is exported to the stages as
``PREFECT_API_URL``, and it is stopped afterwards; it also stops if this process is killed. With ``PREFECT_API_URL``
already set (``make server`` running, a remote server), that one is used and nothing is started.

When DVC has nothing to do (``dvc status`` of the targets is clean, checked in-process in 1-3 s), no server
is started and ``dvc repro`` is not run at all: the no-op ``make run`` stays fast. With options other than stage
targets (``-f``, ``--pull``, ...) that check is skipped and ``dvc repro`` always runs. ``make run``, ``make lumi`` and the
scheduled ``weekly_pipeline`` call this. Whenever something is to run, ``python -m flows check`` validates the whole
``params.yaml`` first (a bad value: its message and exit status 2, ``dvc repro`` not started, nothing touched).
Exit status: ``dvc repro``'s.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from .env import apply_env_defaults
from .server import UI_URL, LocalServer, configured_api_url

__all__ = ["main", "stale_stages", "dvc_executable", "validate_params"]


def stale_stages(targets: Sequence[str], repo_root: str | Path = ".") -> list[str] | None:
    """What ``dvc status`` reports as changed for ``targets`` and their upstream stages (all stages without targets);
    ``[]``: ``dvc repro`` would do nothing. None when DVC cannot tell (then run it)."""
    try:
        from dvc.repo import Repo

        repo = Repo(str(repo_root))
        try:
            status = repo.status(targets=list(targets) or None, with_deps=True)
        finally:
            repo.close()
    except Exception:  # noqa: BLE001 - any doubt: let `dvc repro` decide
        return None
    return sorted(status)


def dvc_executable() -> str:
    """``dvc`` next to this interpreter (the venv's), else the one on PATH."""
    local = Path(sys.executable).parent / "dvc"
    return str(local) if local.exists() else (shutil.which("dvc") or "dvc")


def validate_params(env: dict[str, str]) -> int:
    """``python -m flows check`` in a subprocess (the whole ``params.yaml``, sizes against this machine): its exit
    status, 0 when valid (its message is on stderr otherwise)."""
    return subprocess.run([sys.executable, "-m", "flows", "check"], env=env).returncode


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)  # unwinds: the dvc child is killed and the server stopped


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] in (["-h"], ["--help"]):
        print(__doc__, file=sys.stderr)
        return 0
    apply_env_defaults()
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # stages run `python -m flows`
    t0 = time.perf_counter()
    if not any(a.startswith("-") for a in args):
        stale = stale_stages(args)
        if stale == []:
            print("Data and pipelines are up to date (no Prefect server started).", file=sys.stderr)
            return 0
    # validate the whole params.yaml (and the sizes against this machine) before DVC, which deletes a stage's outputs
    # before running it: a bad value stops here with one message, nothing touched
    rc_check = validate_params(env)
    if rc_check != 0:
        return rc_check
    previous = signal.signal(signal.SIGTERM, _terminate)
    server = None if configured_api_url() else LocalServer().start()
    try:
        if server is not None:
            waited = server.wait()
            env["PREFECT_API_URL"] = server.api_url
            env.setdefault("PREFECT_UI_URL", UI_URL)
            print(f"Prefect server for this dvc repro: {server.api_url} (up in {waited:.1f} s)", file=sys.stderr)
        rc = subprocess.run([dvc_executable(), "repro", *args], env=env).returncode
    finally:
        if server is not None:
            server.stop()
        signal.signal(signal.SIGTERM, previous)
    print(f"dvc repro exited {rc} after {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main())
