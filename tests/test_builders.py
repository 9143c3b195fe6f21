"""``build_panel_volume`` layouts and the X0-cube layout function."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tomopt_lib.volume.builders import build_panel_volume, panel_volume_heights, rad_length_func_from_cube
from tomopt_lib.volume.panel import SigmoidDetectorPanel


def _zs(layer) -> list:
    return [round(float(p.z.detach()), 6) for p in layer.panels]


def test_reference_layout() -> None:
    vol = build_panel_volume()
    det = vol.get_detectors()
    assert [d.pos for d in det] == ["above", "below"]
    assert _zs(det[0]) == [1.0, 0.95, 0.9, 0.85] and _zs(det[1]) == [0.2, 0.15, 0.1, 0.05]
    assert det[0].z_top == pytest.approx(1.0) and det[0].size == pytest.approx(0.2)
    assert det[1].z_top == pytest.approx(0.2) and det[1].z_bottom == pytest.approx(0.0, abs=1e-6)
    tops = [p.z_top for p in vol.get_passives()]
    np.testing.assert_allclose(tops, [0.8, 0.7, 0.6, 0.5, 0.4, 0.3], atol=1e-6)
    assert vol.passive_size == pytest.approx(0.1) and float(vol.h) == pytest.approx(1.0)
    for p in (*det[0].panels, *det[1].panels):
        np.testing.assert_allclose(p.xy.detach().numpy(), [0.5, 0.5])
        np.testing.assert_allclose(p.xy_span.detach().numpy(), [1.0, 1.0])
        assert float(p.resolution) == pytest.approx(1e4) and float(p.efficiency) == pytest.approx(0.9)
    assert vol.get_detector_groups() == {"above": ["above"], "below": ["below"]}


def test_generalised_layout() -> None:
    vol = build_panel_volume(
        n_panels_above=2,
        n_panels_below=3,
        passive_n_layers=3,
        lw=(0.6, 0.4),
        voxel_size=0.2,
        panel_span=(0.5, 0.3),
        sigmoid_smooth=0.1,
        budget=5.0,
    )
    h, top, bottom = panel_volume_heights(3, 0.2)
    assert (h, top, bottom) == pytest.approx((1.4, 1.0, 0.4))
    det = vol.get_detectors()
    assert _zs(det[0]) == pytest.approx([1.4, 1.2]) and _zs(det[1]) == pytest.approx(
        [0.4, 0.4 - 0.4 / 3, 0.4 - 0.8 / 3], abs=1e-6
    )
    assert all(isinstance(p, SigmoidDetectorPanel) for p in det[0].panels)
    np.testing.assert_allclose(det[1].panels[0].xy.detach().numpy(), [0.3, 0.2])
    assert float(vol.get_cost()) == pytest.approx(5.0)
    assert [float(t) for t in vol.get_passive_z_range()] == pytest.approx([0.4, 1.0])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_panels_above": 0},
        {"passive_n_layers": 1.5},
        {"voxel_size": -1},
        {"lw": (1.0,)},
        {"panel_span": 0},
        {"sigmoid_smooth": 0.0},
    ],
)
def test_bad_arguments(kwargs) -> None:
    with pytest.raises(ValueError):
        build_panel_volume(**kwargs)


def test_rad_length_func_from_cube() -> None:
    vol = build_panel_volume()
    cube = np.arange(600, dtype=np.float32).reshape(6, 10, 10) + 1
    vol.load_rad_length(rad_length_func_from_cube(cube, z_bottom=0.2, size=0.1))
    np.testing.assert_array_equal(vol.get_rad_cube().numpy(), cube)
    with pytest.raises(ValueError, match="shape"):
        vol.load_rad_length(rad_length_func_from_cube(cube[:, :5], z_bottom=0.2, size=0.1))
    with pytest.raises(ValueError, match="no X0 slice"):
        vol.load_rad_length(rad_length_func_from_cube(cube[:3], z_bottom=0.2, size=0.1))
    with pytest.raises(ValueError, match="shape"):
        rad_length_func_from_cube(torch.ones(10, 10), z_bottom=0.0, size=0.1)
