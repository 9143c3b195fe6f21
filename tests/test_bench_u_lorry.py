"""U-lorry benchmark (``tomopt_lib.benchmarks.u_lorry``): layouts and a tiny end-to-end fit. Seeded and fast."""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path

import pytest
import torch

from tomopt_lib.benchmarks.u_lorry import ULorryPassiveGenerator
from tomopt_lib.core import X0
from tomopt_lib.inference import DenseBlockClassifierFromX0s, PanelX0Inferrer
from tomopt_lib.optimisation import PanelVolumeWrapper, PassiveYielder, VolumeClassLoss
from tomopt_lib.volume import Volume
from tomopt_lib.volume.builders import build_panel_volume


@pytest.fixture(scope="module")
def volume() -> Volume:
    return build_panel_volume(passive_n_layers=6, lw=(1.0, 1.0), voxel_size=0.1, budget=8.0)


def _cube(vol: Volume, data) -> torch.Tensor:
    vol.load_rad_length(*data)
    return vol.get_rad_cube()


def test_layouts(volume: Volume) -> None:
    gen = ULorryPassiveGenerator(volume, u_volume=0.008, u_prob=0.5, fill_frac=0.5, seed=3)
    assert gen.n_u_voxels == 8 and gen.n_cargo == 3  # round(0.5 * 6) layers: bed + 2 cargo layers
    n_present = 0
    for _ in range(80):
        func, targ = gen.get_data()
        cube = _cube(volume, (func, targ))
        is_u = torch.isclose(cube, torch.tensor(X0["uranium"]))
        present = float(targ) == 1.0
        n_present += present
        assert float(targ) in (0.0, 1.0) and int(is_u.sum()) == (8 if present else 0)
        if present:  # one cuboid: its bounding box is full
            idx = is_u.nonzero()
            box = (idx.max(0).values - idx.min(0).values + 1).prod()
            assert int(box) == 8 and int(idx[:, 0].min()) >= 1  # above the bed
        assert torch.allclose(cube[0], torch.tensor(X0["iron"]))  # bed
        cargo, air = cube[1:3][~is_u[1:3]], cube[3:][~is_u[3:]]
        assert bool((torch.isclose(cargo, torch.tensor(X0["iron"])) | torch.isclose(cargo, torch.tensor(X0["air"]))).all())
        assert torch.allclose(air, torch.tensor(X0["air"]))
    assert 28 <= n_present <= 52  # Binomial(80, 0.5): 4 sigma
    again = ULorryPassiveGenerator(volume, u_volume=0.008, u_prob=0.5, fill_frac=0.5, seed=3)
    assert torch.equal(
        _cube(volume, again.get_data()), _cube(volume, ULorryPassiveGenerator(volume, 0.008, 0.5, 0.5, seed=3).get_data())
    )
    never = ULorryPassiveGenerator(volume, u_volume=0.001, u_prob=0.0, seed=0)
    assert all(float(never.get_data()[1]) == 0.0 for _ in range(10))
    with pytest.raises(ValueError, match="whole number"):
        ULorryPassiveGenerator(volume, u_volume=0.0015)
    with pytest.raises(ValueError, match="u_prob"):
        ULorryPassiveGenerator(volume, u_volume=0.001, u_prob=1.5)


def test_end_to_end_fit(tmp_path: Path, volume: Volume) -> None:
    """Fixed budget, dense-block classifier and binary class loss: one epoch of 2 layouts, then a prediction."""
    t0 = time.time()
    torch.manual_seed(0)
    gen = ULorryPassiveGenerator(volume, u_volume=0.008, u_prob=0.5, seed=1)
    trn = PassiveYielder(gen, n_passives=2)
    wrapper = PanelVolumeWrapper(
        volume,
        xy_pos_opt=partial(torch.optim.SGD, lr=1e-3),
        z_pos_opt=partial(torch.optim.SGD, lr=1e-3),
        xy_span_opt=None,
        budget_opt=partial(torch.optim.SGD, lr=1e-2),
        loss_func=VolumeClassLoss(x02id={0.0: 0, 1.0: 1}, target_budget=None),
        partial_volume_inferrer=partial(DenseBlockClassifierFromX0s, 8, PanelX0Inferrer),
        seed=2,
    )
    before = [p.detach().clone() for p in volume.parameters()]
    wrapper.fit(1, passive_bs=2, n_mu_per_volume=300, mu_bs=300, trn_passives=trn, cb_savepath=tmp_path)
    assert wrapper.fit_params.n_updates == 1
    assert any(not torch.equal(a, b) for a, b in zip(before, volume.parameters()))
    preds = wrapper.predict([gen.get_data()], n_mu_per_volume=300, mu_bs=300)
    assert len(preds) == 1 and 0.0 <= float(torch.as_tensor(preds[0][0]).reshape(-1)[0]) <= 1.0
    assert time.time() - t0 < 20
