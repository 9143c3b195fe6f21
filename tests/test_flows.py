"""The whole skeleton (all flows) under the session's one Prefect test harness (``prefect_harness`` in conftest.py),
on tiny parameters: the ``all`` run is the session's ``tiny_pipeline``; the edge cases rerun the stages their change
affects over a copy of it."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from conftest import PipelineRun, tiny_params

from flows.__main__ import STAGE_NAMES
from flows.params import PipelineParams, parse_params
from flows.paths import PipelinePaths
from tomopt_lib.io import read_muon_records, read_parquet, read_passives

pytestmark = [pytest.mark.flow, pytest.mark.slow]

TOMO_CHAIN = ("generate_passives", "irradiate", "reconstruct", "report")
"""The stages that read ``data/``; optimise/evaluate read only seed/volume/passives/optimise/evaluate and the lumi
stages only their own sections (dvc.yaml), so a change of ``irradiate`` alone reruns nothing else."""


def _params(overrides: dict[str, Any] | None = None, **sections: Any) -> PipelineParams:
    return parse_params(tiny_params(overrides, **sections))


def _outputs(paths: PipelinePaths) -> list:
    return [paths.passives, paths.irradiated, paths.scatters, paths.metrics, paths.angle_hist_csv, *paths.plots.values()]


def _rerun(stages: Sequence[str], p: PipelineParams, work: Path) -> dict[str, float]:
    """Run ``stages`` over ``work``; returns the mtimes (ns) of the tomography outputs before the run."""
    from flows.pipeline import run_stage

    before = {str(f): f.stat().st_mtime_ns for f in _outputs(PipelinePaths.at(work))}
    for stage in stages:
        run_stage(stage, p, str(work))
    return before


def test_stage_registry_matches_cli() -> None:
    from flows.pipeline import STAGES

    assert tuple(STAGES) == STAGE_NAMES


def test_skeleton_all_stages(tiny_pipeline: PipelineRun) -> None:
    out = tiny_pipeline.out
    assert set(out) == set(STAGE_NAMES)
    paths = PipelinePaths.at(tiny_pipeline.workdir)
    for f in _outputs(paths):
        assert f.is_file() and f.stat().st_size > 0, f
    assert not [f for f in paths.data_dir.iterdir() if f.name.startswith(".")], "temporary chunk folders are removed"
    assert not (tiny_pipeline.workdir / ".work").exists(), "stage work folders are removed"
    assert len(read_passives(paths.passives)) == 2
    recs = read_muon_records(paths.irradiated)
    assert sorted(recs) == [0, 1] and [r.n_generated for r in recs.values()] == [300, 300]
    df = read_parquet(paths.scatters)
    m = json.loads(paths.metrics.read_text())
    assert m == out["report"]
    assert m["muons"]["generated"] == 600 and m["muons"]["left_volume"] == len(df) == sum(r.n_kept for r in recs.values())
    assert m["muons"]["reconstructed"] == int(df["reco_ok"].sum()) > 0
    assert m["muons"]["poca_inside"] == int(df["poca_inside"].sum()) > 0
    assert 0 < m["scatter_mrad"]["median"] < 1000 and set(m["per_material"]) <= {"beryllium", "lead"} and m["per_material"]
    hist = pd.read_csv(paths.angle_hist_csv)
    assert len(hist) == 20 and hist["reco"].sum() == m["muons"]["reconstructed"]
    for key in ("tomoflow-generate-passives", "tomoflow-irradiate", "tomoflow-reconstruct", "tomoflow-report-images"):
        assert tiny_pipeline.artifacts[key], key
    assert "muons.generated | 600" in tiny_pipeline.artifacts["tomoflow-skeleton-report"]


def test_zero_muons_flow_through_every_stage(prefect_harness: None, tiny_pipeline: PipelineRun, tmp_path: Path) -> None:
    """Zero muons through irradiate/reconstruct/report, rerun over the outputs of a normal run: all are replaced."""
    work = tiny_pipeline.copy_to(tmp_path / "work")
    before = _rerun(TOMO_CHAIN[1:], _params(irradiate={"n_muons_per_volume": 0}), work)
    paths = PipelinePaths.at(work)
    for f in _outputs(paths)[1:]:
        assert f.is_file() and f.stat().st_mtime_ns > before[str(f)], f"{f} was not rewritten"
    assert {v: r.n_generated for v, r in read_muon_records(paths.irradiated).items()} == {0: 0, 1: 0}
    assert len(read_parquet(paths.scatters)) == 0
    m = json.loads(paths.metrics.read_text())
    assert m["muons"] == {"generated": 0, "left_volume": 0, "reconstructed": 0, "poca_inside": 0}
    assert m["fractions"]["reconstructed"] is None and m["per_material"] == {} and m["scatter_mrad"]["median"] is None
    assert pd.read_csv(paths.angle_hist_csv)["reco"].sum() == 0


def test_all_filtered_flow(prefect_harness: None, tiny_pipeline: PipelineRun, tmp_path: Path) -> None:
    # 1 mm wide physical panels: (almost) no muon crosses >= 2 panels above and below, so nothing is reconstructed.
    # ``volume`` feeds every tomography stage and optimise/evaluate (the reference detector); the lumi stages keep
    # the copied outputs.
    work = tiny_pipeline.copy_to(tmp_path / "work")
    # (the evaluate images are rendered by the shared run already: none here)
    p = _params(
        {"volume.panel_span": 0.001, "optimise.budget": None, "evaluate.n_images": 0},  # free areas: the 1 mm spans hold
        irradiate={"n_muons_per_volume": 100, "chunk_size": 100},
    )
    _rerun((*TOMO_CHAIN, "optimise", "evaluate"), p, work)
    paths = PipelinePaths.at(work)
    m = json.loads(paths.metrics.read_text())
    assert m["muons"]["generated"] == 200 and m["muons"]["reconstructed"] == 0 and m["muons"]["left_volume"] > 0
    assert m["scatter_mrad"]["median"] is None
    assert all(f.is_file() for f in _outputs(paths))
    ev = json.loads(paths.evaluate_outputs["metrics"].read_text())
    shared = json.loads(PipelinePaths.at(tiny_pipeline.workdir).evaluate_outputs["metrics"].read_text())
    assert set(ev["detectors"]) == {"trained", "start", "reference"} and ev["n_volumes"] == 2
    assert ev["detectors"]["reference"] != shared["detectors"]["reference"], "the 1 mm reference detector was evaluated"
