"""The typed configuration: one definition per rule, typed sections all the way to the tasks, device requests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import Cli

from config import OptimiseParams, ParamsError, PipelineParams, VolumeParams, parse_params
from tasks.caching import FileCachePolicy
from tomopt_lib.checks import VOXEL_MULTIPLE_RTOL, is_voxel_multiple
from tomopt_lib.volume.passive_layer import PassiveLayer

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("lw", [0.7, 1.0, 2.3, 10.0])
def test_voxel_rule_is_shared_by_config_and_core(lw: float) -> None:
    """A footprint the config accepts builds a layer; one it rejects is rejected by the core with the same rule."""
    VolumeParams(lw=[lw, 1.0], voxel_size=0.1)
    PassiveLayer(lw=(lw, 1.0), z=1.0, size=0.1)
    bad = lw + 0.05
    with pytest.raises(ValueError, match="whole multiple"):
        VolumeParams(lw=[bad, 1.0], voxel_size=0.1)
    with pytest.raises(ValueError, match="multiple of the voxel size"):
        PassiveLayer(lw=(bad, 1.0), z=1.0, size=0.1)


def test_voxel_tolerance_scale() -> None:
    n = torch.tensor([100.0, 100.0 + 0.5 * VOXEL_MULTIPLE_RTOL * 100, 100.0 + 3 * VOXEL_MULTIPLE_RTOL * 100])
    assert is_voxel_multiple(n * 0.1, 0.1).tolist() == [True, True, False]
    assert not bool(is_voxel_multiple(torch.tensor([0.0]), 0.1).any()), "zero voxels is not a footprint"


def test_passive_batch_rule_once() -> None:
    with pytest.raises(ValueError, match="optimise.passive_bs=3 exceeds optimise.n_volumes=2"):
        OptimiseParams(passive_bs=3, n_volumes=2)


def test_sections_are_typed_and_frozen() -> None:
    p = parse_params({})
    assert isinstance(p.volume, VolumeParams) and isinstance(p.optimise.lr.xy, float)
    with pytest.raises(Exception, match="frozen"):
        p.volume.voxel_size = 0.2  # type: ignore[misc]


def test_cache_key_hashes_the_json_form_of_a_section(tmp_path: Path) -> None:
    from prefect import task

    @task
    def f(volume: VolumeParams, n: int) -> int:
        return n

    policy = FileCachePolicy()
    v = PipelineParams().volume
    key = policy.base_key(f, {"volume": v, "n": 1})
    assert key == policy.base_key(f, {"volume": v.model_dump(mode="json"), "n": 1})
    assert key != policy.base_key(f, {"volume": v.model_copy(update={"eff": 0.5}), "n": 1})


def test_cuda_request_without_cuda_is_a_clear_params_error(tmp_path: Path, cli: Cli) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    (tmp_path / "params.yaml").write_text("runtime: {device: cuda}\n")
    rc, err = cli("optimise", "--workdir", str(tmp_path))
    assert rc == 2, err
    assert "runtime.device = 'cuda'" in err and "CUDA" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"], "nothing written before validation"


def test_params_error_is_value_error() -> None:
    with pytest.raises(ParamsError, match=r"volume.voxel_size = 0.0: .*\(allowed: a number > 0 and <= 10\)"):
        parse_params({"volume": {"voxel_size": 0.0}})
