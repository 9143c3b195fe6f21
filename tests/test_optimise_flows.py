"""Optimise / evaluate stages: epoch tasks, checkpoint-resume equivalence, flows under the session's Prefect harness."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict

import pandas as pd
import pytest
import torch

from flows.params import PipelineParams, parse_params
from flows.paths import PipelinePaths
from tasks.detector import build_start_volume, make_wrapper, passive_layouts, yielder
from tasks.optimisation import (
    checkpoint_path, load_checkpoint, prepare_optimisation, run_epoch, run_fingerprint, train_seed,
)
from tasks.common import derive_seed
from tasks.optimise_report import finalise_optimisation
from tomopt_lib.optimisation.callbacks import NoMoreNaNs

TINY: Dict[str, Any] = {
    "passives": {"n_volumes": 2, "materials": ["beryllium", "lead"]},
    "optimise": {"n_epochs": 2, "n_volumes": 2, "n_val_volumes": 1, "passive_bs": 1, "n_mu_per_volume": 150, "mu_bs": 150},
    "evaluate": {"n_volumes": 2, "n_mu_per_volume": 150, "mu_bs": 150, "n_images": 1},
}


def _params(**overrides: Dict[str, Any]) -> PipelineParams:
    data = {k: dict(v) for k, v in TINY.items()}
    for section, vals in overrides.items():
        data.setdefault(section, {}).update(vals)
    return parse_params(data)


def _cfgs(p: PipelineParams):
    return p.volume.model_dump(), p.passives.model_dump(), p.optimise.model_dump()


def _run_epochs(p: PipelineParams, ckpt: str, epochs) -> Dict[str, Any]:
    vol, pas, opt = _cfgs(p)
    prep = prepare_optimisation.fn(ckpt, p.seed, vol, pas, opt)
    for e in epochs:
        run_epoch.fn(ckpt, e, vol, opt, prep["fingerprint"])
    return prep


def test_epoch_tasks_and_finalise(tmp_path: Path) -> None:
    p = _params()
    paths = PipelinePaths.at(tmp_path)
    prep = _run_epochs(p, str(paths.checkpoints), [1, 2])
    assert prep["last_epoch"] == 0
    vol, _, opt = _cfgs(p)
    out = {k: str(v) for k, v in paths.optimise_outputs.items()}
    res = finalise_optimisation.fn(str(paths.checkpoints), 2, prep["fingerprint"], vol, opt, out)
    for f in out.values():
        assert Path(f).is_file() and Path(f).stat().st_size > 0, f
    m = json.loads(Path(out["metrics"]).read_text())
    assert m == json.loads(json.dumps(res["metrics"])) and m["epochs"] == 2 and m["updates"]["applied"] == 4
    desc = json.loads(Path(out["detector_json"]).read_text())
    assert desc["n_panels"] == 8 and set(desc["panels"][0]) >= {"xy", "z", "span", "res", "eff", "cost"}
    loss = pd.read_csv(out["loss_csv"])
    assert list(loss.columns) == ["epoch", "train_loss", "valid_loss"] and list(loss["epoch"]) == [1, 2]
    assert set(pd.read_csv(out["panels_csv"])["epoch"]) == {0, 1, 2}
    assert not [f for f in paths.checkpoints.iterdir() if f.name.startswith(".")], "no temporary files left"


def test_checkpoint_resume_is_bitwise_identical_to_straight_run(tmp_path: Path) -> None:
    """Epoch 1, then epoch 2 resumed from the checkpoint in a fresh wrapper == one wrapper fitting 2 epochs in memory."""
    p = _params()
    ckpt = str(tmp_path / "ckpt")
    _run_epochs(p, ckpt, [1, 2])
    resumed = load_checkpoint(checkpoint_path(ckpt, 2))
    vol, pas, opt = _cfgs(p)
    vw = make_wrapper(build_start_volume(vol, opt["start"]), opt, seed=derive_seed(train_seed(p.seed, opt), 3))
    trn, _ = passive_layouts(str(Path(ckpt) / "train_passives.h5"), vw.volume)
    val, _ = passive_layouts(str(Path(ckpt) / "val_passives.h5"), vw.volume)
    for _ in range(2):  # no checkpoint in between
        vw.fit(1, 1, 150, 150, yielder(trn, True), yielder(val, False), cbs=[NoMoreNaNs()])
    straight = vw.volume.state_dict()
    assert set(straight) == set(resumed["volume"])
    for k, v in straight.items():
        assert torch.equal(v, resumed["volume"][k]), k
    assert torch.equal(vw.generator.get_state(), resumed["generator"])


def test_prepare_resumes_ignores_broken_and_restarts_on_new_params(tmp_path: Path) -> None:
    p = _params()
    ckpt = str(tmp_path / "ckpt")
    _run_epochs(p, ckpt, [1, 2])
    vol, pas, opt = _cfgs(p)
    assert prepare_optimisation.fn(ckpt, p.seed, vol, pas, opt)["last_epoch"] == 2
    assert prepare_optimisation.fn(ckpt, p.seed, vol, pas, {**opt, "n_epochs": 5})["last_epoch"] == 2, "n_epochs alone resumes"
    data = checkpoint_path(ckpt, 2).read_bytes()
    checkpoint_path(ckpt, 2).write_bytes(data[: len(data) // 2])  # a truncated (killed) write
    assert prepare_optimisation.fn(ckpt, p.seed, vol, pas, opt)["last_epoch"] == 1
    with pytest.raises(ValueError, match="unreadable checkpoint"):
        load_checkpoint(checkpoint_path(ckpt, 2))
    other = {**opt, "lr": {**opt["lr"], "xy": 0.05}}
    assert run_fingerprint(p.seed, vol, pas, other) != run_fingerprint(p.seed, vol, pas, opt)
    assert prepare_optimisation.fn(ckpt, p.seed, vol, pas, other)["last_epoch"] == 0
    assert not checkpoint_path(ckpt, 1).exists(), "checkpoints of other parameters are discarded"


@pytest.mark.flow
def test_optimise_and_evaluate_flows(prefect_harness: None, tmp_path: Path) -> None:
    from prefect.artifacts import Artifact

    from flows.pipeline import run_stage

    p1 = _params(optimise={"n_epochs": 1})
    a, b = tmp_path / "a", tmp_path / "b"
    m1 = run_stage("optimise", p1, str(a))
    assert m1["epochs"] == 1
    m2 = run_stage("optimise", _params(), str(a))  # resumes: runs epoch 2 only
    assert m2["epochs"] == 2
    run_stage("optimise", _params(), str(b))  # straight 2 epochs
    sa = torch.load(a / "models" / "detector.pt", weights_only=True)["volume"]
    sb = torch.load(b / "models" / "detector.pt", weights_only=True)["volume"]
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert (a / "metrics" / "train_loss.csv").read_text() == (b / "metrics" / "train_loss.csv").read_text()
    art = Artifact.get("tomoflow-optimise")
    assert art is not None and "Detector optimisation" in art.data

    ev = run_stage("evaluate", _params(), str(b))
    paths = PipelinePaths.at(b)
    out = paths.evaluate_outputs
    m = json.loads(out["metrics"].read_text())
    assert set(m["detectors"]) == {"trained", "start", "reference"} and m["n_volumes"] == 2
    assert "trained_vs_start" in m and "trained_vs_reference" in m and m["detectors"] == json.loads(json.dumps(ev["detectors"]))
    curve = pd.read_csv(out["curve_csv"])
    assert len(curve) == 2 and {"mse_log_x0_trained", "mse_log_x0_start", "mse_log_x0_reference"} <= set(curve.columns)
    assert len(list(out["plots_dir"].glob("pred_vs_true_*.png"))) == 3
    assert Artifact.get("tomoflow-evaluate") is not None


def test_evaluate_without_trained_detector_fails_clearly(tmp_path: Path) -> None:
    from tasks.detector import load_detector

    vol = build_start_volume(_params().volume.model_dump(), _params().optimise.start.model_dump())
    with pytest.raises(FileNotFoundError, match="run the optimise stage first"):
        load_detector(vol, str(tmp_path / "models" / "detector.pt"))
    (tmp_path / "bad.pt").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="not a readable detector state file"):
        load_detector(vol, str(tmp_path / "bad.pt"))


def test_start_layout_is_deterministic_and_packed() -> None:
    p = _params(optimise={"start": {"panel_span": 0.5, "xy_offset": [0.7, -0.1], "z_gap": 0.01}})
    vol_cfg, start = p.volume.model_dump(), p.optimise.start.model_dump()
    a, b = build_start_volume(vol_cfg, start), build_start_volume(vol_cfg, start)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    for det in a.get_detectors():
        zs = sorted(float(q.z.detach()) for q in det.panels)
        assert all(abs((hi - lo) - 0.01) < 1e-6 for lo, hi in zip(zs, zs[1:]))
        assert float(det.z) - det.size < zs[0] and zs[-1] < float(det.z)
        for q in det.panels:
            assert q.xy.tolist() == pytest.approx([1.0, 0.4]) and q.xy_span.tolist() == pytest.approx([0.5, 0.5])
