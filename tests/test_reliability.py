"""Shared work folders are locked; a new optimisation never discards the previous run's trained epochs early."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import Cli, tiny_params

from config import PipelineParams, parse_params
from tasks.caching import StageBusyError, hold_lock, locked_stage_workdir
from tasks.optimisation import checkpoint_path, prepare_optimisation, previous_dir, run_epoch


def test_second_run_of_a_stage_gets_a_clear_error(tmp_path: Path) -> None:
    with locked_stage_workdir(tmp_path, "irradiate") as work:
        (work / "chunk.h5").write_text("mine")
        with pytest.raises(StageBusyError, match="another run holds the work folder of stage 'irradiate'"):
            with locked_stage_workdir(tmp_path, "irradiate"):
                pass
        assert (work / "chunk.h5").read_text() == "mine", "the refused run touched nothing"
        with locked_stage_workdir(tmp_path, "reconstruct"):  # other stages are independent
            pass
    with locked_stage_workdir(tmp_path, "irradiate"):  # released at the end of the block
        pass


def test_lock_is_released_when_the_holder_fails(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="boom"):
        with hold_lock(tmp_path / "x.lock", "x"):
            raise RuntimeError("boom")
    with hold_lock(tmp_path / "x.lock", "x"):
        pass


def _params(lr_xy: float) -> PipelineParams:
    """``tiny_params`` (conftest), trained for one epoch on one volume of 100 muons with this xy learning rate."""
    optimise = {"n_epochs": 1, "n_volumes": 1, "n_val_volumes": 0, "passive_bs": 1, "n_mu_per_volume": 100, "mu_bs": 100}
    return parse_params(tiny_params({"optimise.lr.xy": lr_xy}, optimise=optimise))


def _prepare(p: PipelineParams, ckpt: Path) -> dict:
    return prepare_optimisation.fn(str(ckpt), p.seed, p.volume, p.passives, p.optimise)


def test_previous_checkpoints_survive_until_the_new_run_trains(tmp_path: Path) -> None:
    ckpt = tmp_path / "checkpoints"
    a, b = _params(0.005), _params(0.05)
    prep_a = _prepare(a, ckpt)
    run_epoch.fn(str(ckpt), 1, a.volume, a.optimise, prep_a["fingerprint"])
    trained_a = checkpoint_path(str(ckpt), 1).read_bytes()

    prep_b = _prepare(b, ckpt)  # new parameters: A is set aside, not deleted
    assert prep_b["last_epoch"] == 0 and checkpoint_path(str(previous_dir(ckpt)), 1).read_bytes() == trained_a
    # run B dies here (before its first epoch); rerunning A gets A's trained epoch back
    assert _prepare(a, ckpt)["last_epoch"] == 1 and checkpoint_path(str(ckpt), 1).read_bytes() == trained_a
    assert not previous_dir(ckpt).exists(), "B had no trained epoch: nothing to keep"

    prep_b = _prepare(b, ckpt)
    run_epoch.fn(str(ckpt), 1, b.volume, b.optimise, prep_b["fingerprint"])  # B's first epoch: A may go now
    assert not previous_dir(ckpt).exists()
    assert checkpoint_path(str(ckpt), 1).read_bytes() != trained_a


@pytest.mark.parametrize(
    "data, expected",
    [
        ({"volume": {"voxel_size": float("nan")}}, "volume.voxel_size = nan: must be finite"),
        ({"volume": {"lw": [float("inf"), 1.0]}}, "volume.lw.0 = inf: must be finite"),
        ({"lumi_scan": {"rel_noise": float("nan")}}, "lumi_scan.rel_noise = nan: must be finite"),
        (
            {"runtime": {"task_runner": "dask_address", "dask_address": "localhost"}},
            "runtime.dask_address = 'localhost': must have the form tcp://host:port",
        ),
        ({"runtime": {"task_runner": "dask_address", "dask_address": "tcp://h:86:1"}}, "must have the form tcp://host:port"),
    ],
)
def test_bad_numbers_and_addresses_are_named(data: dict, expected: str) -> None:
    from config import ParamsError

    with pytest.raises(ParamsError) as err:
        parse_params(data)
    assert expected in str(err.value) and "should be" not in str(err.value).split(expected)[1].split("\n")[0]


def test_unreachable_dask_scheduler_is_refused_before_any_work(tmp_path: Path, cli: Cli) -> None:
    import socket

    with socket.socket() as s:  # a free port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    (tmp_path / "params.yaml").write_text(f"runtime: {{task_runner: dask_address, dask_address: 'tcp://127.0.0.1:{port}'}}\n")
    rc, err = cli("generate_passives", "--workdir", str(tmp_path))
    assert rc == 2, err
    assert "runtime.dask_address" in err and "no Dask scheduler reachable" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"], "nothing written"


def test_inversion_of_zero_rows_says_what_is_wrong() -> None:
    import torch

    from lumi_lib import invert, preset_design
    from lumi_lib.inversion import invert_measured

    design = preset_design("xy_2ip")
    with pytest.raises(ValueError, match="true_eps: no rows to invert"):
        invert("xy", torch.zeros(0, 2, dtype=torch.float64), design=design)
    with pytest.raises(ValueError, match="measured: no rows to invert"):
        invert_measured("xy", torch.zeros(0, design.n_configs, dtype=torch.float64), design=design)


def test_make_run_validates_before_dvc() -> None:
    """DVC deletes a stage's outputs before running it: `make run` and `make lumi` go through ``flows.repro``, which
    validates before ``dvc repro`` (below, and tests/test_server.py); no recipe calls ``dvc repro`` itself."""
    root = Path(__file__).resolve().parents[1]
    text = (root / "Makefile").read_text()
    for target in ("run", "lumi"):
        recipe = text.split(f"\n{target}: ", 1)[1].split("\n\n", 1)[0]
        cmds = [line.strip() for line in recipe.splitlines()[1:]]
        assert any("-m flows.repro" in c for c in cmds), (target, cmds)
        assert not any("dvc repro" in c.split("#")[0] for c in cmds), (target, cmds)


@pytest.mark.slow
@pytest.mark.parametrize("text", ["", "seed: -5\n"])
def test_repro_with_bad_params_leaves_outputs_untouched(tmp_path: Path, text: str) -> None:
    """The README's `make run` path end to end in a scratch DVC project with this repository's dvc.yaml and stand-in
    outputs: a bad params.yaml makes every stage stale, ``python -m flows.repro`` refuses it (exit 2, the key named)
    and DVC never runs: every output file keeps its bytes."""
    import shutil
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    shutil.copy(root / "dvc.yaml", tmp_path / "dvc.yaml")
    subprocess.run([str(Path(sys.executable).parent / "dvc"), "init", "--no-scm", "-q"], cwd=tmp_path, check=True)
    (tmp_path / "params.yaml").write_text(text)
    outputs = {}
    for rel in ("data/passives.h5", "data/irradiated.h5", "metrics/report.json", "plots/angle_hist.png", "models/detector.pt"):
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(rel.encode() * 3)
        outputs[rel] = p.read_bytes()
    proc = subprocess.run(
        [sys.executable, "-m", "flows.repro"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(root), "DVC_NO_ANALYTICS": "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "error: " in proc.stderr and "Running stage" not in proc.stdout + proc.stderr, proc.stderr[-2000:]
    assert {rel: (tmp_path / rel).read_bytes() for rel in outputs} == outputs


@pytest.mark.parametrize(
    "text",
    [
        "seed: -5\n",
        "irradiate: {chunk_size: 0}\n",
        "report: {max_angle: -0.1}\n",
        "volume: {lw: [1, .inf]}\n",
        "optimise: {start: {xy_offset: [.nan, 0]}}\n",
        "seed: 1\nseed: 2\n",
        "volume: {step_sz: 0.5}\n",
        "[1, 2]\n",
    ],
)
def test_check_refuses_bad_params_and_writes_nothing(tmp_path: Path, text: str, cli: Cli) -> None:
    (tmp_path / "params.yaml").write_text(text)
    # in this process (flows.__main__.main); the real `python -m flows` process and its exit status 2 are checked by
    # test_params.py::test_cli_process_exits_2_without_touching_outputs
    rc, err = cli("check", "--workdir", str(tmp_path))  # an unexpected exception would fail the test right here
    assert rc == 2 and err.startswith("error: ") and "Traceback" not in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def test_malicious_checkpoint_is_refused_and_never_runs(tmp_path: Path) -> None:
    import torch

    from tasks.optimisation import load_checkpoint
    from tomopt_lib.optimisation.wrapper import PanelVolumeWrapper
    from tomopt_lib.volume.builders import build_panel_volume

    marker = tmp_path / "pwned"

    class Boom:
        def __reduce__(self):
            return (marker.write_text, ("payload ran",))

    bad = tmp_path / "epoch_0001.pt"
    torch.save({"schema_version": 1, "volume": {}, "x": Boom()}, str(bad))
    with pytest.raises(ValueError, match="unreadable checkpoint"):
        load_checkpoint(bad)
    vw = PanelVolumeWrapper(build_panel_volume(), xy_pos_opt=None, z_pos_opt=None, xy_span_opt=None)
    with pytest.raises(ValueError, match="can load safely"):
        vw.load(bad)
    assert not marker.exists()


def test_atomic_write_removes_temporaries_of_killed_writers(tmp_path: Path) -> None:
    from tomopt_lib.io import atomic_path

    stale = [tmp_path / ".out.h5.k1ll3d.tmp", tmp_path / ".out.h5.zzz.tmp"]
    other = tmp_path / ".other.h5.k1ll3d.tmp"
    for f in (*stale, other):
        f.write_text("half-written")
    with atomic_path(tmp_path / "out.h5") as tmp:
        tmp.write_text("complete")
    assert (tmp_path / "out.h5").read_text() == "complete"
    assert not any(f.exists() for f in stale) and other.exists(), "only this file's leftovers go"
