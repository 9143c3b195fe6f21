"""Optimise / evaluate stages: epoch tasks, checkpoint-resume equivalence, flows under the session's Prefect harness."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import PipelineRun, tiny_params

from flows.params import PipelineParams, parse_params
from flows.paths import PipelinePaths
from tasks.common import derive_seed
from tasks.detector import build_start_volume, make_wrapper, passive_layouts, yielder
from tasks.optimisation import (
    checkpoint_path,
    load_checkpoint,
    prepare_optimisation,
    run_epoch,
    run_fingerprint,
    train_seed,
)
from tasks.optimise_report import finalise_optimisation
from tomopt_lib.optimisation.callbacks import NoMoreNaNs


def _params(overrides: dict[str, Any] | None = None, **sections: Any) -> PipelineParams:
    """``tiny_params`` (conftest): 2 epochs of 2 training volumes (passive_bs 1) and 1 validation volume, 150 muons."""
    return parse_params(tiny_params(overrides, **sections))


def _cfgs(p: PipelineParams):
    return p.volume, p.passives, p.optimise


def _run_epochs(p: PipelineParams, ckpt: str, epochs) -> dict[str, Any]:
    vol, pas, opt = _cfgs(p)
    prep = prepare_optimisation.fn(ckpt, p.seed, vol, pas, opt)
    for e in epochs:
        run_epoch.fn(ckpt, e, vol, opt, prep["fingerprint"])
    return prep


@pytest.fixture(scope="module")
def two_epochs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """Checkpoints of epochs 1 and 2 (task functions, no engine) and the fresh ``prepare`` result; read-only, the
    tests that change the folder copy it."""
    ckpt = tmp_path_factory.mktemp("two_epochs") / "ckpt"
    return ckpt, _run_epochs(_params(), str(ckpt), [1, 2])


def test_epoch_tasks_and_finalise(two_epochs: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    p = _params()
    paths = PipelinePaths.at(tmp_path)
    ckpt, prep = two_epochs
    shutil.copytree(ckpt, paths.checkpoints)
    assert prep["last_epoch"] == 0
    assert sorted(f.name for f in paths.checkpoints.glob("epoch_*.pt")) == ["epoch_0000.pt", "epoch_0001.pt", "epoch_0002.pt"]
    vol, _, opt = _cfgs(p)
    out = {k: str(v) for k, v in paths.optimise_outputs.items()}
    res = finalise_optimisation.fn(str(paths.checkpoints), 2, prep["fingerprint"], vol, opt, out)
    for f in out.values():
        assert Path(f).is_file() and Path(f).stat().st_size > 0, f
    m = json.loads(Path(out["metrics"]).read_text())
    assert m == json.loads(json.dumps(res["metrics"])) and m["epochs"] == 2 and m["updates"]["applied"] == 4
    desc = json.loads(Path(out["detector_json"]).read_text())
    assert desc["n_panels"] == 8 and set(desc["panels"][0]) >= {"xy", "z", "span", "res", "eff", "cost"}
    # nothing that hashes code outside the stage's DVC deps (a fresh clone must reproduce the versioned bytes)
    assert prep["fingerprint"] not in Path(out["detector_json"]).read_text()
    loss = pd.read_csv(out["loss_csv"])
    assert list(loss.columns) == ["epoch", "train_loss", "valid_loss"] and list(loss["epoch"]) == [1, 2]
    assert set(pd.read_csv(out["panels_csv"])["epoch"]) == {0, 1, 2}
    assert not [f for f in paths.checkpoints.iterdir() if f.name.startswith(".")], "no temporary files left"


def test_checkpoint_resume_is_bitwise_identical_to_straight_run(two_epochs: tuple[Path, dict[str, Any]]) -> None:
    """Epoch 1, then epoch 2 resumed from the checkpoint in a fresh wrapper == one wrapper fitting 2 epochs in memory."""
    p = _params()
    ckpt = str(two_epochs[0])
    resumed = load_checkpoint(checkpoint_path(ckpt, 2))
    vol, pas, opt = _cfgs(p)
    vw = make_wrapper(build_start_volume(vol, opt.start, budget=opt.budget), opt, seed=derive_seed(train_seed(p.seed, opt), 3))
    trn, _ = passive_layouts(str(Path(ckpt) / "train_passives.h5"), vw.volume)
    val, _ = passive_layouts(str(Path(ckpt) / "val_passives.h5"), vw.volume)
    for _ in range(2):  # no checkpoint in between
        vw.fit(1, 1, 150, 150, yielder(trn, True), yielder(val, False), cbs=[NoMoreNaNs()])
    straight = vw.volume.state_dict()
    assert set(straight) == set(resumed["volume"])
    for k, v in straight.items():
        assert torch.equal(v, resumed["volume"][k]), k
    assert torch.equal(vw.generator.get_state(), resumed["generator"])


def test_prepare_resumes_ignores_broken_and_restarts_on_new_params(
    two_epochs: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    p = _params()
    ckpt = str(shutil.copytree(two_epochs[0], tmp_path / "ckpt"))
    vol, pas, opt = _cfgs(p)
    assert prepare_optimisation.fn(ckpt, p.seed, vol, pas, opt)["last_epoch"] == 2
    assert prepare_optimisation.fn(ckpt, p.seed, vol, pas, opt.model_copy(update={"n_epochs": 5}))["last_epoch"] == 2, (
        "n_epochs alone resumes"
    )
    data = checkpoint_path(ckpt, 2).read_bytes()
    checkpoint_path(ckpt, 2).write_bytes(data[: len(data) // 2])  # a truncated (killed) write
    assert prepare_optimisation.fn(ckpt, p.seed, vol, pas, opt)["last_epoch"] == 1
    with pytest.raises(ValueError, match="unreadable checkpoint"):
        load_checkpoint(checkpoint_path(ckpt, 2))
    other = opt.model_copy(update={"lr": opt.lr.model_copy(update={"xy": 0.05})})
    assert run_fingerprint(p.seed, vol, pas, other) != run_fingerprint(p.seed, vol, pas, opt)
    assert prepare_optimisation.fn(ckpt, p.seed, vol, pas, other)["last_epoch"] == 0
    assert not checkpoint_path(ckpt, 1).exists(), "checkpoints of other parameters are discarded"


@pytest.mark.flow
def test_optimise_and_evaluate_flows(tiny_pipeline: PipelineRun) -> None:
    """The shared pipeline's optimise (2 epochs straight) and evaluate (trained vs start vs reference) outputs."""
    b = tiny_pipeline.workdir
    paths = PipelinePaths.at(b)
    m_opt = tiny_pipeline.out["optimise"]
    assert m_opt["epochs"] == 2 and m_opt["updates"]["applied"] == 4
    assert json.loads(paths.optimise_outputs["metrics"].read_text()) == json.loads(json.dumps(m_opt))
    assert list(pd.read_csv(paths.optimise_outputs["loss_csv"])["epoch"]) == [1, 2]
    assert "Detector optimisation" in tiny_pipeline.artifacts["tomoflow-optimise"]

    ev = tiny_pipeline.out["evaluate"]
    out = paths.evaluate_outputs
    m = json.loads(out["metrics"].read_text())
    assert set(m["detectors"]) == {"trained", "start", "reference"} and m["n_volumes"] == 2
    assert "trained_vs_start" in m and "trained_vs_reference" in m and m["detectors"] == json.loads(json.dumps(ev["detectors"]))
    curve = pd.read_csv(out["curve_csv"])
    assert len(curve) == 2 and {"mse_log_x0_trained", "mse_log_x0_start", "mse_log_x0_reference"} <= set(curve.columns)
    assert np.isfinite(curve[["mse_log_x0_trained", "mse_log_x0_start", "mse_log_x0_reference"]].to_numpy()).all()
    assert sorted(f.name for f in out["plots_dir"].glob("pred_vs_true_*.png")) == [
        f"pred_vs_true_{n}_00.png" for n in ("reference", "start", "trained")
    ]
    assert tiny_pipeline.artifacts["tomoflow-evaluate"]


