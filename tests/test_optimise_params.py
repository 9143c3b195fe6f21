"""Validation of the ``optimise`` / ``evaluate`` parameter sections: one message naming the key path; CLI exit 2."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import Cli

from flows.params import ParamsError, parse_params


def _err(data: dict[str, Any]) -> str:
    with pytest.raises(ParamsError) as exc:
        parse_params(data)
    return str(exc.value)


@pytest.mark.parametrize(
    "data, needle, allowed",
    [
        ({"optimise": {"n_epochs": 0}}, "optimise.n_epochs = 0", ">= 1"),
        ({"optimise": {"mu_bs": -5}}, "optimise.mu_bs = -5", ">= 1"),
        ({"optimise": {"inferrer": "magic"}}, "optimise.inferrer = 'magic'", "one of 'poca', 'path'"),
        ({"optimise": {"optimiser": "lbfgs"}}, "optimise.optimiser = 'lbfgs'", "one of 'adam', 'sgd'"),
        ({"optimise": {"target_budget": 0.0}}, "optimise.target_budget = 0.0", "> 0"),
        ({"optimise": {"lr": {"xy": -1.0}}}, "optimise.lr.xy = -1.0", "> 0"),
        ({"optimise": {"lr": {"wobble": 1.0}}}, "optimise.lr.wobble: unknown key", "allowed keys: xy, z, xy_span"),
        ({"optimise": {"start": {"xy_offset": [0.1]}}}, "optimise.start.xy_offset = [0.1]", "a list of 2 items"),
        ({"optimise": {"passive_bs": 20, "n_volumes": 4}}, "optimise.passive_bs=20 exceeds optimise.n_volumes=4", ""),
        (
            {"optimise": {"budget": None, "lr": {"xy": None, "z": None, "xy_span": None}}},
            "optimise.lr.xy, optimise.lr.z and optimise.lr.xy_span are all null",
            "",
        ),
        ({"evaluate": {"n_volumes": 0}}, "evaluate.n_volumes = 0", ">= 2"),
        ({"evaluate": {"n_bootstrap": 10}}, "evaluate.n_bootstrap = 10", ">= 100"),
        ({"optimise": {"budget": 0.0}}, "optimise.budget = 0.0", "> 0"),
        (
            {"optimise": {"momentum": {"model": "guess"}}},
            "optimise.momentum.model = 'guess'",
            "one of 'true', 'smeared', 'unknown'",
        ),
        ({"optimise": {"momentum": {"resolution": 0.0}}}, "optimise.momentum.resolution = 0.0", "> 0"),
        ({"optimise": {"momentum": {"resolution": 1.5}}}, "optimise.momentum.resolution = 1.5", "<= 1"),
        ({"evaluate": {"momentum": {"model": "exact"}}}, "evaluate.momentum.model = 'exact'", "one of 'true'"),
        ({"volume": {"energy_loss": "yes"}}, "volume.energy_loss = 'yes'", "true/false"),
        (
            {"optimise": {"budget": 4.0, "lr": {"xy": None, "z": None, "xy_span": None, "budget": None}}},
            "optimise.lr.xy, optimise.lr.z and optimise.lr.xy_span are all null",
            "",
        ),
        ({"evaluate": {"baselines": ["best"]}}, "evaluate.baselines.0 = 'best'", "one of 'start', 'reference'"),
        ({"evaluate": {"baselines": ["start", "start"]}}, "evaluate.baselines=['start', 'start'] must not repeat", ""),
        ({"evaluate": {"inferrer": "none"}}, "evaluate.inferrer = 'none'", "one of 'poca', 'path' or null"),
    ],
)
def test_bad_optimise_evaluate_values(data: dict[str, Any], needle: str, allowed: str) -> None:
    msg = _err(data)
    assert "1 problem" in msg and needle in msg, msg
    assert allowed in msg, msg


def test_cli_exit_2_for_bad_optimise_params(tmp_path: Path, cli: Cli) -> None:
    (tmp_path / "params.yaml").write_text("optimise:\n  n_epochs: -1\n")
    rc, err = cli("optimise", "--workdir", str(tmp_path))
    assert rc == 2 and "optimise.n_epochs = -1" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"], "nothing written (no models/, no checkpoints)"
