"""SIGKILL ``python -m flows generate_passives`` / ``evaluate`` at a seeded random point of the flow, then rerun: the
outputs equal an uninterrupted run's byte for byte, no temporary file is left anywhere in the work folder, and no
process of the killed stage's family survives it.

As DVC does before it runs a stage, the stage's outputs are removed first. The killed process reports to the session's
test server (``PREFECT_API_URL``: it starts no server of its own); the rerun runs in this process (``run_stage``, where
the CLI ends), which spares a second interpreter start. ``evaluate``'s reference is the shared tiny pipeline.
(``optimise``, ``irradiate`` and ``lumi_scan`` are killed in test_crash_resume.py.)
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import pytest
import yaml
from conftest import PipelineRun, tiny_params
from stage_process import kill_after_flow_began, leftover_temporaries, stage_env, start_stage

from flows.params import load_params
from flows.pipeline import run_stage
from flows.stages import STAGES

pytestmark = [pytest.mark.flow, pytest.mark.slow]


def _stage_files(stage: str, workdir: Path) -> dict[str, bytes]:
    """Every file the stage writes (its DVC outs, metrics and plots; folders expanded), by relative path."""
    spec = STAGES[stage]
    found: dict[str, bytes] = {}
    for rel in (*spec.outs, *spec.metrics, *spec.plots):
        p = workdir / rel
        for f in sorted(p.rglob("*")) if p.is_dir() else [p]:
            if f.is_file():
                found[f.relative_to(workdir).as_posix()] = f.read_bytes()
    return found


def _remove_outputs(stage: str, workdir: Path) -> None:
    spec = STAGES[stage]
    for rel in (*spec.outs, *spec.metrics, *spec.plots):
        p = workdir / rel
        if p.is_dir():
            shutil.rmtree(p)
        else:
            p.unlink(missing_ok=True)


def _kill_at_random_point(stage: str, params: Path, workdir: Path, delay_s: float) -> None:
    """Start the stage as users do, reporting to the session's test server (no server of its own), and SIGKILL it
    ``delay_s`` seconds after its flow began."""
    from prefect.settings import PREFECT_API_URL

    env = stage_env(str(PREFECT_API_URL.value()), workdir.parent / "prefect-home")
    kill_after_flow_began(start_stage(stage, params, workdir, env), workdir, delay_s, timeout=180)


def test_generate_passives_killed_anywhere(prefect_harness: None, tmp_path: Path) -> None:
    """200 volumes (~2 s of flow): killed 0.1-1.5 s into it, rerun, identical to an uninterrupted run."""
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(tiny_params({"passives.n_volumes": 200})))
    killed, ref = tmp_path / "killed", tmp_path / "ref"
    killed.mkdir(), ref.mkdir()
    _kill_at_random_point("generate_passives", params, killed, random.Random(14).uniform(0.1, 1.5))
    p = load_params(params)
    run_stage("generate_passives", p, str(killed))
    run_stage("generate_passives", p, str(ref))
    got, want = _stage_files("generate_passives", killed), _stage_files("generate_passives", ref)
    assert got.keys() == want.keys() == {"data/passives.h5"}
    assert got == want
    assert not leftover_temporaries(killed)


def test_evaluate_killed_anywhere(prefect_harness: None, tiny_pipeline: PipelineRun, tmp_path: Path) -> None:
    """``evaluate`` over a copy of the shared pipeline (its outputs removed, as DVC does): killed 0.2-4 s into the
    flow (predictions, comparison, plots or the final writes), rerun: every output equals the shared run's."""
    work = tiny_pipeline.copy_to(tmp_path / "work")
    _remove_outputs("evaluate", work)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(tiny_pipeline.params))
    _kill_at_random_point("evaluate", params, work, random.Random(2027).uniform(0.2, 4.0))
    run_stage("evaluate", load_params(params), str(work))
    got, want = _stage_files("evaluate", work), _stage_files("evaluate", tiny_pipeline.workdir)
    assert any(k.endswith(".png") for k in want) and "metrics/evaluate.json" in want
    assert got.keys() == want.keys()
    assert [k for k in want if got[k] != want[k]] == []
    assert not leftover_temporaries(work)
