"""Passive generators (voxel, random block, block present) and the PassiveYielder."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from tomopt_lib.core import X0
from tomopt_lib.optimisation.data.passives import (
    AbsPassiveGenerator,
    BlockPresentPassiveGenerator,
    PassiveYielder,
    RandomBlockPassiveGenerator,
    VoxelPassiveGenerator,
)
from tomopt_lib.volume.builders import build_panel_volume

N_XYZ = (10, 10, 6)  # default panel volume: 1 x 1 m footprint, 6 layers of 0.1 m, passive z in [0.2, 0.8]


@pytest.fixture(scope="module")
def volume():
    return build_panel_volume()


def _cube(volume, func) -> torch.Tensor:
    """(n_z, n_x, n_y) X0 cube (z index 0 = bottom) after loading ``func`` into the real volume."""
    volume.load_rad_length(func)
    return volume.get_rad_cube().clone()


def _block_box(cube: torch.Tensor, block_x0: float):
    """Voxel count and bounding-box dimensions (z, x, y) of the voxels with X0 == block_x0."""
    idx = torch.nonzero(torch.isclose(cube, torch.tensor(block_x0), rtol=1e-6))
    dims = (idx.max(0).values - idx.min(0).values + 1).tolist() if len(idx) else [0, 0, 0]
    return len(idx), dims


# ---------------------------------------------------------------- materials and construction
def test_materials(volume):
    gen = VoxelPassiveGenerator(volume)
    assert gen.materials == list(X0) and len(gen.materials) == 23
    assert VoxelPassiveGenerator(volume, materials=["lead", "air"]).materials == ["lead", "air"]
    with pytest.raises(ValueError, match="beryllium"):  # message lists the allowed names
        VoxelPassiveGenerator(volume, materials=["lead", "kryptonite"])
    for bad in ([], ["iron", "iron"], "iron"):
        with pytest.raises(ValueError):
            VoxelPassiveGenerator(volume, materials=bad)
    with pytest.raises(TypeError):
        AbsPassiveGenerator(volume)
    with pytest.raises(ValueError, match="generator or seed"):
        VoxelPassiveGenerator(volume, seed=1, generator=torch.Generator())
    with pytest.raises(ValueError, match="2 materials"):
        RandomBlockPassiveGenerator(volume, materials=["iron"])
    with pytest.raises(ValueError, match="does not fit"):
        RandomBlockPassiveGenerator(volume, block_size=(0.7, 0.7, 0.7))
    with pytest.raises(ValueError, match="block_size"):
        BlockPresentPassiveGenerator(volume, block_size=(0.1, -0.1, 0.1))


# ---------------------------------------------------------------- voxel generator
def test_voxel_generator_randomness(volume):
    mats = ["beryllium", "iron", "lead", "uranium"]
    gen = VoxelPassiveGenerator(volume, materials=mats, seed=0)
    func, target = gen.get_data()
    assert target is None
    cube = _cube(volume, func)
    assert cube.shape == (6, 10, 10)
    allowed = torch.tensor([X0[m] for m in mats])
    assert torch.isclose(cube[..., None], allowed, rtol=1e-6).any(-1).all()
    # the layout is a fixed function: re-evaluation gives the same map
    p = volume.get_passives()[2]
    assert torch.equal(func(z=p.z, lw=p.lw, size=p.size), func(z=p.z, lw=p.lw, size=p.size))
    assert torch.equal(_cube(volume, func), cube)
    # a new draw differs, and materials are chosen uniformly and independently voxel to voxel
    assert not torch.equal(_cube(volume, gen.generate()), cube)
    counts = np.zeros(len(mats))
    same_as_neighbour = []
    for _ in range(20):
        c = _cube(volume, gen.generate())
        counts += [(torch.isclose(c, a, rtol=1e-6)).sum().item() for a in allowed]
        same_as_neighbour.append((c[:, 1:] == c[:, :-1]).float().mean().item())
    assert stats.chisquare(counts).pvalue > 1e-3
    assert np.mean(same_as_neighbour) == pytest.approx(1 / len(mats), abs=0.03)
    with pytest.raises(ValueError):
        func(z=torch.tensor([1.5]), lw=p.lw, size=p.size)


# ---------------------------------------------------------------- block generators
@pytest.mark.parametrize("cls", [RandomBlockPassiveGenerator, BlockPresentPassiveGenerator])
def test_fixed_block_volume_and_target(volume, cls):
    mats = ["beryllium", "iron", "lead", "uranium"]
    gen = cls(volume, block_size=(0.2, 0.3, 0.4), materials=mats, seed=1)
    orientations = set()
    for _ in range(30):
        func, target = gen.get_data()
        assert target.shape == (1,) and target.dtype == torch.float32
        cube = _cube(volume, func)
        block_x0 = float(target)
        assert any(math.isclose(block_x0, X0[m], rel_tol=1e-6) for m in mats)
        n, dims = _block_box(cube, block_x0)
        if cls is BlockPresentPassiveGenerator:
            bkg = torch.isclose(cube, torch.tensor(X0["beryllium"]), rtol=1e-6)
            assert n == 24 or (block_x0 == pytest.approx(X0["beryllium"]) and n == 600)
            if n == 600:
                continue
            assert bkg.sum() == 600 - 24
        assert n == 24 and dims[0] * dims[1] * dims[2] == 24  # a solid 2x3x4-voxel cuboid
        assert sorted(dims) == [2, 3, 4] and dims[0] <= 4  # z extent fits the 6 layers
        orientations.add(tuple(dims))
    assert len(orientations) > 1  # orientation is randomised


def test_random_block_materials_and_sorting(volume):
    gen = RandomBlockPassiveGenerator(volume, block_size=(0.2, 0.2, 0.2), sort_x0=True, seed=2)
    for _ in range(20):
        func, target = gen.get_data()
        cube = _cube(volume, func)
        values = torch.unique(cube)
        assert len(values) == 2  # enforce_diff_mat: block differs from the background
        assert float(target) == pytest.approx(float(values.min()), rel=1e-6)  # sort_x0: block has the lower X0
        assert _block_box(cube, float(target))[0] == 8
    gen = RandomBlockPassiveGenerator(volume, enforce_diff_mat=False, materials=["lead", "iron"], seed=3)
    n_same = sum(len(torch.unique(_cube(volume, gen.generate()))) == 1 for _ in range(40))
    assert 5 < n_same < 35  # same material drawn with probability 1/2


def test_random_block_sizes(volume):
    for half, max_dims in ((False, (6, 10, 10)), (True, (3, 5, 5))):
        gen = RandomBlockPassiveGenerator(volume, block_size_max_half=half, materials=["beryllium", "lead"], seed=4)
        dims_seen = []
        for _ in range(40):
            func, target = gen.get_data()
            cube = _cube(volume, func)
            n, dims = _block_box(cube, float(target))
            assert n == dims[0] * dims[1] * dims[2]  # solid cuboid
            assert all(1 <= d <= m for d, m in zip(dims, max_dims))
            dims_seen.append(dims)
        dims_seen = np.array(dims_seen)
        assert (dims_seen.max(0) >= np.array(max_dims) - 1).all()  # sizes span the allowed range


def test_block_positions_are_uniform(volume):
    """The block's low corner is uniform over all positions that keep it inside, edges included."""
    gen = RandomBlockPassiveGenerator(volume, block_size=(0.3, 0.3, 0.3), sort_x0=True, materials=["air", "lead"], seed=5)
    lows = []
    for _ in range(150):
        func, target = gen.get_data()
        assert float(target) == pytest.approx(X0["lead"])
        idx = torch.nonzero(torch.isclose(_cube(volume, func), torch.tensor(X0["lead"]), rtol=1e-6))
        assert len(idx) == 27
        lows.append(idx.min(0).values.tolist())
    lows = np.array(lows)  # (z, x, y) voxel indices, z from the bottom
    n_pos = np.array([6, 10, 10]) - 3 + 1  # possible low-corner indices per axis
    assert (lows.min(0) == 0).all() and (lows.max(0) == n_pos - 1).all()
    np.testing.assert_allclose(lows.mean(0), (n_pos - 1) / 2, atol=0.6)


