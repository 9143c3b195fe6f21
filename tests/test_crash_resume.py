"""Crash and resume: SIGKILL the ``optimise`` / ``irradiate`` stages mid-run, rerun, compare with uninterrupted runs.

Stages run as ``python -m flows <stage>`` subprocesses against the session's Prefect test server (no ephemeral server
start per process).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List

import numpy as np
import torch
import yaml

from flows.params import load_params
from flows.paths import PipelinePaths
from tasks.passives import generate_passives
from tomopt_lib.io import read_muon_records

ROOT = Path(__file__).resolve().parents[1]
TINY: Dict[str, Any] = {
    "passives": {"n_volumes": 2, "materials": ["beryllium", "lead"]},
    "optimise": {"n_epochs": 6, "n_volumes": 2, "n_val_volumes": 1, "passive_bs": 1, "n_mu_per_volume": 300, "mu_bs": 300},
    "irradiate": {"n_muons_per_volume": 3000, "chunk_size": 500},
}


def _write_params(path: Path) -> Path:
    data = yaml.safe_load((ROOT / "params.yaml").read_text())
    for section, vals in TINY.items():
        data[section].update(vals)
    path.write_text(yaml.safe_dump(data))
    return path


def _env(tmp: Path) -> Dict[str, str]:
    from prefect.settings import PREFECT_API_URL

    return {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value()), "PREFECT_HOME": str(tmp / "prefect-home"),
            "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MPLBACKEND": "Agg", "PREFECT_LOGGING_LEVEL": "INFO"}


def _start(stage: str, params: Path, workdir: Path, env: Dict[str, str]) -> subprocess.Popen:
    log = open(workdir / f"{stage}-{time.time_ns()}.log", "w")
    return subprocess.Popen([sys.executable, "-m", "flows", stage, "--params", str(params), "--workdir", str(workdir)],
                            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def _kill_when(proc: subprocess.Popen, cond: Callable[[], bool], timeout: float = 120) -> None:
    t0 = time.monotonic()
    while not cond():
        assert proc.poll() is None, "the stage ended before the kill point"
        assert time.monotonic() - t0 < timeout, "kill point never reached"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(30) == -signal.SIGKILL


def _logs(workdir: Path) -> List[str]:
    return [p.read_text() for p in sorted(workdir.glob("*.log"), key=lambda p: p.stat().st_mtime)]


def _no_partial_outputs(paths: PipelinePaths) -> None:
    """Final outputs are either absent or complete; interrupted atomic writes leave only ``.<name>.*.tmp`` files."""
    outs = paths.optimise_outputs
    assert not outs["detector_pt"].exists() and not outs["metrics"].exists(), "killed before finalise: no outputs"
    for ckpt in sorted(paths.checkpoints.glob("epoch_*.pt")):
        torch.load(ckpt, map_location="cpu", weights_only=False)  # every checkpoint present is complete


def test_optimise_killed_resumes_bitwise(prefect_harness: None, tmp_path: Path) -> None:
    killed, ref = tmp_path / "killed", tmp_path / "ref"
    killed.mkdir(), ref.mkdir()
    params = _write_params(tmp_path / "params.yaml")
    env = _env(tmp_path)
    ref_proc = _start("optimise", params, ref, env)
    proc = _start("optimise", params, killed, env)
    paths = PipelinePaths.at(killed)
    _kill_when(proc, lambda: (paths.checkpoints / "epoch_0002.pt").exists())
    _no_partial_outputs(paths)
    assert not (paths.checkpoints / "epoch_0006.pt").exists()
    rerun = _start("optimise", params, killed, env)
    assert rerun.wait(180) == 0, _logs(killed)[-1][-3000:]
    assert ref_proc.wait(180) == 0, _logs(ref)[-1][-3000:]
    assert "resuming from the checkpoint of epoch" in _logs(killed)[-1]
    a = torch.load(paths.optimise_outputs["detector_pt"], map_location="cpu", weights_only=False)
    b = torch.load(PipelinePaths.at(ref).optimise_outputs["detector_pt"], map_location="cpu", weights_only=False)
    _assert_same(a, b)
    m_killed, m_ref = (json.loads(PipelinePaths.at(d).optimise_outputs["metrics"].read_text()) for d in (killed, ref))
    m_killed.pop("seconds_per_epoch"), m_ref.pop("seconds_per_epoch")  # wall time: the only non-deterministic value
    assert m_killed == m_ref


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


def test_irradiate_killed_resumes_from_cached_chunks(prefect_harness: None, tmp_path: Path) -> None:
    killed, ref = tmp_path / "killed", tmp_path / "ref"
    killed.mkdir(), ref.mkdir()
    params = _write_params(tmp_path / "params.yaml")
    env = _env(tmp_path)
    p = load_params(params)
    generate_passives.fn(str(PipelinePaths.at(ref).passives), p.passives.n_volumes, p.volume.model_dump(),
                         p.passives.model_dump(), p.seed)
    (killed / "data").mkdir()
    shutil.copy2(PipelinePaths.at(ref).passives, PipelinePaths.at(killed).passives)
    n_chunks = 2 * 6
    ref_proc = _start("irradiate", params, ref, env)
    proc = _start("irradiate", params, killed, env)
    records = killed / ".work" / "irradiate" / "records"
    _kill_when(proc, lambda: records.is_dir() and len(list(records.iterdir())) >= 2)
    out = PipelinePaths.at(killed).irradiated
    assert not out.exists(), "killed before the merge: no irradiated.h5"
    rerun = _start("irradiate", params, killed, env)
    assert rerun.wait(180) == 0, _logs(killed)[-1][-3000:]
    assert ref_proc.wait(180) == 0, _logs(ref)[-1][-3000:]
    log = _logs(killed)[-1]
    recomputed = log.count("muons generated")
    assert 0 < recomputed <= n_chunks - 2 and "Cached" in log, log[-3000:]
    assert not (killed / ".work").exists(), "the work folder is removed once the merged file is written"
    a, b = read_muon_records(out), read_muon_records(PipelinePaths.at(ref).irradiated)
    assert a.keys() == b.keys()
    for vid in a:
        np.testing.assert_array_equal(a[vid].generated, b[vid].generated)
        np.testing.assert_array_equal(a[vid].final, b[vid].final)
        for k in a[vid].extra:
            np.testing.assert_array_equal(a[vid].extra[k], b[vid].extra[k])
        for g in a[vid].hits:
            for v in a[vid].hits[g]:
                np.testing.assert_array_equal(a[vid].hits[g][v], b[vid].hits[g][v])
