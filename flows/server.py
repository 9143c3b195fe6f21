"""A local Prefect API server owned by one process: started as a child, stopped with it, never left behind.

``local_server()`` runs the same server as Prefect's embedded ("ephemeral") mode (uvicorn with the Prefect API app,
the essential services only, no UI) on a free localhost port, on the default Prefect home and database, so the run
records stay browsable later with ``make server``. Unlike Prefect's embedded server, the child is in its own process
group with a parent-death signal (Linux ``prctl(PR_SET_PDEATHSIG)``): it stops when its owner exits in any way,
SIGKILL included, instead of living on and holding a port and memory.

Used by ``python -m flows <stage>`` without ``PREFECT_API_URL`` (one server for the stage) and by ``python -m
flows.repro`` (one server for a whole ``dvc repro``, its URL exported to every stage). Importing this module imports
neither prefect nor torch.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

__all__ = [
    "SERVER_ENV",
    "UI_URL",
    "LocalServer",
    "local_server",
    "configured_api_url",
    "drain_prefect_workers",
    "server_command",
    "healthy",
    "free_port",
]

SERVER_ENV: dict[str, str] = {
    "PREFECT_UI_ENABLED": "0",  # the UI is `make server`'s job; it reads the same database
    "PREFECT__SERVER_EPHEMERAL": "1",  # the embedded server's set of services (run and event recording, no scheduler)
    "PREFECT__SERVER_FINAL": "1",
}
"""Environment of the server child on top of the owner's (as Prefect's own embedded server sets it)."""

UI_URL = "http://127.0.0.1:4200"
"""``PREFECT_UI_URL`` for flows on a local server (which serves no UI): where ``make server`` shows their records later,
so the "View at" links in the stage logs work once it runs."""

_PR_SET_PDEATHSIG = 1


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (the server retries on another one if it is taken meanwhile)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_command(port: int) -> list[str]:
    """The server child's command line (the Prefect API app under uvicorn, as in Prefect's embedded mode)."""
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        "prefect.server.api.server:create_app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "error",
        "--lifespan",
        "on",
    ]


def healthy(api_url: str, timeout: float = 2.0) -> bool:
    """Whether the Prefect API at ``api_url`` (``http://host:port/api``) answers its health check."""
    try:
        with urllib.request.urlopen(f"{api_url.rstrip('/')}/health", timeout=timeout) as resp:
            return bool(resp.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


def _die_with_parent(parent_pid: int) -> Callable[[], None]:
    """``preexec_fn`` of the child: SIGTERM when the owner dies (Linux), and exit at once if it is already gone.

    libc is loaded here, before the fork; the child only calls ``prctl``. The signal follows the *thread* that starts
    the child: start the server from a thread that lives as long as the server should (the main thread)."""
    prctl = None
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            prctl = ctypes.CDLL(None, use_errno=True).prctl

    def setup() -> None:
        if prctl is not None:
            prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent_pid:  # the owner died between fork and prctl: nobody would stop this server
            os._exit(1)

    return setup


def _stop(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM to the server's process group (graceful: uvicorn closes the database), SIGKILL after ``timeout``."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def _spawn(port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, **SERVER_ENV}
    env.pop("PREFECT_API_URL", None)
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # offline, as everywhere in this project (flows.env)
    return subprocess.Popen(
        server_command(port),
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,  # --log-level error: nothing on stdout; errors go to the owner's stderr
        start_new_session=True,  # own process group: a terminal's Ctrl-C reaches the owner, which stops the server
        preexec_fn=_die_with_parent(os.getpid()),  # noqa: PLW1509 - only prctl + getppid in the child
    )


class LocalServer:
    """One local Prefect API server child. ``start()`` only spawns it (returns at once: the owner can import prefect
    and torch meanwhile), ``wait()`` blocks until it answers, ``stop()`` ends it. Prefer :func:`local_server`."""

    def __init__(self) -> None:
        self.port = free_port()
        self.api_url = f"http://127.0.0.1:{self.port}/api"
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at = 0.0

    def start(self) -> LocalServer:
        self.started_at = time.monotonic()
        self.proc = _spawn(self.port)
        return self

    def wait(self, timeout: float | None = None) -> float:
        """Block until the health check answers; returns the seconds since ``start()``. ``timeout`` defaults to
        ``PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS`` (else 120 s). Raises ``RuntimeError`` if the server exits
        or is not up in time."""
        assert self.proc is not None, "start() first"
        if timeout is None:
            timeout = float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120"))
        while not healthy(self.api_url, timeout=1.0):
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"the local Prefect server ({self.api_url}) exited with status {self.proc.returncode} before it was up"
                )
            if time.monotonic() - self.started_at > timeout:
                raise RuntimeError(f"the local Prefect server ({self.api_url}) was not up after {timeout:.0f} s")
            time.sleep(0.1)
        return time.monotonic() - self.started_at

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc is not None:
            _stop(self.proc, timeout)


@contextlib.contextmanager
def local_server(startup_timeout: float | None = None, stop_timeout: float = 15.0) -> Iterator[str]:
    """Start a local Prefect API server, wait until it is healthy, yield its API URL (``http://127.0.0.1:<port>/api``),
    stop it on exit (also when the body raises)."""
    server = LocalServer().start()
    try:
        server.wait(startup_timeout)
        yield server.api_url
    finally:
        server.stop(stop_timeout)


def configured_api_url(ask_prefect: bool | None = None) -> str | None:
    """The Prefect API the user configured: ``PREFECT_API_URL`` in the environment, else Prefect's own settings if
    prefect is already imported, else the active profile of ``profiles.toml`` (``PREFECT_PROFILES_PATH``, else
    ``$PREFECT_HOME/profiles.toml``; read without importing prefect, which takes seconds). None: nothing configured
    (Prefect would start its embedded server). ``ask_prefect``: use prefect's settings (default: if already imported)."""
    url = os.environ.get("PREFECT_API_URL")
    if url:
        return url
    if ask_prefect if ask_prefect is not None else "prefect.settings" in sys.modules:  # imported already: ask prefect
        from prefect.settings import get_current_settings

        return get_current_settings().api.url or None
    home = Path(os.environ.get("PREFECT_HOME") or Path.home() / ".prefect").expanduser()
    path = Path(os.environ.get("PREFECT_PROFILES_PATH") or home / "profiles.toml").expanduser()
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return None
    name = os.environ.get("PREFECT_PROFILE") or data.get("active") or "ephemeral"
    value = data.get("profiles", {}).get(name, {}).get("PREFECT_API_URL")
    return str(value) if value else None


def drain_prefect_workers(timeout: float = 10.0) -> None:
    """Send the logs and events this process still queues for the Prefect API (Prefect does it at interpreter exit):
    call before stopping a server that this process owns. Needs prefect imported; never raises."""
    if "prefect" not in sys.modules:
        return
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    for worker in (APILogWorker, EventsWorker):
        with contextlib.suppress(Exception):
            worker.drain_all(timeout=timeout)
