"""U-lorry study: ROC AUC, the comparison task, parameters and a tiny run of the study stage."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from config import ParamsError, parse_params
from tasks.study_u_lorry import compare_u_lorry, u_lorry_rate
from tomopt_lib.metrics import roc_auc


def _auc_brute(s: np.ndarray, y: np.ndarray) -> float:
    pos, neg = s[y == 1], s[y == 0]
    pairs = list(itertools.product(pos, neg))
    return sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in pairs) / len(pairs)


def test_roc_auc_matches_pair_counting() -> None:
    rng = np.random.default_rng(1)
    for _ in range(5):
        y = rng.integers(0, 2, 30)
        s = np.round(rng.normal(size=30) + y, 1)  # rounding makes ties
        assert roc_auc(s, y) == pytest.approx(_auc_brute(s, y), abs=1e-12)
    assert roc_auc(np.array([0.1, 0.9]), np.array([0, 1])) == 1.0
    assert roc_auc(np.array([0.9, 0.1]), np.array([0, 1])) == 0.0
    assert np.isnan(roc_auc(np.array([0.1, 0.2]), np.array([1, 1])))


def test_compare_u_lorry_intervals(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    y = rng.integers(0, 2, 200).astype(float)
    paths = {}
    for name, sep in (("trained", 3.0), ("start", 0.0), ("reference", 1.0)):
        paths[name] = str(tmp_path / f"{name}.csv")
        pd.DataFrame({"volume": range(200), "score": rng.normal(size=200) + sep * y, "target": y}).to_csv(
            paths[name], index=False
        )
    m = compare_u_lorry.fn(paths, {"trained": 4.0, "start": 4.0, "reference": 4.0}, 300, 0)
    d = m["detectors"]
    assert d["trained"]["auc"] > 0.95 and 0.35 < d["start"]["auc"] < 0.65
    for v in d.values():
        assert v["auc_ci95"][0] <= v["auc"] <= v["auc_ci95"][1]
    assert m["trained_vs_reference"]["significant"] and m["trained_vs_reference"]["auc_difference_ci95"][0] > 0
    assert m["n_test"] == 200 and m["n_with_block"] == int(y.sum())


def test_rate_decays() -> None:
    cfg = parse_params({}).studies.u_lorry
    rates = [u_lorry_rate(e, cfg) for e in range(1, cfg.n_epochs + 1)]
    assert rates[0] == pytest.approx(1.0) and all(a > b for a, b in zip(rates, rates[1:])) and rates[-1] > 0.05
    assert all(isinstance(r, float) for r in rates)  # stored in optimiser states: plain floats only


def test_u_lorry_params_errors() -> None:
    with pytest.raises(ParamsError, match=r"studies.u_lorry.u_volume=0.0025 m\^3 must be a whole number"):
        parse_params({"study": "u_lorry", "studies": {"u_lorry": {"u_volume": 0.0025}}})
    parse_params({"studies": {"u_lorry": {"u_volume": 0.0025}}})  # not selected: not checked against the geometry
    with pytest.raises(ParamsError, match="studies.u_lorry.passive_bs=9 exceeds studies.u_lorry.n_train=8"):
        parse_params({"studies": {"u_lorry": {"passive_bs": 9, "n_train": 8}}})
    with pytest.raises(ParamsError, match="studies.u_lorry.u_prob"):
        parse_params({"studies": {"u_lorry": {"u_prob": 1.0}}})


@pytest.mark.flow
@pytest.mark.slow
def test_u_lorry_study_flow(prefect_harness: None, tmp_path: Path) -> None:
    from conftest import tiny_params

    from flows.paths import PipelinePaths
    from flows.pipeline import run_stage

    small = {"n_train": 4, "n_test": 8, "n_mu_per_volume": 150, "mu_bs": 150, "n_epochs": 1, "n_bootstrap": 100}
    p = parse_params(tiny_params(study="u_lorry", studies={"u_lorry": small}))
    out = run_stage("study", p, str(tmp_path))
    o = PipelinePaths.at(tmp_path).study_outputs
    m = json.loads(o["metrics"].read_text())
    assert out["study"] == "u_lorry" and set(m["detectors"]) == {"trained", "start", "reference"}
    assert all(v["total_cost"] == pytest.approx(4.0, rel=1e-4) for v in m["detectors"].values())
    assert {f.name for f in o["plots_dir"].glob("*.png")} >= {"roc.png", "auc.png", "layouts.png"}
    assert len(pd.read_csv(Path(o["data_dir"]) / "pred_trained.csv")) == 8


def test_block_log_statistic() -> None:
    """``statistic="block_log"``: r = -(mean ln X0 of the k lowest voxels), independent of the background mixture."""
    import torch

    from tomopt_lib.inference import DenseBlockClassifierFromX0s
    from tomopt_lib.volume.builders import build_panel_volume

    vol = build_panel_volume()

    def score(cube: torch.Tensor, **kw: object) -> float:
        clf = DenseBlockClassifierFromX0s(4, "poca", vol, use_avgpool=False, ratio_offset=0.0, ratio_coef=1.0, **kw)
        clf.x0_inferrer.get_prediction = lambda: cube  # type: ignore[method-assign]
        return float(clf.get_prediction().reshape(()))

    iron = torch.full((6, 10, 10), 0.0176)
    airy = iron.clone()
    airy[3:] = 300.0  # half the cargo air: the background changes, the densest voxels do not
    with_u = iron.clone()
    with_u[1, 2:4, 2:4] = 0.0032
    expected = float(torch.sigmoid(torch.tensor(-float(torch.log(torch.tensor(0.0176))))))
    assert score(iron, statistic="block_log") == pytest.approx(expected, rel=1e-4)
    assert score(airy, statistic="block_log") == pytest.approx(expected, rel=1e-4)
    assert score(with_u, statistic="block_log") > score(iron, statistic="block_log")
    with pytest.raises(ValueError, match="statistic"):
        DenseBlockClassifierFromX0s(4, "poca", vol, statistic="max")