def test_block_present_material_frequencies(volume):
    mats = ["air", "iron", "lead", "uranium"]
    gen = BlockPresentPassiveGenerator(volume, materials=mats, seed=6)
    targets = [float(gen.get_data()[1]) for _ in range(400)]
    counts = [sum(math.isclose(t, X0[m], rel_tol=1e-6) for t in targets) for m in mats]
    assert sum(counts) == 400 and stats.chisquare(counts).pvalue > 1e-3
    for _ in range(10):
        func, target = gen.get_data()
        cube = _cube(volume, func)
        is_air = torch.isclose(cube, torch.tensor(X0["air"]), rtol=1e-6)
        assert (is_air | torch.isclose(cube, target, rtol=1e-6)).all()  # background is materials[0]
        assert is_air.any()


# ---------------------------------------------------------------- seeding
@pytest.mark.parametrize("cls", [VoxelPassiveGenerator, RandomBlockPassiveGenerator, BlockPresentPassiveGenerator])
def test_seeding(volume, cls):
    def draws(**kw):
        gen = cls(volume, **kw)
        out = []
        for _ in range(3):
            f, t = gen.get_data()
            out.append((_cube(volume, f), t))
        return out

    a, b, c = draws(seed=10), draws(generator=torch.Generator().manual_seed(10)), draws(seed=11)
    for (ca, ta), (cb, tb) in zip(a, b):
        assert torch.equal(ca, cb) and (ta is None or torch.equal(ta, tb))
    assert not all(torch.equal(ca, cc) for (ca, _), (cc, _) in zip(a, c))
    torch.manual_seed(3)
    d = draws()
    torch.manual_seed(3)
    assert all(torch.equal(x[0], y[0]) for x, y in zip(d, draws()))  # global torch RNG without generator/seed