@pytest.mark.flow
@pytest.mark.slow
def test_optimise_flow_resumes_to_the_straight_run(prefect_harness: None, tiny_pipeline: PipelineRun, tmp_path: Path) -> None:
    """1 epoch, then the 2-epoch stage resumed from its checkpoint == the shared pipeline's straight 2 epochs."""
    from flows.pipeline import run_stage

    a, b = tmp_path / "a", tiny_pipeline.workdir
    m1 = run_stage("optimise", _params(optimise={"n_epochs": 1}), str(a))
    assert m1["epochs"] == 1
    ckpt1 = checkpoint_path(str(PipelinePaths.at(a).checkpoints), 1)
    stamp = ckpt1.stat().st_mtime_ns
    m2 = run_stage("optimise", _params(), str(a))  # resumes: runs epoch 2 only
    assert m2["epochs"] == 2
    assert ckpt1.stat().st_mtime_ns == stamp, "epoch 1 was not run again"
    sa = torch.load(a / "models" / "detector.pt", weights_only=True)["volume"]
    sb = torch.load(b / "models" / "detector.pt", weights_only=True)["volume"]
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    assert (a / "metrics" / "train_loss.csv").read_text() == (b / "metrics" / "train_loss.csv").read_text()
    m_a = json.loads(PipelinePaths.at(a).optimise_outputs["metrics"].read_text())
    m_b = json.loads(PipelinePaths.at(b).optimise_outputs["metrics"].read_text())
    assert m_a == m_b  # versioned metrics hold no wall-clock values
    for name in ("detector_pt", "metrics"):  # same content, same bytes (torch.save archive built in memory)
        assert PipelinePaths.at(a).optimise_outputs[name].read_bytes() == PipelinePaths.at(b).optimise_outputs[name].read_bytes()


def test_evaluate_without_trained_detector_fails_clearly(tmp_path: Path) -> None:
    from tasks.detector import load_detector

    vol = build_start_volume(_params().volume, _params().optimise.start)
    with pytest.raises(FileNotFoundError, match="run the optimise stage first"):
        load_detector(vol, str(tmp_path / "models" / "detector.pt"))
    (tmp_path / "bad.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="not a readable detector state file"):
        load_detector(vol, str(tmp_path / "bad.pt"))


def test_start_layout_is_deterministic_and_packed() -> None:
    p = _params(optimise={"start": {"panel_span": 0.5, "xy_offset": [0.7, -0.1], "z_gap": 0.01}})
    vol_cfg, start = p.volume, p.optimise.start
    a, b = build_start_volume(vol_cfg, start), build_start_volume(vol_cfg, start)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    for det in a.get_detectors():
        zs = sorted(float(q.z.detach()) for q in det.panels)
        assert all(abs((hi - lo) - 0.01) < 1e-6 for lo, hi in zip(zs, zs[1:]))
        assert float(det.z) - det.size < zs[0] and zs[-1] < float(det.z)
        for q in det.panels:
            assert q.xy.tolist() == pytest.approx([1.0, 0.4]) and q.xy_span.tolist() == pytest.approx([0.5, 0.5])
