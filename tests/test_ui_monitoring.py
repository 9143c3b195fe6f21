"""Acceptance test of the Prefect UI monitoring: a REAL ``prefect server start`` subprocess (``prefect_server`` in
conftest.py), the skeleton stages run against it (``PREFECT_API_URL``), then the ``report`` flow run and its artifacts
(markdown metrics table, embedded PNG images, progress at 100 %) are read back through the server's REST API.

The stages run in this process (the flows' code path is the same); that a separate ``python -m flows`` process shows up
on the server, completed and with its artifacts, is checked by test_crash_resume.py against the same server."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import yaml
from conftest import prefect_api, tiny_params

pytestmark = pytest.mark.slow

SEED = 4711


def test_report_flow_artifacts_in_the_prefect_api(prefect_server: str, tmp_path: Path) -> None:
    server = prefect_server  # the session's real `prefect server start` (conftest), shared with test_crash_resume.py
    # a seed of its own: the run names (``<stage>-seed<seed>-...``) are this test's alone on the shared server
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params(seed=SEED)))
    from flows.naming import run_name, run_tags
    from flows.params import load_params
    from flows.pipeline import run_stage

    p = load_params(tmp_path / "params.yaml")
    with prefect_api(server):
        for stage in ("generate_passives", "irradiate", "reconstruct", "report"):
            run_stage(stage, p, str(tmp_path))

    with httpx.Client(base_url=server, timeout=30) as c:
        stages = ("generate_passives", "irradiate", "reconstruct", "report")
        wanted = [run_name(stage, p) for stage in stages]  # <stage>-seed<seed>-<study>-p<params hash>
        assert wanted[0].startswith(f"generate-passives-seed{SEED}-random_block-p"), wanted
        runs = c.post("/flow_runs/filter", json={"flow_runs": {"name": {"any_": wanted}}, "limit": 50}).json()
        assert sorted(r["name"] for r in runs) == sorted(wanted), [r["name"] for r in runs]  # one run per stage
        names = {r["name"]: r for r in runs}
        assert all(r["state_type"] == "COMPLETED" for r in runs)
        for stage, name in zip(stages, wanted):  # stage, study, seed and params hash also as tags
            assert set(names[name]["tags"]) == set(run_tags(stage, p)), names[name]["tags"]
        report = names[run_name("report", p)]
        assert report["state_type"] == "COMPLETED"
        flow = c.get(f"/flows/{report['flow_id']}").json()
        assert flow["name"] == "report"
        tasks = c.post("/task_runs/filter", json={"flow_runs": {"id": {"any_": [report["id"]]}}}).json()
        assert {"build-metrics", "render-plots"} <= {t["name"] for t in tasks}
        arts = c.post("/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [report["id"]]}}}).json()
        for run, keys in (
            (run_name("generate_passives", p), {"tomoflow-generate-passives"}),
            (run_name("irradiate", p), {"tomoflow-irradiate", "irradiate-progress"}),
            (run_name("reconstruct", p), {"tomoflow-reconstruct", "reconstruct-progress"}),
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
