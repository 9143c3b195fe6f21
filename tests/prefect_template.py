"""A migrated Prefect server database, made once per machine and Prefect version, copied into every test server.

A Prefect server on a fresh database runs ~110 Alembic migrations and registers the block types before it answers:
~20 s of CPU on this 2-core machine, paid by every server a test session starts (the test harness, the real
``prefect server start``, a ``python -m flows`` stage that starts its own). Seeded with a copy of a database that has
been through that once (and the block-registration memo), the same start takes ~10 s.

The template lives in the temporary directory, keyed by the installed Prefect version, and is made under a file lock
by whichever process asks first (the xdist controller starts that in the background while the workers collect).

    python tests/prefect_template.py   # make it now (prints its folder)
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path

__all__ = ["DB_NAME", "MEMO_NAME", "ensure_template", "seed_home", "server_process", "start_in_background"]

DB_NAME = "prefect.db"
"""The server database's file name in a Prefect home (the default ``PREFECT_SERVER_DATABASE_CONNECTION_URL``)."""
MEMO_NAME = "memo_store.toml"
"""Prefect's memo of the registered block types, in a Prefect home: with it a server skips the registration."""


def template_dir() -> Path:
    return Path(tempfile.gettempdir()) / f"tomoflow-prefect-template-{version('prefect')}"


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _server_env(home: Path) -> dict[str, str]:
    env = dict(os.environ, PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false")
    env["DO_NOT_TRACK"] = "1"
    for key in ("PREFECT_API_URL", "PREFECT_SERVER_DATABASE_CONNECTION_URL", "PREFECT_API_DATABASE_CONNECTION_URL"):
        env.pop(key, None)
    return env


@contextlib.contextmanager
def server_process(home: Path, *, ui: bool = False, timeout: float = 180.0, stop_signal: int = signal.SIGTERM) -> Iterator[str]:
    """A ``prefect server start`` on a free localhost port with Prefect home ``home`` (log: ``home/server.log``), in
    its own process group; yields the API URL once healthy; always stopped (``stop_signal``, then SIGKILL after 30 s).
    Not healthy within ``timeout`` s: RuntimeError with the end of the log."""
    import httpx

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = _server_env(home)
    env["PREFECT_UI_ENABLED"] = "true" if ui else "false"
    with open(home / "server.log", "wb") as log:
        proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    api = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                log_tail = (home / "server.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"prefect server did not start (exit {proc.poll()}): {log_tail}")
            time.sleep(0.3)
        yield api
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, stop_signal)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _make(dst: Path) -> None:
    """Start a server on an empty home until it is healthy, stop it cleanly (SIGINT: the SQLite write-ahead log is
    checkpointed into the database file), keep its database and memo."""
    work = Path(tempfile.mkdtemp(prefix="tomoflow-prefect-template-"))
    with server_process(work, timeout=300, stop_signal=signal.SIGINT):
        pass
    if (work / f"{DB_NAME}-wal").exists() and (work / f"{DB_NAME}-wal").stat().st_size:
        raise RuntimeError("the template database still has a write-ahead log after the server stopped")
    staging = dst.with_name(f"{dst.name}.{os.getpid()}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for name in (DB_NAME, MEMO_NAME):
        shutil.copy2(work / name, staging / name)
    os.replace(staging, dst)  # all or nothing: a folder that exists is complete
    shutil.rmtree(work, ignore_errors=True)


def ensure_template() -> Path:
    """The template folder (``prefect.db`` + ``memo_store.toml``), made now if no process has made it yet."""
    dst = template_dir()
    if (dst / DB_NAME).exists():
        return dst
    with _locked(dst.with_name(f"{dst.name}.lock")):
        if not (dst / DB_NAME).exists():
            _make(dst)
    return dst


def seed_home(home: Path, *, memo: bool = True) -> Path:
    """Copy the template database (and the block memo) into the Prefect home ``home``; returns the database path."""
    src = ensure_template()
    home.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src / DB_NAME, home / DB_NAME)
    if memo:
        shutil.copyfile(src / MEMO_NAME, home / MEMO_NAME)
    return home / DB_NAME


def start_in_background() -> subprocess.Popen[bytes] | None:
    """Make the template in a background process if it is missing (returns the process; None: nothing to do)."""
    if (template_dir() / DB_NAME).exists():
        return None
    return subprocess.Popen(
        [sys.executable, __file__], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )


if __name__ == "__main__":
    print(ensure_template())
