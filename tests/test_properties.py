"""Property-based checks (issue 14, item 6), seeded (``derandomize=True``) and small enough for a few seconds.

* parameter files: random valid mutations of ``tiny_params`` parse; random invalid ones (out of range, wrong type,
  NaN / inf, unknown key, duplicate YAML key) give exactly one ``ParamsError`` problem naming the key, from
  ``parse_params`` and from ``load_params`` of a YAML file, which is left as it was;
* core inputs: ``MuonBatch`` with NaN / inf anywhere is a ``ValueError`` naming the column, never a batch;
  ``ScatterBatch`` + the inferrers on random batches (empty, all missing the block, NaN hits) give a finite prediction
  or ``NoMuonsError`` (a ``ValueError``), never NaN.
"""

from __future__ import annotations

import math
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from conftest import tiny_params
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from config import ParamsError, load_params, parse_params

SEEDED: dict[str, Any] = dict(derandomize=True, database=None, deadline=None, suppress_health_check=[HealthCheck.too_slow])
"""Seeded (the same examples every run), no example database written, no per-example deadline."""

# ------------------------------------------------------------------------------------------------ parameter files
# (dotted key, strategy of valid values, strategy of invalid values): independent keys with simple ranges
_NAN_INF = st.sampled_from([math.nan, math.inf, -math.inf])
_JUNK = st.sampled_from(["abc", None, [1, 2], {"a": 1}])
KEYS: list[tuple[str, st.SearchStrategy, st.SearchStrategy]] = [
    ("seed", st.integers(0, 2**40), st.one_of(st.integers(max_value=-1), st.floats(0.1, 0.9), _JUNK)),
    (
        "irradiate.n_muons_per_volume",
        st.integers(0, 5000),
        st.one_of(st.integers(max_value=-1), st.integers(10_000_001, 10**12), _JUNK),
    ),
    ("irradiate.chunk_size", st.integers(1, 1000), st.one_of(st.integers(max_value=0), st.floats(1.5, 9.5), _JUNK)),
    ("irradiate.min_angle_deg", st.floats(0, 89.9), st.one_of(st.floats(max_value=-1e-3), st.floats(90, 1e6), _NAN_INF, _JUNK)),
    ("irradiate.theta_max_deg", st.floats(0.1, 89.9), st.one_of(st.floats(max_value=0), st.floats(90, 1e6), _NAN_INF)),
    ("reconstruct.chunk_size", st.integers(1, 1000), st.one_of(st.integers(max_value=0), _JUNK)),
    ("report.angle_bins", st.integers(2, 10000), st.one_of(st.integers(max_value=1), st.integers(10001, 10**9), _JUNK)),
    ("report.max_angle", st.floats(1e-3, 3.14), st.one_of(st.floats(max_value=0), st.floats(3.2, 1e9), _NAN_INF, _JUNK)),
    ("report.poca_bins_per_voxel", st.integers(1, 50), st.one_of(st.integers(max_value=0), st.integers(51, 10**6))),
    ("volume.eff", st.floats(0.01, 1.0), st.one_of(st.floats(max_value=0), st.floats(1.001, 1e6), _NAN_INF, _JUNK)),
    ("volume.res", st.floats(1.0, 1e8), st.one_of(st.floats(max_value=0), st.floats(1.1e9, 1e12), _NAN_INF)),
    ("passives.n_volumes", st.integers(2, 50), st.one_of(st.integers(max_value=0), _JUNK)),
]


def _set(data: dict[str, Any], key: str, value: Any) -> dict[str, Any]:
    node = data
    *parents, leaf = key.split(".")
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = value
    return data


@st.composite
def valid_params(draw: st.DrawFn) -> dict[str, Any]:
    data = tiny_params()
    for i in draw(st.sets(st.integers(0, len(KEYS) - 1), max_size=4)):
        key, good, _ = KEYS[i]
        _set(data, key, draw(good))
    return data


