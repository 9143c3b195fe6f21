"""Crash and resume: SIGKILL the ``optimise`` / ``irradiate`` / ``lumi_scan`` stages mid-run, rerun, compare with
uninterrupted runs; a killed stage leaves no process behind (``lumi_scan``, run alone with its own Prefect server).

The killed stage is a ``python -m flows <stage>`` subprocess against the session's real Prefect server
(``prefect_server`` in conftest.py, shared with the UI test; no ephemeral server start per process); the rerun runs in
this process (``run_stage``, the code path the CLI ends in: one interpreter start less) and must show up on the
server, completed and with its artifacts. The uninterrupted reference runs in a thread of this process against the
same server while the killed subprocess starts and works.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import prefect_template
import pytest
import torch
import yaml
from conftest import prefect_api, tiny_params
from stage_process import kill_after_flow_began, leftover_temporaries, stage_env, start_stage

from flows.naming import run_name
from flows.params import load_params
from flows.paths import PipelinePaths
from tasks.irradiation import chunk_sizes
from tasks.passives import generate_passives
from tomopt_lib.io import read_muon_records

pytestmark = [pytest.mark.flow, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[1]
# tiny_params (conftest) plus: 4 epochs (~0.5 s each; killed once epoch 2 is checkpointed, so 2 are left to resume),
# 1500 muons per volume in 6 chunks of 250 (killed after 2 of the 12 chunks, so 10 are left to resume)
CRASH: dict[str, Any] = {"optimise": {"n_epochs": 4}, "irradiate": {"n_muons_per_volume": 1500, "chunk_size": 250}}


def _write_params(path: Path) -> Path:
    path.write_text(yaml.safe_dump(tiny_params(**CRASH)))
    return path


def _reference(stage: str, params: Path, workdir: Path, api: str) -> Future:
    """The uninterrupted run, in this process (a thread of its own) on the session's server: it works while the
    killed process starts, trains and is killed, and while the rerun process starts. ``.result()`` waits for it."""
    from flows.pipeline import run_stage

    def run() -> None:
        with prefect_api(api):  # settings are per thread (context variables): set them in the thread that runs
            run_stage(stage, load_params(params), str(workdir))

    pool = ThreadPoolExecutor(1, thread_name_prefix=f"reference-{stage}")
    try:
        return pool.submit(run)
    finally:
        pool.shutdown(wait=False)


def _assert_monitored(api: str, run_name: str, workdir: Path, artifact_keys: set) -> None:
    """The resumed ``python -m flows`` process reported to the server: its flow run (this workdir) is COMPLETED and
    carries its artifacts."""
    import httpx

    with httpx.Client(base_url=api, timeout=30) as c:
        runs = c.post("/flow_runs/filter", json={"flow_runs": {"name": {"any_": [run_name]}}, "limit": 50}).json()
        mine = [r for r in runs if r["parameters"].get("workdir") == str(workdir) and r["state_type"] == "COMPLETED"]
        assert len(mine) == 1, [(r["parameters"].get("workdir"), r["state_type"]) for r in runs]
        arts = c.post("/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [mine[0]["id"]]}}}).json()
    assert artifact_keys <= {a["key"] for a in arts}, sorted(a["key"] for a in arts)


def _kill_when(proc: subprocess.Popen, cond: Callable[[], bool], timeout: float = 120) -> None:
    t0 = time.monotonic()
    while not cond():
        assert proc.poll() is None, "the stage ended before the kill point"
        assert time.monotonic() - t0 < timeout, "kill point never reached"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(30) == -signal.SIGKILL


def _rerun_here(stage: str, params: Path, workdir: Path, api: str) -> str:
    """The rerun, in this process on the session's server (``run_stage``: where ``python -m flows`` ends; one
    interpreter start less); returns what it logged through Prefect's loggers."""
    from flows.pipeline import run_stage

    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())

    handler, logger = Collect(logging.INFO), logging.getLogger("prefect")
    logger.addHandler(handler)
    try:
        with prefect_api(api):
            run_stage(stage, load_params(params), str(workdir))
    finally:
        logger.removeHandler(handler)
    return "\n".join(lines)


