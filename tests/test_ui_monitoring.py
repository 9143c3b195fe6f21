"""Acceptance test of the Prefect UI monitoring: a REAL ``prefect server start`` subprocess, the skeleton stages run
against it in a subprocess (``PREFECT_API_URL``), then the ``report`` flow run and its artifacts (markdown metrics
table, embedded PNG images, progress at 100 %) are read back through the server's REST API."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterator

import httpx
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
TINY: Dict[str, Any] = {
    "passives": {"n_volumes": 2, "materials": ["beryllium", "lead"]},
    "irradiate": {"n_muons_per_volume": 400, "chunk_size": 200},
    "reconstruct": {"chunk_size": 200},
}
RUN = ("import sys; from flows.params import load_params; from flows.pipeline import run_stage; "
       "p = load_params(sys.argv[1]); [run_stage(s, p, sys.argv[2]) for s in "
       "('generate_passives', 'irradiate', 'reconstruct', 'report')]")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``prefect server start`` on a free port with its own PREFECT_HOME; always terminated."""
    home = tmp_path_factory.mktemp("prefect_home")
    port = _free_port()
    env = dict(os.environ, PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1",
               PREFECT_UI_ENABLED="true")
    env.pop("PREFECT_API_URL", None)
    log = open(home / "server.log", "wb")
    proc = subprocess.Popen([str(Path(sys.executable).parent / "prefect"), "server", "start", "--host", "127.0.0.1",
                             "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    api = f"http://127.0.0.1:{port}/api"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{api}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.skip(f"prefect server did not start (exit {proc.poll()}): "
                            f"{(home / 'server.log').read_text(errors='replace')[-500:]}")
            time.sleep(0.5)
        yield api
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        log.close()


def test_report_flow_artifacts_in_the_prefect_api(server: str, tmp_path: Path) -> None:
    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    for k, v in TINY.items():
        data[k].update(v)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(data))
    env = dict(os.environ, PREFECT_API_URL=server, OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    proc = subprocess.run([sys.executable, "-c", RUN, str(tmp_path / "params.yaml"), str(tmp_path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]

    with httpx.Client(base_url=server, timeout=30) as c:
        runs = c.post("/flow_runs/filter", json={"sort": "START_TIME_DESC", "limit": 50}).json()
        names = {r["name"]: r for r in runs}
        assert {"generate-passives-seed1234", "irradiate-seed1234", "report-seed1234"} <= set(names), sorted(names)
        report = names["report-seed1234"]
        assert report["state_type"] == "COMPLETED"
        flow = c.get(f"/flows/{report['flow_id']}").json()
        assert flow["name"] == "report"
        tasks = c.post("/task_runs/filter", json={"flow_runs": {"id": {"any_": [report["id"]]}}}).json()
        assert {"build-metrics", "render-plots"} <= {t["name"] for t in tasks}
        arts = c.post("/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [report["id"]]}}}).json()
        for run, keys in (("generate-passives-seed1234", {"tomoflow-generate-passives"}),
                          ("irradiate-seed1234", {"tomoflow-irradiate", "irradiate-progress"}),
                          ("reconstruct-seed1234", {"tomoflow-reconstruct", "reconstruct-progress"})):
            got = c.post("/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [names[run]["id"]]}}}).json()
            assert keys <= {a["key"] for a in got}, (run, got)
    by_key = {a["key"]: a for a in arts}
    assert {"tomoflow-skeleton-report", "tomoflow-report-images", "report-progress"} <= set(by_key), sorted(by_key)
    table = by_key["tomoflow-skeleton-report"]
    assert table["type"] == "markdown" and "|" in table["data"]
    images = by_key["tomoflow-report-images"]
    assert images["type"] == "markdown" and images["data"].count("](data:image/png;base64,") == 3
    assert len(images["data"]) < 600_000
    progress = by_key["report-progress"]
    assert progress["type"] == "progress" and float(progress["data"]) == pytest.approx(100.0)
