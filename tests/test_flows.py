"""The whole skeleton (all flows) under the session's one Prefect test harness (``prefect_harness`` in conftest.py),
on tiny parameters in a tmp dir."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict

import pandas as pd
import pytest

from flows.__main__ import STAGE_NAMES
from flows.params import PipelineParams, parse_params
from flows.paths import PipelinePaths
from tomopt_lib.io import read_muon_records, read_parquet, read_passives

pytestmark = pytest.mark.flow

TINY: Dict[str, Any] = {
    "runtime": {"task_workers": 2},
    "passives": {"n_volumes": 2, "materials": ["beryllium", "lead"]},
    "irradiate": {"n_muons_per_volume": 400, "chunk_size": 200},
    "reconstruct": {"chunk_size": 150},
    "report": {"angle_bins": 20},
    # tiny optimisation / evaluation (tested in tests/test_optimise_flows.py)
    "optimise": {"n_epochs": 1, "n_volumes": 2, "n_val_volumes": 0, "n_mu_per_volume": 100, "mu_bs": 100},
    "evaluate": {"n_volumes": 2, "n_mu_per_volume": 100, "mu_bs": 100, "baselines": ["start"], "n_images": 0, "n_bootstrap": 100},
    # tiny luminosity scan, so that "all" stays fast (the lumi stages are tested in tests/test_lumi_flows.py)
    "lumi_scan": {"mode": "xy", "n_inversions": 2, "chunk_size": 2,
                  "plan": {"bases": [{"crossing_plane": "y"}], "parameters": ["sep_x"], "n_shifts": 1, "product": False}},
    "lumi_report": {"landscape_grid": 8, "hist_bins": 4},
}


def _params(**overrides: Dict[str, Any]) -> PipelineParams:
    data = {k: dict(v) for k, v in TINY.items()}
    for section, vals in overrides.items():
        data.setdefault(section, {}).update(vals)
    return parse_params(data)


def _outputs(paths: PipelinePaths) -> list:
    return [paths.passives, paths.irradiated, paths.scatters, paths.metrics, paths.angle_hist_csv, *paths.plots.values()]


def test_stage_registry_matches_cli() -> None:
    from flows.pipeline import STAGES

    assert tuple(STAGES) == STAGE_NAMES


def test_skeleton_all_stages(prefect_harness: None, tmp_path: Path) -> None:
    from prefect.artifacts import Artifact

    from flows.pipeline import run_stage

    p = _params()
    out = run_stage("all", p, str(tmp_path))
    assert set(out) == set(STAGE_NAMES)
    paths = PipelinePaths.at(tmp_path)
    for f in _outputs(paths):
        assert f.is_file() and f.stat().st_size > 0, f
    assert not [f for f in paths.data_dir.iterdir() if f.name.startswith(".")], "temporary chunk folders are removed"
    assert len(read_passives(paths.passives)) == 2
    assert sum(r.n_generated for r in read_muon_records(paths.irradiated).values()) == 800
    df = read_parquet(paths.scatters)
    m = json.loads(paths.metrics.read_text())
    assert m == out["report"]
    assert m["muons"]["generated"] == 800 and m["muons"]["left_volume"] == len(df)
    assert m["muons"]["reconstructed"] == int(df["reco_ok"].sum()) > 0
    assert m["muons"]["poca_inside"] == int(df["poca_inside"].sum()) > 0
    assert 0 < m["scatter_mrad"]["median"] < 1000 and m["per_material"]
    hist = pd.read_csv(paths.angle_hist_csv)
    assert len(hist) == 20 and hist["reco"].sum() == m["muons"]["reconstructed"]
    art = Artifact.get("tomoflow-skeleton-report")
    assert art is not None and "muons.generated | 800" in art.data


def test_zero_muons_flow_through_every_stage(prefect_harness: None, tmp_path: Path) -> None:
    from flows.pipeline import run_stage

    p = _params(irradiate={"n_muons_per_volume": 0})
    for stage in STAGE_NAMES:
        run_stage(stage, p, str(tmp_path))
    paths = PipelinePaths.at(tmp_path)
    assert all(f.is_file() for f in _outputs(paths))
    m = json.loads(paths.metrics.read_text())
    assert m["muons"] == {"generated": 0, "left_volume": 0, "reconstructed": 0, "poca_inside": 0}
    assert m["fractions"]["reconstructed"] is None and m["per_material"] == {}


def test_all_filtered_flow(prefect_harness: None, tmp_path: Path) -> None:
    from flows.pipeline import run_stage

    # 1 mm wide physical panels: (almost) no muon crosses >= 2 panels above and below, so nothing is reconstructed
    p = _params(volume={"panel_span": 0.001}, irradiate={"n_muons_per_volume": 100, "chunk_size": 100})
    run_stage("all", p, str(tmp_path))
    paths = PipelinePaths.at(tmp_path)
    m = json.loads(paths.metrics.read_text())
    assert m["muons"]["generated"] == 200 and m["muons"]["reconstructed"] == 0
    assert m["scatter_mrad"]["median"] is None
    assert all(f.is_file() for f in _outputs(paths))