def _no_partial_outputs(paths: PipelinePaths) -> None:
    """Final outputs are either absent or complete; interrupted atomic writes leave only ``.<name>.*.tmp`` files."""
    outs = paths.optimise_outputs
    assert not outs["detector_pt"].exists() and not outs["metrics"].exists(), "killed before finalise: no outputs"
    for ckpt in sorted(paths.checkpoints.glob("epoch_*.pt")):
        torch.load(ckpt, map_location="cpu", weights_only=False)  # every checkpoint present is complete


def test_optimise_killed_resumes_bitwise(prefect_server: str, tmp_path: Path) -> None:
    killed, ref = tmp_path / "killed", tmp_path / "ref"
    killed.mkdir(), ref.mkdir()
    params = _write_params(tmp_path / "params.yaml")
    env = stage_env(prefect_server, tmp_path / "prefect-home")
    reference = _reference("optimise", params, ref, prefect_server)
    proc = start_stage("optimise", params, killed, env)
    paths = PipelinePaths.at(killed)
    _kill_when(proc, lambda: (paths.checkpoints / "epoch_0002.pt").exists())
    _no_partial_outputs(paths)
    assert not (paths.checkpoints / "epoch_0004.pt").exists(), "killed mid-run"
    rerun_log = _rerun_here("optimise", params, killed, prefect_server)
    reference.result(timeout=300)
    assert "resuming from the checkpoint of epoch 2" in rerun_log, rerun_log[-3000:]
    _assert_monitored(
        prefect_server, run_name("optimise", load_params(params)), killed, {"tomoflow-optimise", "tomoflow-optimise-images"}
    )
    a = torch.load(paths.optimise_outputs["detector_pt"], map_location="cpu", weights_only=False)
    b = torch.load(PipelinePaths.at(ref).optimise_outputs["detector_pt"], map_location="cpu", weights_only=False)
    _assert_same(a, b)
    m_killed, m_ref = (json.loads(PipelinePaths.at(d).optimise_outputs["metrics"].read_text()) for d in (killed, ref))
    assert m_killed == m_ref  # versioned metrics hold no wall-clock values
    for name in ("detector_pt", "detector_json", "metrics", "loss_csv", "panels_csv"):  # byte-stable outputs
        assert (
            PipelinePaths.at(killed).optimise_outputs[name].read_bytes()
            == PipelinePaths.at(ref).optimise_outputs[name].read_bytes()
        ), name


