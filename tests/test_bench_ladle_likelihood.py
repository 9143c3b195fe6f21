"""Likelihood fill-level inferrer of the ladle furnace and the ladle-furnace study tasks (seeded, small)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from config import LadleFurnaceStudy, ParamsError, parse_params
from tasks.study_ladle import compare_ladle, lr_factors, write_layouts
from tomopt_lib.benchmarks.ladle_furnace import LadleFurnacePassiveGenerator, get_baseline_detector_1
from tomopt_lib.benchmarks.ladle_furnace.likelihood import LikelihoodLadleFurnaceFillLevelInferrer, ladle_layouts
from tomopt_lib.inference import ScatterBatch
from tomopt_lib.io import read_passives
from tomopt_lib.muon import MuonBatch
from tomopt_lib.muon.generation import MuonGenerator2016
from tomopt_lib.volume import Volume


def test_layouts_match_the_generator_prior() -> None:
    fill, slag, log_prior = ladle_layouts(10, 2)
    assert sorted(set(fill.tolist())) == list(range(1, 9))
    assert bool((fill + slag <= 9).all()) and bool((slag >= 1).all())
    assert math.isclose(float(log_prior.exp().sum()), 1.0, rel_tol=1e-12)
    per_fill = torch.zeros(9, dtype=torch.float64).index_add(0, fill, log_prior.exp())
    assert torch.allclose(per_fill[1:], torch.full((8,), 1 / 8, dtype=torch.float64))  # fill heights uniform


def _infer(fill: float, n_mu: int, seed: int) -> LikelihoodLadleFurnaceFillLevelInferrer:
    torch.manual_seed(seed)
    vol = Volume(get_baseline_detector_1(energy_loss=True), budget=6.0)
    gen = LadleFurnacePassiveGenerator(vol, seed=seed)
    vol.load_rad_length(*gen.get_fixed_data(fill))
    mu = MuonBatch(MuonGenerator2016.from_volume(vol)(n_mu), init_z=vol.h)
    vol(mu)
    inf = LikelihoodLadleFurnaceFillLevelInferrer(vol)
    inf.add_scatters(ScatterBatch(mu, vol))
    return inf


@pytest.mark.parametrize(("fill", "seed"), [(0.7, 1), (1.1, 2)])
def test_posterior_finds_the_fill_height(fill: float, seed: int) -> None:
    """With 1000 muons the posterior puts most of its weight within one layer of the truth, and the posterior mean
    is within 7 cm (the measured test-set RMS error of this detector is ~3 cm)."""
    inf = _infer(fill, 1000, seed)
    post = inf.fill_posterior()
    opts = inf.fill_height_options
    assert math.isclose(float(post.detach().sum()), 1.0, rel_tol=1e-9)
    near = (opts - fill).abs() < 0.11
    assert float(post[near].detach().sum()) > 0.9
    assert abs(float(inf.get_prediction()) - fill) < 0.07
    assert 0 <= float(inf.get_uncertainty()) < 0.1
    assert inf.n_mu > 500


def test_prediction_gradients_reach_both_detector_groups() -> None:
    inf = _infer(0.9, 300, 3)
    pred = inf.get_prediction()
    pred.backward()
    for det in inf.volume.get_detectors():
        grads = [p.xy.grad for p in det.panels]
        assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads), det.pos
        assert any(float(g.abs().sum()) > 0 for g in grads), det.pos


def test_constructor_errors() -> None:
    vol = Volume(get_baseline_detector_1(), budget=6.0)
    with pytest.raises(ValueError, match="momentum 'true'"):
        LikelihoodLadleFurnaceFillLevelInferrer(vol, momentum="unknown")
    with pytest.raises(ValueError, match="temperature"):
        LikelihoodLadleFurnaceFillLevelInferrer(vol, temperature=0.0)


# ----------------------------------------------------------------------------------------------- study pieces
def test_rate_schedule() -> None:
    cfg = LadleFurnaceStudy(warmup_epochs=2, onecycle_epochs=4, z_only_epochs=2)
    f = [lr_factors(e, cfg) for e in range(1, cfg.n_epochs + 1)]
    assert [z for _, z in f] == [False] * 6 + [True] * 2
    assert f[0][0] < f[1][0] < f[2][0] == pytest.approx(1.0)  # ramp up, then the cycle starts at the peak
    cyc = [v for v, _ in f[2:6]]
    assert all(a > b for a, b in zip(cyc, cyc[1:])) and cyc[-1] > 0.05


def test_layouts_file(tmp_path: Path) -> None:
    cfg = LadleFurnaceStudy()
    n = write_layouts(str(tmp_path / "l.h5"), cfg, 2, seed=5)
    recs = read_passives(tmp_path / "l.h5")
    assert n == len(recs) == 16
    assert sorted({round(r.target, 3) for r in recs}) == [round(0.6 + 0.1 * i, 3) for i in range(8)]
    assert all(r.x0.shape == (10, 10, 10) for r in recs)
    write_layouts(str(tmp_path / "m.h5"), cfg, 2, seed=5)
    assert all(np.array_equal(a.x0, b.x0) for a, b in zip(recs, read_passives(tmp_path / "m.h5")))


def test_compare_debiases_out_of_sample(tmp_path: Path) -> None:
    """Predictions 2 h - 1 (a pure linear bias) are de-biased exactly by the fit on the training layouts; noisy ones
    are not, and the ratio interval brackets the true ratio."""
    rng = np.random.default_rng(0)
    h = np.repeat(np.round(0.6 + 0.1 * np.arange(8), 1), 12)
    paths = {}
    for name, noise in (("trained", 0.0), ("baseline_1", 0.03)):
        rows = []
        for part in ("train", "test"):
            pred = 2 * h - 1 + rng.normal(0, noise, len(h))
            rows += [
                {"set": part, "volume": i, "pred": p, "gen_target": t, "unc": noise or np.nan}
                for i, (p, t) in enumerate(zip(pred, h))
            ]
        paths[name] = str(tmp_path / f"{name}.csv")
        pd.DataFrame(rows).to_csv(paths[name], index=False)
    m = compare_ladle.fn(paths, {"trained": 6.0, "baseline_1": 6.0}, 500, 0, str(tmp_path / "pv.csv"))
    assert m["detectors"]["trained"]["mse"] == pytest.approx(0.0, abs=1e-20)
    assert m["detectors"]["baseline_1"]["mse"] == pytest.approx((0.03 / 2) ** 2, rel=0.35)
    assert m["detectors"]["baseline_1"]["mse_raw"] > 0.01  # the bias is large before de-biasing
    assert m["trained_vs_baseline_1"]["significant"] and m["trained_vs_baseline_1"]["mse_ratio_ci95"][1] < 1e-6
    assert len(pd.read_csv(tmp_path / "pv.csv")) == 96


def test_study_params_errors() -> None:
    with pytest.raises(ParamsError, match="study = 'u_lorryx'"):
        parse_params({"study": "u_lorryx"})
    with pytest.raises(ParamsError, match="studies.ladle_furnace.passive_bs=100"):
        parse_params({"studies": {"ladle_furnace": {"passive_bs": 100}}})
    with pytest.raises(ParamsError, match="studies.ladle_furnace.n_mu_per_volume"):
        parse_params({"studies": {"ladle_furnace": {"n_mu_per_volume": 0}}})


# ----------------------------------------------------------------------------------------------- tiny end to end
@pytest.mark.flow
@pytest.mark.slow
def test_ladle_study_flow_end_to_end_and_resume(prefect_harness: None, tmp_path: Path) -> None:
    """study=ladle_furnace through the stage's flow (8 + 8 layouts, 150 muons, 2 epochs): detector, metrics for the
    four detectors, plots; a rerun resumes after the last checkpointed epoch."""
    from conftest import tiny_params

    from flows.paths import PipelinePaths
    from flows.pipeline import run_stage
    from tasks.optimisation import checkpoint_path

    small = {
        "n_train_per_height": 1,
        "n_test_per_height": 1,
        "n_mu_per_volume": 150,
        "mu_bs": 150,
        "passive_bs": 4,
        "warmup_epochs": 0,
        "onecycle_epochs": 1,
        "z_only_epochs": 1,
        "n_bootstrap": 100,
    }
    p = parse_params(tiny_params(study="ladle_furnace", studies={"ladle_furnace": small}))
    out = run_stage("study", p, str(tmp_path))
    paths = PipelinePaths.at(tmp_path)
    o = paths.study_outputs
    assert out["study"] == "ladle_furnace" and set(out) >= {"mse_trained", "mse_baseline_1", "ratio_vs_bl1"}
    import json

    m = json.loads(o["metrics"].read_text())
    assert set(m["detectors"]) == {"trained", "initial", "baseline_1", "baseline_2"}
    assert all(d["total_cost"] == pytest.approx(6.0, rel=1e-4) for d in m["detectors"].values())
    assert m["n_test"] == 8 and len(m["training"]["history"]) == 2 and m["training"]["history"][1]["z_only"]
    assert {f.name for f in o["plots_dir"].glob("*.png")} >= {"baselines.png", "layouts.png", "mse.png"}
    assert o["detector_pt"].is_file()
    from tasks.study_ladle import prepare_ladle

    ckpt_dir = str(paths.study_checkpoints / "ladle_furnace")
    stamp = checkpoint_path(ckpt_dir, 2).stat().st_mtime_ns
    prep = prepare_ladle.fn(ckpt_dir, str(o["data_dir"]), p.seed, p.studies.ladle_furnace)  # what a rerun starts with
    assert prep["last_epoch"] == 2 and checkpoint_path(ckpt_dir, 2).stat().st_mtime_ns == stamp


def test_fill_layer_probabilities_and_int_class_loss() -> None:
    """``output_probs``: the (1, 8) fill-layer posterior, whose LadleFurnaceIntClassLoss (pred_int_start=1) is the
    normalised expected squared layer error; its gradient reaches the detector."""
    from tomopt_lib.benchmarks.ladle_furnace import LadleFurnaceIntClassLoss

    inf = _infer(0.8, 300, 4)
    probs_inf = LikelihoodLadleFurnaceFillLevelInferrer(inf.volume, output_probs=True, temperature=4.0)
    for sb in inf.scatter_batches:
        probs_inf.add_scatters(sb)
    probs = probs_inf.get_prediction()
    assert probs.shape == (1, 8) and float(probs.detach().sum()) == pytest.approx(1.0, rel=1e-5)
    assert float(probs_inf.pred_height) == pytest.approx(
        float((probs.detach()[0].double() * probs_inf.fill_height_options).sum()), abs=1e-5
    )
    inf.volume.load_rad_length(*LadleFurnacePassiveGenerator(inf.volume, seed=4).get_fixed_data(0.8))
    loss = LadleFurnaceIntClassLoss(pred_int_start=1, use_mse=True, target_budget=None)(probs, inf.volume)
    k = torch.arange(1, 9, dtype=torch.float64)
    err = (k - 3) ** 2  # 0.8 m: liquid in layers 1-3 above the floor (layer 0), k = 3
    expected = float((probs.detach()[0].double() * err).sum() / err.sum())
    assert float(loss) == pytest.approx(expected, rel=1e-4)
    loss.backward()
    assert any(p.xy.grad is not None and float(p.xy.grad.abs().sum()) > 0 for p in inf.volume.get_detectors()[0].panels)


def test_study_names_agree_everywhere() -> None:
    """The `study` literal, config.STUDY_NAMES, the flow's runners, the sections of `studies` and params.yaml agree."""
    import typing

    import yaml

    from config import STUDY_NAMES, PipelineParams, StudiesParams
    from flows.stages import ROOT
    from flows.study import _RUNNERS

    assert typing.get_args(PipelineParams.model_fields["study"].annotation) == STUDY_NAMES
    assert {"default", *_RUNNERS} == set(STUDY_NAMES)
    assert set(StudiesParams.model_fields) == set(_RUNNERS)
    assert set(yaml.safe_load((ROOT / "params.yaml").read_text())["studies"]) == set(_RUNNERS)