# ---------------------------------------------------------------- yielder
def _const(x0: float):
    def f(*, z, lw, size):
        return torch.full((10, 10), x0)

    return f


def test_yielder_over_list_shuffles():
    funcs = [_const(float(i + 1)) for i in range(8)]
    items = [(f, torch.tensor([float(i)])) for i, f in enumerate(funcs[:4])] + funcs[4:]
    y = PassiveYielder(items, generator=torch.Generator().manual_seed(0))
    assert len(y) == 8
    epochs = [[(f, t) for f, t in y] for _ in range(3)]
    for ep in epochs:
        assert sorted(id(f) for f, _ in ep) == sorted(id(f) for f in funcs)  # every layout once per epoch
        for f, t in ep:
            i = funcs.index(f)
            assert (t is None) == (i >= 4) and (t is None or float(t) == i)  # targets travel with their layout
    orders = [tuple(funcs.index(f) for f, _ in ep) for ep in epochs]
    assert len(set(orders)) > 1 and orders[0] != tuple(range(8))
    fixed = PassiveYielder(items, shuffle=False)
    assert [funcs.index(f) for f, _ in fixed] == list(range(8))
    assert [funcs.index(f) for f, _ in PassiveYielder(items, n_passives=3, shuffle=False)] == [0, 1, 2]
    with pytest.raises(ValueError):
        PassiveYielder(items, n_passives=9)
    with pytest.raises(ValueError):
        PassiveYielder([(funcs[0], None, 1)])
    with pytest.raises(ValueError):
        PassiveYielder([3.0])


def test_yielder_over_generator(volume):
    gen = RandomBlockPassiveGenerator(volume, seed=7)
    with pytest.raises(ValueError, match="n_passives"):
        PassiveYielder(gen)
    y = PassiveYielder(gen, n_passives=5)
    assert len(y) == 5 and y.passives is gen
    data = list(y)
    assert len(data) == 5 and all(callable(f) and t.shape == (1,) for f, t in data)
    assert len({float(t) for _, t in data} | {float(t) for _, t in y}) > 1  # new layouts every epoch
