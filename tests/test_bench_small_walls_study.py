"""Small-walls study: wall IoU, detectors at equal cost, comparison, parameters and a tiny run of the study stage."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from config import ParamsError, parse_params
from tasks.study_small_walls import X0_SOIL, X0_WALL, compare_walls, wall_iou, walls_volume


def test_wall_iou() -> None:
    truth = np.zeros((10, 10, 10), bool)
    truth[2:6, 3, 1:9] = True  # 32 wall voxels
    pred = np.full(truth.shape, X0_SOIL)
    assert wall_iou(np.where(truth, X0_WALL, X0_SOIL), truth) == 1.0
    assert wall_iou(pred, truth) == 0.0
    half = pred.copy()
    half[2:4, 3, 1:9] = X0_WALL  # 16 of the 32 found
    half[0, 0, :4] = X0_WALL  # 4 false walls
    assert wall_iou(half, truth) == pytest.approx(16 / 36)
    assert wall_iou(pred, np.zeros_like(truth)) == 1.0  # no walls, none predicted


def test_start_and_hand_detectors_cost_the_same() -> None:
    cfg = parse_params({}).studies.small_walls
    hand, start = walls_volume("hand", cfg), walls_volume("start", cfg)
    assert float(hand.get_cost()) == pytest.approx(float(start.get_cost()), rel=1e-6)
    top = float(start.get_passive_z_range()[1].reshape(-1)[0])
    above = [p for d in start.get_detectors() if d.pos == "above" for p in d.panels]
    assert all(top < float(p.z) < top + 0.2 for p in above)  # packed next to the block
    assert all(float(p.xy[0]) == pytest.approx(5.0 + cfg.start_offset) for p in above)


def test_compare_walls(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    base = rng.uniform(0.1, 0.3, 30)
    paths = {}
    for name, shift in (("trained", 0.1), ("start", 0.0), ("hand", 0.05)):
        paths[name] = str(tmp_path / f"{name}.csv")
        pd.DataFrame({"volume": range(30), "iou": base + shift}).to_csv(paths[name], index=False)
    m = compare_walls.fn(paths, {k: 800.0 for k in paths}, 300, 1)
    assert m["detectors"]["trained"]["mean_iou"] == pytest.approx(base.mean() + 0.1)
    diff = m["trained_vs_hand"]
    assert diff["iou_difference"] == pytest.approx(0.05) and diff["iou_difference_ci95"] == pytest.approx([0.05, 0.05])
    assert diff["significant"]


def test_small_walls_params_errors() -> None:
    with pytest.raises(ParamsError, match="studies.small_walls.passive_bs=5 exceeds studies.small_walls.n_train=4"):
        parse_params({"studies": {"small_walls": {"passive_bs": 5, "n_train": 4}}})
    with pytest.raises(ParamsError, match="studies.small_walls.hand_span"):
        parse_params({"studies": {"small_walls": {"hand_span": 0}}})


@pytest.mark.flow
@pytest.mark.slow
def test_small_walls_study_flow(prefect_harness: None, tmp_path: Path) -> None:
    from conftest import tiny_params

    from flows.paths import PipelinePaths
    from flows.pipeline import run_stage

    small = {"n_train": 2, "n_test": 3, "n_mu_per_volume": 200, "mu_bs": 200, "n_epochs": 1, "n_bootstrap": 100}
    p = parse_params(tiny_params(study="small_walls", studies={"small_walls": small}))
    out = run_stage("study", p, str(tmp_path))
    o = PipelinePaths.at(tmp_path).study_outputs
    m = json.loads(o["metrics"].read_text())
    assert out["study"] == "small_walls" and set(m["detectors"]) == {"trained", "start", "hand"}
    costs = {v["total_cost"] for v in m["detectors"].values()}
    assert max(costs) == pytest.approx(min(costs), rel=1e-5)
    assert all(0.0 <= v["mean_iou"] <= 1.0 for v in m["detectors"].values())
    assert {f.name for f in o["plots_dir"].glob("*.png")} >= {"iou.png", "layouts.png"}