def _assert_same(a: Any, b: Any) -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _assert_same(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _assert_same(x, y)
    else:
        assert a == b


def test_irradiate_killed_resumes_from_cached_chunks(prefect_server: str, tmp_path: Path) -> None:
    killed, ref = tmp_path / "killed", tmp_path / "ref"
    killed.mkdir(), ref.mkdir()
    params = _write_params(tmp_path / "params.yaml")
    env = stage_env(prefect_server, tmp_path / "prefect-home")
    p = load_params(params)
    generate_passives.fn(str(PipelinePaths.at(ref).passives), p.passives.n_volumes, p.volume, p.passives, p.seed)
    (killed / "data").mkdir()
    shutil.copy2(PipelinePaths.at(ref).passives, PipelinePaths.at(killed).passives)
    n_chunks = p.passives.n_volumes * len(chunk_sizes(p.irradiate.n_muons_per_volume, p.irradiate.chunk_size))
    assert n_chunks == 12
    reference = _reference("irradiate", params, ref, prefect_server)
    proc = start_stage("irradiate", params, killed, env)
    records = killed / ".work" / "irradiate" / "records"
    _kill_when(proc, lambda: records.is_dir() and len(list(records.iterdir())) >= 2)
    out = PipelinePaths.at(killed).irradiated
    assert not out.exists(), "killed before the merge: no irradiated.h5"
    log = _rerun_here("irradiate", params, killed, prefect_server)
    reference.result(timeout=300)
    _assert_monitored(prefect_server, run_name("irradiate", p), killed, {"tomoflow-irradiate", "irradiate-progress"})
    recomputed = log.count("muons generated")
    # >= 1 chunk reused (a record being written at the kill is incomplete: a miss, recomputed; never trusted)
    assert 0 < recomputed < n_chunks and "Cached" in log, log[-3000:]
    assert not (killed / ".work").exists(), "the work folder is removed once the merged file is written"
    a, b = read_muon_records(out), read_muon_records(PipelinePaths.at(ref).irradiated)
    assert a.keys() == b.keys() == {0, 1} and [r.n_generated for r in a.values()] == [1500, 1500]
    for vid in a:
        np.testing.assert_array_equal(a[vid].generated, b[vid].generated)
        np.testing.assert_array_equal(a[vid].final, b[vid].final)
        for k in a[vid].extra:
            np.testing.assert_array_equal(a[vid].extra[k], b[vid].extra[k])
        for g in a[vid].hits:
            for v in a[vid].hits[g]:
                np.testing.assert_array_equal(a[vid].hits[g][v], b[vid].hits[g][v])


def test_lumi_scan_killed_leaves_no_processes(prefect_server: str, tmp_path: Path) -> None:
    """``python -m flows lumi_scan`` run alone (no ``PREFECT_API_URL``: it starts its own local Prefect server, a
    child process) is SIGKILLed at a seeded random point of its flow: no process of its family survives it (the
    server dies with it: parent-death signal), the rerun completes, the scan equals an uninterrupted run's, and no
    temporary or chunk file is left behind. The reference and the rerun run in this process on the session's server."""
    import random

    import pandas as pd

    killed, ref = tmp_path / "killed", tmp_path / "ref"
    killed.mkdir(), ref.mkdir()
    params = tmp_path / "params.yaml"  # 12 inversions in 4 chunks: a few seconds of flow to be killed in
    params.write_text(yaml.safe_dump(tiny_params({"lumi_scan.n_inversions": 12, "lumi_scan.chunk_size": 3})))
    alone = stage_env(None, tmp_path / "prefect-home")  # no API: the stage starts its own server
    prefect_template.seed_home(Path(alone["PREFECT_HOME"]))  # its own server starts on a migrated database copy
    reference = _reference("lumi_scan", params, ref, prefect_server)
    proc = start_stage("lumi_scan", params, killed, alone)
    # seeded: the same kill point on every run of the test; the server child dies with the stage (parent-death signal)
    kill_after_flow_began(proc, killed, random.Random(2026).uniform(0.2, 1.2), own_server=True)
    reference.result(timeout=300)
    _rerun_here("lumi_scan", params, killed, prefect_server)
    out, ref_out = PipelinePaths.at(killed).lumi_scan, PipelinePaths.at(ref).lumi_scan
    a, b = pd.read_parquet(out), pd.read_parquet(ref_out)
    timing = [c for c in a.columns if "time" in c or c.endswith("_s")]  # wall-clock columns, if any, may differ
    pd.testing.assert_frame_equal(a.drop(columns=timing), b.drop(columns=timing))
    if not timing:
        assert out.read_bytes() == ref_out.read_bytes()
    assert not leftover_temporaries(killed)


def test_study_killed_resumes_bitwise(prefect_server: str, tmp_path: Path) -> None:
    """The ``study`` stage (a tiny U-lorry study, 4 epochs) killed once epoch 2 is checkpointed resumes after epoch 2
    and ends with the same detector, layouts and metrics, byte for byte, as an uninterrupted run."""
    killed, ref = tmp_path / "killed", tmp_path / "ref"
    killed.mkdir(), ref.mkdir()
    small = {"n_train": 4, "n_test": 8, "n_mu_per_volume": 150, "mu_bs": 150, "n_epochs": 4, "n_bootstrap": 100}
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(tiny_params(study="u_lorry", studies={"u_lorry": small})))
    env = stage_env(prefect_server, tmp_path / "prefect-home")
    reference = _reference("study", params, ref, prefect_server)
    proc = start_stage("study", params, killed, env)
    paths = PipelinePaths.at(killed)
    ckpts = paths.study_checkpoints
    _kill_when(proc, lambda: any(ckpts.rglob("epoch_0002.pt")))
    assert not any(ckpts.rglob("epoch_0004.pt")), "killed mid-run"
    outs = paths.study_outputs
    assert not outs["detector_pt"].exists() and not outs["metrics"].exists(), "killed before the outputs"
    rerun_log = _rerun_here("study", params, killed, prefect_server)
    reference.result(timeout=300)
    assert "after epoch 2" in rerun_log and "resuming" in rerun_log, rerun_log[-3000:]
    for name in ("detector_pt", "detector_json", "metrics", "history_csv"):
        a, b = outs[name], PipelinePaths.at(ref).study_outputs[name]
        assert a.read_bytes() == b.read_bytes(), name
    assert not leftover_temporaries(killed)
