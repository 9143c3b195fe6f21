"""Sizes that cannot fit are refused before any work (issue 14 item 2, issue 15 item 3): estimates per stage, limits
from ``runtime.limits`` or the machine, one message naming the parameters and the limit, and the CLI's exit 2."""

from __future__ import annotations

import io
import math
from contextlib import redirect_stderr
from pathlib import Path

import pytest
import yaml
from conftest import tiny_params

from config import ParamsError, PipelineParams, parse_params
from config.resources import Limits, check_resources, estimate_stage, machine_limits, resource_problems
from flows.stages import STAGE_NAMES

MACHINE_24GB = Limits(24e9, 100e9, 24 * 3600.0, "runtime.limits.memory_gb", "runtime.limits.disk_gb")
"""This project's documented machine (24 GiB, a 100 GB disk), fixed so that the tests do not depend on the host."""


def _default(**overrides: object) -> PipelineParams:
    """The repository's params.yaml with dotted-key overrides."""
    data = yaml.safe_load((Path(__file__).resolve().parents[1] / "params.yaml").read_text())
    for key, val in overrides.items():
        *parents, leaf = key.split("__")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = val
    return parse_params(data)


def test_every_stage_has_a_finite_positive_estimate() -> None:
    p = _default()
    for stage in STAGE_NAMES:
        est = estimate_stage(p, stage)
        assert est.stage == stage
        assert 0.3e9 < est.memory_bytes < 2e9, stage  # the default pipeline: well under a GB per process
        assert est.disk_bytes >= 0 and math.isfinite(est.disk_bytes)
        assert 0 < est.seconds < 600, stage  # every default stage runs in minutes
    with pytest.raises(ValueError, match="no resource estimate"):
        estimate_stage(p, "nonsense")


def test_the_default_pipeline_fits_the_documented_machine() -> None:
    assert resource_problems(_default(), list(STAGE_NAMES), MACHINE_24GB) == []


@pytest.mark.parametrize(
    ("overrides", "stage", "keys", "kind"),
    [
        # the three sizes of the hostile-user trial
        (
            {"irradiate__n_muons_per_volume": 10_000_000, "irradiate__chunk_size": 1_000_000},
            "irradiate",
            ["irradiate.n_muons_per_volume=10000000", "irradiate.chunk_size=1000000"],
            "of memory",
        ),
        ({"lumi_scan__n_inversions": 10_000_000}, "lumi_scan", ["lumi_scan.n_inversions=10000000"], "of work"),
        ({"passives__n_volumes": 100_000}, "irradiate", ["passives.n_volumes=100000"], "of disk"),
        # training memory grows with the muons per volume (the graph holds a whole volume's muons)
        ({"optimise__n_mu_per_volume": 5_000_000}, "optimise", ["n_mu_per_volume=5000000"], "of memory"),
        ({"optimise__n_epochs": 100_000}, "optimise", ["optimise.n_epochs=100000"], "of work"),
        ({"evaluate__n_mu_per_volume": 10_000_000}, "evaluate", ["n_mu_per_volume=10000000"], "of memory"),
    ],
)
def test_sizes_that_cannot_fit_are_refused_with_the_estimate_and_the_limit(
    overrides: dict, stage: str, keys: list[str], kind: str
) -> None:
    p = _default(**overrides)
    problems = resource_problems(p, list(STAGE_NAMES), MACHINE_24GB)
    mine = [m for m in problems if m.startswith(f"stage {stage} ")]
    assert len(mine) == 1, problems
    msg = mine[0]
    assert kind in msg and "runtime.limits" in msg, msg
    for key in keys:
        assert key in msg, msg
    # the estimate and the limit are both numbers in the message: "~<x> GB of memory > 24 GB (...)" / "h of work"
    assert "~" in msg and ">" in msg


def test_limits_override_for_bigger_machines() -> None:
    """The explicit override: ``runtime.limits`` raised lets the same big run through; lowered, refuses the default."""
    big = {"irradiate__n_muons_per_volume": 10_000_000, "irradiate__chunk_size": 1_000_000}
    p = _default(**big, runtime__limits={"memory_gb": 1000.0, "disk_gb": 10_000.0, "stage_hours": 1000.0})
    lim = machine_limits(p, ".")
    assert (lim.memory_bytes, lim.disk_bytes, lim.seconds) == (1000e9, 10_000e9, 1000 * 3600.0)
    assert resource_problems(p, list(STAGE_NAMES), lim) == []
    small = _default(runtime__limits={"memory_gb": 0.1})
    assert len(resource_problems(small, ["irradiate"], machine_limits(small, "."))) == 1


def test_machine_limits_default_to_this_machine(tmp_path: Path) -> None:
    import psutil

    lim = machine_limits(_default(), tmp_path / "not" / "yet" / "there")  # the nearest existing folder's disk
    assert 0 < lim.memory_bytes <= psutil.virtual_memory().total
    assert 0 < lim.disk_bytes and "null" in lim.memory_source and "null" in lim.disk_source
    assert lim.seconds == 24 * 3600.0


def test_estimates_grow_with_the_work() -> None:
    small, big = _default(), _default(irradiate__n_muons_per_volume=1_000_000, evaluate__n_volumes=200)
    for stage in ("irradiate", "reconstruct", "report"):
        a, b = estimate_stage(small, stage), estimate_stage(big, stage)
        assert b.memory_bytes > a.memory_bytes and b.seconds > a.seconds, stage
    assert estimate_stage(big, "evaluate").seconds == pytest.approx(10 * estimate_stage(small, "evaluate").seconds, rel=1e-3)
    two = _default(runtime__task_workers=2)
    assert estimate_stage(two, "irradiate").seconds == pytest.approx(estimate_stage(small, "irradiate").seconds / 2)


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_limits_are_validated(bad: float) -> None:
    with pytest.raises(ParamsError, match="runtime.limits.memory_gb"):
        parse_params(tiny_params({"runtime.limits.memory_gb": bad}))


def test_check_resources_raises_one_params_error(tmp_path: Path) -> None:
    p = parse_params(tiny_params({"runtime.limits.memory_gb": 0.01}))
    with pytest.raises(ParamsError) as err:
        check_resources(p, ["generate_passives", "irradiate"], tmp_path, "p.yaml")
    text = str(err.value)
    assert text.startswith("parameters in p.yaml ask for more than this machine allows")
    assert text.count("\n  stage ") == 2


def test_cli_check_refuses_before_anything_is_written(tmp_path: Path) -> None:
    """``python -m flows check`` (what ``make run`` calls before DVC) and a stage itself exit 2 with the message; no
    output folder is created."""
    from flows.__main__ import main

    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(_default(lumi_scan__n_inversions=10_000_000).model_dump(mode="json")))
    for stage in ("check", "lumi_scan"):
        err = io.StringIO()
        with redirect_stderr(err):
            assert main([stage, "--params", str(params), "--workdir", str(tmp_path)]) == 2
        assert "stage lumi_scan would need" in err.getvalue() and "runtime.limits.stage_hours" in err.getvalue()
    assert sorted(x.name for x in tmp_path.iterdir()) == ["params.yaml"]
