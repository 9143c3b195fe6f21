"""Acceptance test of the Prefect UI monitoring: a REAL ``prefect server start`` subprocess (``prefect_server`` in
conftest.py), the skeleton stages run against it in a subprocess (``PREFECT_API_URL``), then the ``report`` flow run
and its artifacts (markdown metrics table, embedded PNG images, progress at 100 %) are read back through the server's
REST API."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import yaml
from conftest import tiny_params

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
SEED = 4711
RUN = (
    "import sys; from flows.params import load_params; from flows.pipeline import run_stage; "
    "p = load_params(sys.argv[1]); [run_stage(s, p, sys.argv[2]) for s in "
    "('generate_passives', 'irradiate', 'reconstruct', 'report')]"
)


def test_report_flow_artifacts_in_the_prefect_api(prefect_server: str, tmp_path: Path) -> None:
    server = prefect_server  # the session's real `prefect server start` (conftest), shared with test_crash_resume.py
    # a seed of its own: the run names (``<stage>-seed<seed>``) are this test's alone on the shared server
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params(seed=SEED)))
    env = dict(os.environ, PREFECT_API_URL=server, OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    proc = subprocess.run(
        [sys.executable, "-c", RUN, str(tmp_path / "params.yaml"), str(tmp_path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]

    with httpx.Client(base_url=server, timeout=30) as c:
        wanted = [f"{stage}-seed{SEED}" for stage in ("generate-passives", "irradiate", "reconstruct", "report")]
        runs = c.post("/flow_runs/filter", json={"flow_runs": {"name": {"any_": wanted}}, "limit": 50}).json()
        assert sorted(r["name"] for r in runs) == sorted(wanted), [r["name"] for r in runs]  # one run per stage
        names = {r["name"]: r for r in runs}
        assert all(r["state_type"] == "COMPLETED" for r in runs)
        report = names[f"report-seed{SEED}"]
        assert report["state_type"] == "COMPLETED"
        flow = c.get(f"/flows/{report['flow_id']}").json()
        assert flow["name"] == "report"
        tasks = c.post("/task_runs/filter", json={"flow_runs": {"id": {"any_": [report["id"]]}}}).json()
        assert {"build-metrics", "render-plots"} <= {t["name"] for t in tasks}
        arts = c.post("/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [report["id"]]}}}).json()
        for run, keys in (
            (f"generate-passives-seed{SEED}", {"tomoflow-generate-passives"}),
            (f"irradiate-seed{SEED}", {"tomoflow-irradiate", "irradiate-progress"}),
            (f"reconstruct-seed{SEED}", {"tomoflow-reconstruct", "reconstruct-progress"}),
        ):
            got = c.post("/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [names[run]["id"]]}}}).json()
            assert keys <= {a["key"] for a in got}, (run, got)
    by_key = {a["key"]: a for a in arts}
    assert {"tomoflow-skeleton-report", "tomoflow-report-images", "report-progress"} <= set(by_key), sorted(by_key)
    table = by_key["tomoflow-skeleton-report"]
    assert table["type"] == "markdown" and "| muons.generated | 600 |" in table["data"]  # 2 volumes x 300 muons
    images = by_key["tomoflow-report-images"]
    assert images["type"] == "markdown" and images["data"].count("](data:image/png;base64,") == 3
    assert len(images["data"]) < 600_000
    progress = by_key["report-progress"]
    assert progress["type"] == "progress" and float(progress["data"]) == pytest.approx(100.0)
