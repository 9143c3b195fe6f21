"""``flows.server`` (a local Prefect server owned by one process) and ``flows.repro`` (one server per ``dvc repro``).

The process mechanics (start, health wait, stop, SIGKILL of the owner) run against a stand-in server: a few lines of
``http.server`` answering ``/api/health``, so these tests take fractions of a second. The real Prefect server under
a SIGKILLed stage is covered by tests/test_crash_resume.py::test_lumi_scan_killed_leaves_no_processes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

import flows.repro as repro
import flows.server as server
from flows.server import LocalServer, configured_api_url, healthy, local_server

ROOT = Path(__file__).resolve().parents[1]

FAKE_SERVER = textwrap.dedent(
    """
    import http.server, signal, sys
    if sys.argv[2] == "ignore-term":
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200 if self.path == "/api/health" else 404)
            self.end_headers()
        def log_message(self, *a):
            pass
    http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
    """
)


def _fake(mode: str = "") -> Any:
    return lambda port: [sys.executable, "-c", FAKE_SERVER, str(port), mode or "-"]


def test_local_server_starts_answers_and_stops(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server, "server_command", _fake())
    with local_server(startup_timeout=30) as api:
        assert api.startswith("http://127.0.0.1:") and api.endswith("/api")
        assert healthy(api)
        (child,) = [p for p in psutil.Process().children() if str(api.split(":")[2].split("/")[0]) in " ".join(p.cmdline())]
        assert os.getpgid(child.pid) == child.pid != os.getpgid(0), "the server runs in a process group of its own"
    assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE
    assert not healthy(api, timeout=0.5)


def test_stop_kills_a_server_that_ignores_sigterm(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server, "server_command", _fake("ignore-term"))
    srv = LocalServer().start()
    srv.wait(30)
    t0 = time.monotonic()
    srv.stop(timeout=0.5)
    assert srv.proc is not None and srv.proc.returncode == -signal.SIGKILL
    assert time.monotonic() - t0 < 10


def test_server_that_exits_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server, "server_command", lambda port: [sys.executable, "-c", "raise SystemExit(3)"])
    with pytest.raises(RuntimeError, match="exited with status 3 before it was up"):
        with local_server(startup_timeout=30):
            pass


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal: Linux prctl")
def test_server_dies_with_its_sigkilled_owner(tmp_path: Path) -> None:
    """The owner is SIGKILLed (no finally, no atexit): the kernel's parent-death signal still ends the server."""
    owner_code = textwrap.dedent(
        f"""
        import sys, time
        import flows.server as s
        s.server_command = lambda port: [sys.executable, "-c", {FAKE_SERVER!r}, str(port), "-"]
        srv = s.LocalServer().start()
        srv.wait(30)
        print(srv.proc.pid, flush=True)
        time.sleep(300)
        """
    )
    owner = subprocess.Popen(
        [sys.executable, "-c", owner_code],
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert owner.stdout is not None
        child = psutil.Process(int(owner.stdout.readline()))
        assert child.ppid() == owner.pid
        owner.kill()
        owner.wait(10)
        gone, alive = psutil.wait_procs([child], timeout=10)
        assert not alive, f"server {child.pid} outlived its SIGKILLed owner"
    finally:
        if owner.poll() is None:
            owner.kill()


def test_configured_api_url(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.delenv("PREFECT_PROFILE", raising=False)
    monkeypatch.setenv("PREFECT_HOME", str(tmp_path))
    monkeypatch.delenv("PREFECT_PROFILES_PATH", raising=False)
    assert configured_api_url(ask_prefect=False) is None  # no profiles.toml
    (tmp_path / "profiles.toml").write_text(
        'active = "lab"\n[profiles.lab]\nPREFECT_API_URL = "http://lab:4200/api"\n[profiles.other]\n'
    )
    assert configured_api_url(ask_prefect=False) == "http://lab:4200/api"
    monkeypatch.setenv("PREFECT_PROFILE", "other")
    assert configured_api_url(ask_prefect=False) is None
    monkeypatch.setenv("PREFECT_API_URL", "http://env:1/api")
    assert configured_api_url(ask_prefect=False) == "http://env:1/api"


class _NoServer:
    def __init__(self) -> None:
        raise AssertionError("no server may start")


def test_repro_noop_starts_nothing(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    seen: list[Any] = []
    monkeypatch.setattr(repro, "stale_stages", lambda targets: seen.append(targets) or [])
    monkeypatch.setattr(repro, "LocalServer", _NoServer)
    monkeypatch.setattr(repro.subprocess, "run", lambda *a, **k: pytest.fail("dvc repro must not run"))
    assert repro.main(["lumi_report"]) == 0
    assert seen == [["lumi_report"]] and "up to date" in capsys.readouterr().err


def test_repro_validates_before_dvc(monkeypatch: pytest.MonkeyPatch) -> None:
    """Something stale and a bad params.yaml: the check's exit status, no server, no ``dvc repro``."""
    monkeypatch.setattr(repro, "stale_stages", lambda targets: ["irradiate"])
    monkeypatch.setattr(repro, "validate_params", lambda env: 2)
    monkeypatch.setattr(repro, "LocalServer", _NoServer)
    monkeypatch.setattr(repro.subprocess, "run", lambda *a, **k: pytest.fail("dvc repro must not run"))
    assert repro.main([]) == 2


def test_repro_uses_the_configured_api(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[list[str], dict[str, str]]] = []
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    monkeypatch.setattr(repro, "stale_stages", lambda targets: pytest.fail("options given: no status check"))
    monkeypatch.setattr(repro, "validate_params", lambda env: 0)
    monkeypatch.setattr(repro, "LocalServer", _NoServer)
    monkeypatch.setattr(repro.subprocess, "run", lambda cmd, env: calls.append((cmd, env)) or subprocess.CompletedProcess(cmd, 0))
    assert repro.main(["-f", "generate_passives"]) == 0
    ((cmd, env),) = calls
    assert cmd[1:] == ["repro", "-f", "generate_passives"] and env["PREFECT_API_URL"] == "http://127.0.0.1:9/api"
    assert env["PATH"].split(os.pathsep)[0] == str(Path(sys.executable).parent)


def test_repro_starts_one_server_for_the_stages(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stale stages, no configured API: one server, its URL exported to ``dvc repro``, stopped afterwards (also when
    dvc fails)."""
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    monkeypatch.setattr(repro, "configured_api_url", lambda: None)
    monkeypatch.setattr(repro, "stale_stages", lambda targets: ["generate_passives"])
    monkeypatch.setattr(repro, "validate_params", lambda env: 0)
    monkeypatch.setattr(server, "server_command", _fake())
    seen: dict[str, Any] = {}

    def fake_dvc(cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
        seen["api"] = env["PREFECT_API_URL"]
        seen["healthy"] = healthy(env["PREFECT_API_URL"])
        return subprocess.CompletedProcess(cmd, 7)

    monkeypatch.setattr(repro.subprocess, "run", fake_dvc)
    assert repro.main([]) == 7
    assert seen["healthy"] and not healthy(seen["api"], timeout=0.5)
