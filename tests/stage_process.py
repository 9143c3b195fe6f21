"""``python -m flows <stage>`` as a child process for the kill tests (test_crash_resume.py, test_kill_anywhere.py):
start it, SIGKILL it once its flow has begun, check that nothing of its process family survives, look for leftovers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

__all__ = ["ROOT", "kill_after_flow_began", "leftover_temporaries", "stage_env", "stage_logs", "start_stage"]

ROOT = Path(__file__).resolve().parents[1]


def stage_env(api: str | None, home: Path) -> dict[str, str]:
    """Environment of a stage process reporting to the Prefect API ``api`` (None: the stage starts its own server)
    with Prefect home ``home``."""
    env = {
        **os.environ,
        "PREFECT_HOME": str(home),
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",
        "MPLBACKEND": "Agg",
        "PREFECT_LOGGING_LEVEL": "INFO",
    }
    env.pop("PREFECT_API_URL", None)
    if api is not None:
        env["PREFECT_API_URL"] = api
    return env


def start_stage(stage: str, params: Path, workdir: Path, env: dict[str, str]) -> subprocess.Popen:
    """Start the stage; its output goes to ``workdir/<stage>-<ns>.log`` (read with :func:`stage_logs`)."""
    with open(workdir / f"{stage}-{time.time_ns()}.log", "w") as log:  # the child keeps its own handle
        return subprocess.Popen(
            [sys.executable, "-m", "flows", stage, "--params", str(params), "--workdir", str(workdir)],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def stage_logs(workdir: Path) -> list[str]:
    """The stage logs of ``workdir``, oldest first."""
    return [p.read_text() for p in sorted(workdir.glob("*.log"), key=lambda p: p.stat().st_mtime)]


def kill_after_flow_began(
    proc: subprocess.Popen, workdir: Path, delay_s: float, *, own_server: bool = False, timeout: float = 240
) -> None:
    """SIGKILL ``proc`` ``delay_s`` seconds after its flow began (its log says so); assert it was still running and
    that no process of its family outlives it (``own_server``: assert first that its Prefect server child runs)."""
    t0 = time.monotonic()
    while not any("Beginning flow run" in text for text in stage_logs(workdir)):
        assert proc.poll() is None, stage_logs(workdir)[-1][-3000:]
        assert time.monotonic() - t0 < timeout, "the flow never began"
        time.sleep(0.05)
    time.sleep(delay_s)
    me = psutil.Process(proc.pid)
    children = me.children(recursive=True)  # psutil handles remember their start time: no PID-reuse mix-ups
    if own_server:
        assert any("uvicorn" in " ".join(p.cmdline()) for p in children), "the stage's own server child is running"
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(30) == -signal.SIGKILL, f"the stage ended before the kill point: {stage_logs(workdir)[-1][-2000:]}"
    _, alive = psutil.wait_procs(children, timeout=30)
    assert not alive, [(p.pid, p.cmdline()) for p in alive]


def leftover_temporaries(workdir: Path) -> list[Path]:
    """Temporary files of interrupted atomic writes and chunk files of interrupted scans anywhere under ``workdir``."""
    return [p for p in workdir.rglob("*") if p.name.endswith(".tmp") or ".tmp." in p.name or p.name.startswith("chunk")]