@st.composite
def invalid_params(draw: st.DrawFn) -> tuple[dict[str, Any], str]:
    """A valid file with ONE bad entry: (data, the dotted key the error must name)."""
    data = draw(valid_params())
    if draw(st.integers(0, 4)) == 0:  # an unknown key in a section
        section = draw(st.sampled_from(["irradiate", "reconstruct", "report", "volume", "passives"]))
        name = draw(st.sampled_from(["chunksize", "n_muon", "typo", "max_angel"]))
        data.setdefault(section, {})[name] = draw(st.integers(0, 9))
        return data, f"{section}.{name}"
    key, _, bad = KEYS[draw(st.integers(0, len(KEYS) - 1))]
    return _set(data, key, draw(bad)), key


def _one_problem(err: ParamsError, key: str) -> None:
    msg = str(err)
    assert "(1 problem)" in msg, msg
    problem = msg.splitlines()[1].strip()
    assert problem.startswith(f"{key} ") or problem.startswith(f"{key}:") or f" {key}" in problem, (key, msg)
    assert "Traceback" not in msg


@settings(**SEEDED, max_examples=40)
@given(valid_params())
def test_valid_parameter_mutations_parse(data: dict[str, Any]) -> None:
    p = parse_params(data)
    assert p.irradiate.chunk_size == data["irradiate"]["chunk_size"]


@settings(**SEEDED, max_examples=20)
@given(invalid_params())
def test_invalid_parameter_mutations_give_one_clear_error(case: tuple[dict[str, Any], str]) -> None:
    data, key = case
    with pytest.raises(ParamsError) as err:
        parse_params(data)
    _one_problem(err.value, key)


@settings(**SEEDED, max_examples=8)
@given(invalid_params())
def test_invalid_parameter_files_give_one_clear_error_and_stay_untouched(case: tuple[dict[str, Any], str]) -> None:
    data, key = case
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "params.yaml"
        text = yaml.safe_dump(data, sort_keys=False)
        path.write_text(text)
        with pytest.raises(ParamsError) as err:
            load_params(path)
        _one_problem(err.value, key)
        assert path.read_text() == text and sorted(p.name for p in Path(tmp).iterdir()) == ["params.yaml"]


@settings(**SEEDED, max_examples=10)
@given(
    section=st.sampled_from(["irradiate", "reconstruct", "report", "passives"]),
    nested=st.booleans(),
    values=st.tuples(st.integers(1, 99), st.integers(1, 99)),
)
def test_duplicate_yaml_keys_are_refused_naming_the_key(section: str, nested: bool, values: tuple[int, int]) -> None:
    """PyYAML keeps the last of two equal keys; DVC rejects such a file: so must ``load_params``, naming the key."""
    data = tiny_params()
    inner = {"irradiate": "chunk_size", "reconstruct": "chunk_size", "report": "angle_bins", "passives": "n_volumes"}[section]
    if nested:  # the key twice inside its section
        data.pop(section, None)
        extra, dup = f"{section}: {{{inner}: {values[0] + 1}, {inner}: {values[1] + 1}}}\n", inner
    else:  # the section twice at the top level
        extra, dup = f"{section}: {{{inner}: {values[0] + 1}}}\n", section
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "params.yaml"
        text = yaml.safe_dump(data, sort_keys=False) + extra
        path.write_text(text)
        with pytest.raises(ParamsError) as err:
            load_params(path)
        assert f"duplicate key {dup!r}" in str(err.value) and str(path) in str(err.value), str(err.value)
        assert path.read_text() == text


