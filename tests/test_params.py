"""Parameter validation: one clear message naming the key path and the allowed values; CLI exit status 2."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import Cli

from flows.params import ParamsError, PipelineParams, load_params, parse_params

ROOT = Path(__file__).resolve().parents[1]


def _err(data: dict[str, Any]) -> str:
    with pytest.raises(ParamsError) as exc:
        parse_params(data)
    return str(exc.value)


def test_repo_params_yaml_is_valid_and_complete() -> None:
    p = load_params(ROOT / "params.yaml")
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())

    def keys(model: Any, prefix: str = "") -> set:
        out = set()
        for name, _field in type(model).model_fields.items():
            val = getattr(model, name)
            out |= keys(val, f"{prefix}{name}.") if hasattr(type(val), "model_fields") else {f"{prefix}{name}"}
        return out

    def yaml_keys(d: dict[str, Any], prefix: str = "") -> set:
        out = set()
        for k, v in d.items():
            out |= yaml_keys(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}"}
        return out

    assert keys(p) == yaml_keys(raw), "params.yaml must list every tunable value"
    assert p == PipelineParams(), "code defaults and params.yaml agree"


def test_defaults_are_valid() -> None:
    assert isinstance(parse_params({}), PipelineParams)
    assert parse_params(None).seed == parse_params({}).seed


@pytest.mark.parametrize(
    "data, path, expected",
    [
        ({"volume": {"voxel_size": -0.1}}, "volume.voxel_size = -0.1", "> 0"),  # out of range
        ({"irradiate": {"chunk_size": 0}}, "irradiate.chunk_size = 0", ">= 1 and <= 1000000"),  # out of range
        ({"volume": {"res": "high"}}, "volume.res = 'high'", "a number > 0"),  # wrong type
        ({"seed": True}, "seed = True", "an integer >= 0"),  # bool is not an int
        ({"volume": {"n_panels_above": 2.5}}, "volume.n_panels_above = 2.5", "an integer >= 2 and <= 16"),  # float for int
        ({"runtime": {"device": "gpu"}}, "runtime.device = 'gpu'", "one of 'cpu', 'auto', 'cuda'"),  # bad choice
        ({"irradiate": {"flux_model": 2016}}, "irradiate.flux_model = 2016", "one of '2015', '2016'"),  # int for string
        ({"volume": {"lw": [1.0]}}, "volume.lw = [1.0]", "a list of 2 items"),  # wrong length
        ({"volume": {"lw": [1.0, -1.0]}}, "volume.lw.1 = -1.0", "a number > 0"),  # bad list item
        ({"irradiate": {"fixed_mom": 0.0}}, "irradiate.fixed_mom = 0.0", "a number > 0 and <= 10000 or null"),  # optional
        ({"report": {"max_angle": 5}}, "report.max_angle = 5", "<= 3.1416"),
    ],
)
def test_bad_values_name_key_and_range(data: dict[str, Any], path: str, expected: str) -> None:
    msg = _err(data)
    assert "1 problem" in msg
    line = re.search(rf"^  {re.escape(path)}: .*\(allowed: ([^\n]*)\)$", msg, re.MULTILINE)
    assert line, msg  # the key path, the value and the allowed range on one line
    assert expected in line.group(1), msg  # ... and the range is the documented one


def test_unknown_keys_list_allowed_keys() -> None:
    msg = _err({"volume": {"voxelsize": 0.1}})
    assert "volume.voxelsize: unknown key" in msg and "allowed keys: lw, voxel_size" in msg
    msg = _err({"irradation": {}})
    assert "irradation: unknown key" in msg and "irradiate" in msg


def test_custom_validators_name_key() -> None:
    msg = _err({"passives": {"materials": ["lead", "unobtainium"]}})
    assert "passives.materials" in msg and "unobtainium" in msg and "'beryllium'" in msg
    assert "volume.lw.0=1.05" in _err({"volume": {"lw": [1.05, 1.0]}})
    msg = _err({"passives": {"block_size": [0.4, 0.4, 2.0]}})
    assert "passives.block_size.2=2.0 exceeds the passive extent 0.6 m" in msg


def test_several_problems_in_one_message() -> None:
    msg = _err({"seed": -1, "volume": {"eff": 1.5}, "extra": 1})
    assert "3 problems" in msg
    for part in ("seed = -1", "volume.eff = 1.5", "extra: unknown key"):
        assert part in msg


def test_top_level_must_be_mapping() -> None:
    assert "top level must be a mapping" in _err([1, 2])  # type: ignore[arg-type]


def test_yaml_exponent_floats(tmp_path: Path) -> None:
    f = tmp_path / "p.yaml"
    f.write_text("volume:\n  res: 1e4\n  step_sz: 5e-3\n")
    p = load_params(f)
    assert p.volume.res == 1e4 and p.volume.step_sz == 5e-3


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(ParamsError, match="cannot read parameter file"):
        load_params(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("volume: [1, 2\n")
    with pytest.raises(ParamsError, match="invalid YAML"):
        load_params(bad)


def _run_cli(workdir: Path, *extra: str) -> subprocess.CompletedProcess:
    """The real ``python -m flows generate_passives`` process (used once: the entry point and its exit status)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    env.pop("PREFECT_API_URL", None)
    return subprocess.run(
        [sys.executable, "-m", "flows", "generate_passives", "--workdir", str(workdir), *extra],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _with_old_output(tmp_path: Path, text: str) -> Callable[[], None]:
    """Write ``params.yaml`` and an old ``data/passives.h5``; returns a check that nothing was written or touched."""
    (tmp_path / "params.yaml").write_text(text)
    out = tmp_path / "data" / "passives.h5"
    out.parent.mkdir()
    out.write_bytes(b"old output")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    stat = out.stat()

    def untouched() -> None:
        assert out.read_bytes() == b"old output" and out.stat().st_mtime_ns == stat.st_mtime_ns
        assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before

    return untouched


@pytest.mark.slow
def test_cli_process_exits_2_without_touching_outputs(tmp_path: Path) -> None:
    """End to end in a fresh interpreter: ``python -m flows`` exits with status 2, one message, nothing written."""
    untouched = _with_old_output(tmp_path, "passives:\n  n_volumes: -3\n")
    res = _run_cli(tmp_path)
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith("error: ") and res.stderr.count("error:") == 1 and "passives.n_volumes = -3" in res.stderr
    assert "Traceback" not in res.stderr
    untouched()


@pytest.mark.parametrize(
    "text, needle",
    [
        ("passives:\n  n_volumes: -3\n", "passives.n_volumes = -3"),
        ("volume:\n  res: fast\n", "volume.res = 'fast'"),
        ("irradiate:\n  n_muons: 10\n", "irradiate.n_muons: unknown key"),
        ("volume: [1, 2\n", "invalid YAML"),
    ],
)
def test_cli_exits_2_without_touching_outputs(tmp_path: Path, text: str, needle: str, cli: Cli) -> None:
    untouched = _with_old_output(tmp_path, text)
    rc, err = cli("generate_passives", "--workdir", str(tmp_path))
    assert rc == 2, err
    assert needle in err
    assert err.startswith("error: ") and err.count("error:") == 1
    untouched()


def test_cli_missing_params_and_bad_stage(tmp_path: Path, cli: Cli) -> None:
    rc, err = cli("generate_passives", "--workdir", str(tmp_path), "--params", str(tmp_path / "nope.yaml"))
    assert rc == 2 and "cannot read parameter file" in err
    rc, err = cli("nonsense")
    assert rc == 2 and "invalid choice: 'nonsense'" in err
    assert list(tmp_path.iterdir()) == [], "nothing written"


# ------------------------------------------------------------------------------------------------ luminosity sections
@pytest.mark.parametrize(
    "data, needle",
    [
        ({"lumi_scan": {"mode": "x"}}, "lumi_scan.mode = 'x'"),
        ({"lumi_scan": {"n_inversions": 0}}, "lumi_scan.n_inversions = 0"),
        ({"lumi_scan": {"rel_noise": -0.1}}, "lumi_scan.rel_noise = -0.1"),
        (
            {"lumi_scan": {"bounds": [2.4e-6, 3e-6]}},
            "lumi_scan.bounds=[2.4e-06, 3e-06] must satisfy 0 < lower < lumi_scan.eps_nominal",
        ),
        ({"lumi_scan": {"plan": {"parameters": ["mu0x"]}}}, "lumi_scan.plan.parameters = ['mu0x']: unknown shift parameter(s)"),
        ({"lumi_scan": {"plan": {"target": 0.0}}}, "lumi_scan.plan.target = 0.0"),
        ({"lumi_scan": {"plan": {"n_shifts": 100}}}, "lumi_scan.plan.n_shifts=100 gives"),
        ({"lumi_scan": {"plan": {"bases": [{"crossing_plane": "z"}]}}}, "lumi_scan.plan.bases.0.crossing_plane = 'z'"),
        (
            {"lumi_scan": {"plan": {"bases": [{"overrides": {"sigma_z1": 0.0}}]}}},
            "lumi_scan.plan.bases.0.overrides = {'sigma_z1': 0.0}",
        ),
        (
            {"lumi_scan": {"plan": {"bases": [{"overrides": {"betax": 0.3}}]}}},
            "unknown IPConfig field(s) ['betax']; valid names: f_rev",
        ),
        ({"lumi_report": {"landscape_grid": 1}}, "lumi_report.landscape_grid = 1"),
        ({"lumi_report": {"grid": 10}}, "lumi_report.grid: unknown key"),
        ({"runtime": {"task_runner": "ray"}}, "runtime.task_runner = 'ray'"),
        ({"runtime": {"task_runner": "dask_address"}}, "runtime.dask_address must be set"),
        ({"runtime": {"dask_address": "tcp://h:8786"}}, "runtime.dask_address='tcp://h:8786' is only used with"),
    ],
)
def test_lumi_and_runner_bad_values_name_key(data: dict[str, Any], needle: str) -> None:
    msg = _err(data)
    assert "1 problem" in msg and needle in msg, msg


def test_lumi_cli_exits_2(tmp_path: Path, cli: Cli) -> None:
    (tmp_path / "params.yaml").write_text("lumi_scan:\n  chunk_size: 0\n  plan:\n    parameters: [sep_q]\n")
    rc, err = cli("lumi_scan", "--workdir", str(tmp_path))
    assert rc == 2, err
    assert err.count("error:") == 1 and "2 problems" in err
    assert "lumi_scan.chunk_size = 0" in err and "lumi_scan.plan.parameters = ['sep_q']" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"], "nothing written"
