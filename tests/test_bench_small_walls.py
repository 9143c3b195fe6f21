"""Small-walls benchmark (``tomopt_lib.benchmarks.small_walls``): volume, wrapper, layouts and a tiny prediction."""

from __future__ import annotations

import time

import pytest
import torch

from tomopt_lib.benchmarks.small_walls import SmallWallsPassiveGenerator, get_small_walls_volume, get_small_walls_volume_wrapper
from tomopt_lib.optimisation import PanelVolumeWrapper, PassiveYielder
from tomopt_lib.volume import DetectorPanel


def test_volume_geometry_and_cost() -> None:
    vol = get_small_walls_volume()
    dets = vol.get_detectors()
    assert [d.pos for d in dets] == ["above", "below"] and len(vol.get_passives()) == 10
    bottom, top = (float(v) for v in vol.get_passive_z_range())
    assert (bottom, top, float(vol.h)) == pytest.approx((1.0, 11.0, 12.0)) and vol.passive_size == 1.0
    for det, z0 in zip(dets, (12.0, 1.0)):
        assert len(det.panels) == 4 and all(type(p) is DetectorPanel for p in det.panels)
        assert [float(p.z.detach()) for p in det.panels] == pytest.approx([z0, z0 - 0.25, z0 - 0.5, z0 - 0.75])
        assert all(
            torch.allclose(p.xy, torch.tensor([5.0, 5.0])) and torch.allclose(p.xy_span, torch.tensor([40.0, 40.0]))
            for p in det.panels
        )
    assert float(vol.get_cost().detach()) == pytest.approx(8 * 40.0**2)
    small = get_small_walls_volume(size=0.5, passive_lwh=(2.0, 3.0, 1.5), span=1.0, det_height=0.4)
    assert len(small.get_passives()) == 3 and tuple(small.lw.tolist()) == (2.0, 3.0) and float(small.h) == pytest.approx(2.3)
    with pytest.raises(ValueError, match="whole number"):
        get_small_walls_volume(size=0.3, passive_lwh=(3.0, 3.0, 1.0))


def test_wrapper_uses_1gev_muons() -> None:
    w = get_small_walls_volume_wrapper()
    assert isinstance(w, PanelVolumeWrapper) and w.loss_func is None
    assert set(w.opts) == {"xy_pos_opt", "z_pos_opt", "xy_span_opt"}
    mu = w.mu_generator(100, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(mu[:, 2], torch.ones(100))  # (x, y, p, theta, phi): p = 1 GeV


def test_layouts() -> None:
    vol = get_small_walls_volume()
    gen = SmallWallsPassiveGenerator(vol, seed=5)
    for _ in range(30):
        func, mask = gen.get_data()
        vol.load_rad_length(func, mask)
        cube = vol.get_rad_cube()
        assert mask.shape == (10, 10, 10) and set(mask.unique().tolist()) <= {0.0, 1.0}
        wall = mask.bool()
        assert torch.allclose(cube[wall], torch.tensor(0.08022522418503258)) and torch.allclose(
            cube[~wall], torch.tensor(0.2624248696430881)
        )
        assert bool((wall[1:] <= wall[:-1]).all())  # walls stand on the bottom: columns contiguous from z = 0
        heights = wall.sum(0)
        assert int(heights.max()) >= 4 and bool(((heights == 0) | (heights >= 4)).all())  # min_height = 4
        assert int((heights > 0).sum()) >= 2
    a = [SmallWallsPassiveGenerator(vol, seed=9).get_data()[1] for _ in range(2)]
    assert torch.equal(a[0], a[1])  # same seed, same walls
    with pytest.raises(ValueError, match="stop_k"):
        SmallWallsPassiveGenerator(vol, stop_k=0)


def test_end_to_end_predict() -> None:
    t0 = time.time()
    torch.manual_seed(0)
    w = get_small_walls_volume_wrapper()
    w.generator = torch.Generator().manual_seed(1)
    gen = SmallWallsPassiveGenerator(w.volume, seed=2)
    preds = w.predict(PassiveYielder(gen, n_passives=1), n_mu_per_volume=500, mu_bs=500)
    pred, true = preds[0]
    assert pred.shape == true.shape == (10, 10, 10)
    assert float((torch.as_tensor(pred) > 0).float().mean()) == 1.0
    assert time.time() - t0 < 20