# ------------------------------------------------------------------------------------------------ core inputs
@settings(**SEEDED, max_examples=60)
@given(
    st.integers(0, 40),
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 4), st.sampled_from([math.nan, math.inf, -math.inf])), max_size=3),
    st.sampled_from([None, math.nan, math.inf]),
)
def test_muon_batch_refuses_non_finite_states(n: int, bad: list[tuple[int, int, float]], bad_z: float | None) -> None:
    from tomopt_lib.muon.muon_batch import MuonBatch

    rng = np.random.default_rng(n)
    states = np.column_stack([rng.random(n), rng.random(n), 1 + 10 * rng.random(n), 0.5 * rng.random(n), rng.random(n)])
    names = ["x", "y", "mom", "theta", "phi"]
    for row, col, val in bad if n else []:
        states[row % n, col] = val
    z = np.full(n, 1.2)
    if bad_z is not None and n:
        z[n // 2] = bad_z
    first_bad = next((names[c] for c in range(5) if n and not np.isfinite(states[:, c]).all()), None)
    if first_bad is None and not (bad_z is not None and n):
        mu = MuonBatch(torch.as_tensor(states), init_z=torch.as_tensor(z))
        assert len(mu) == n and bool(torch.isfinite(mu.muons).all())
        return
    with pytest.raises(ValueError) as err:
        MuonBatch(torch.as_tensor(states), init_z=torch.as_tensor(z))
    assert (f"non-finite {first_bad}" if first_bad else "init_z") in str(err.value)


@pytest.fixture(scope="module")
def volume() -> Any:
    from tomopt_lib.core import X0
    from tomopt_lib.volume.builders import build_panel_volume

    vol = build_panel_volume()

    def x0(*, z: torch.Tensor, lw: torch.Tensor, size: float) -> torch.Tensor:
        n = [int(round(float(v) / size)) for v in lw]
        return torch.full(n, X0["iron"] if float(z) > 0.6 else X0["lead"])

    vol.load_rad_length(x0)
    return vol


@settings(**SEEDED, max_examples=10)
@given(
    n=st.sampled_from([0, 1, 5, 40]),
    shift=st.sampled_from([0.0, 50.0]),
    nan_frac=st.sampled_from([0.0, 0.3, 1.0]),
    inferrer=st.sampled_from(["poca", "path"]),
)
def test_scatters_and_inferrers_give_a_finite_prediction_or_a_clear_error(
    volume: Any, n: int, shift: float, nan_frac: float, inferrer: str
) -> None:
    from tomopt_lib.inference import ScatterBatch, get_volume_inferrer
    from tomopt_lib.inference.x0_base import NoMuonsError
    from tomopt_lib.muon.generation import MuonGenerator2016
    from tomopt_lib.muon.muon_batch import MuonBatch

    g = torch.Generator().manual_seed(n)
    states = MuonGenerator2016.from_volume(volume).generate_set(n, generator=g)
    states[:, 0] += shift  # 50 m away: every muon misses the detector and is filtered
    mu = MuonBatch(states, init_z=volume.h.detach())
    with torch.no_grad():
        volume(mu, g)
        hits = mu._hits.get("above", {}).get("reco_xyz", [])
        for h in hits:  # NaN hits in a fraction of the muons: dropped by the inferrer, never NaN predictions
            h[: int(round(nan_frac * len(h)))] = math.nan
        try:
            sb = ScatterBatch(mu, volume)
        except ValueError as err:  # no muon recorded a hit: said so
            assert "recorded hits" in str(err)
            return
        inf = get_volume_inferrer(inferrer)(volume)
        inf.add_scatters(sb)
        try:
            pred = inf.get_prediction()
        except NoMuonsError as err:
            assert "no muons to infer from" in str(err)
            return
    assert pred is not None and bool(torch.isfinite(pred).all()), "a prediction is finite"


def test_volume_without_passive_layers_is_refused_clearly(volume: Any) -> None:
    from tomopt_lib.inference import PanelX0Inferrer, ScatterBatch
    from tomopt_lib.muon.generation import MuonGenerator2016
    from tomopt_lib.muon.muon_batch import MuonBatch
    from tomopt_lib.volume import PassiveLayer, Volume

    empty = Volume(torch.nn.ModuleList([layer for layer in volume.layers if not isinstance(layer, PassiveLayer)]))
    g = torch.Generator().manual_seed(0)
    mu = MuonBatch(MuonGenerator2016.from_volume(volume).generate_set(20, generator=g), init_z=volume.h.detach())
    with torch.no_grad():
        empty(mu, g)  # documented: muons cross the panels only
    with pytest.raises(ValueError, match="no passive layers"):
        ScatterBatch(mu, empty)
    with pytest.raises(ValueError, match="no passive layers"):
        PanelX0Inferrer(empty)
