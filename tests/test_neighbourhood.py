"""Neighbourhood means on voxel grids of any size, and the inferrers on passive blocks thinner than 3 voxels (where
``avg_pool3d(padding=1)`` refuses the grid)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tomopt_lib.core import X0
from tomopt_lib.inference import ScatterBatch
from tomopt_lib.inference.neighbourhood import bilateral_neighbourhood_mean, neighbourhood_mean
from tomopt_lib.inference.path_uncertainty import stencil_spectrum
from tomopt_lib.inference.volume import DenseBlockClassifierFromX0s, PanelX0Inferrer, PathX0Inferrer
from tomopt_lib.muon.generation import MuonGenerator2016
from tomopt_lib.muon.muon_batch import MuonBatch
from tomopt_lib.volume.builders import build_panel_volume


def _brute(x: torch.Tensor) -> torch.Tensor:
    """The definition, voxel by voxel: mean over the in-grid voxels within one step along every axis."""
    z, a, b = x.shape
    out = torch.empty_like(x)
    for i in range(z):
        for j in range(a):
            for k in range(b):
                out[i, j, k] = x[max(0, i - 1) : i + 2, max(0, j - 1) : j + 2, max(0, k - 1) : k + 2].mean()
    return out


@pytest.mark.parametrize("shape", [(1, 1, 1), (2, 10, 10), (1, 4, 3), (3, 3, 3), (6, 10, 10), (5, 2, 7)])
def test_neighbourhood_mean_is_the_definition(shape: tuple[int, int, int]) -> None:
    x = torch.rand(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(neighbourhood_mean(x), _brute(x), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(neighbourhood_mean(x[None])[0], _brute(x), rtol=1e-12, atol=1e-12)
    if min(shape) >= 3:  # where torch's own pooling works, the same numbers
        ref = F.avg_pool3d(x[None], 3, stride=1, padding=1, count_include_pad=False)[0]
        torch.testing.assert_close(neighbourhood_mean(x), ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("extent", [(1, 5), (3, 1), (1, 3), (5, 3)])
def test_neighbourhood_mean_box_extent(extent: tuple[int, int]) -> None:
    """A box of (n_z, n_xy) voxels: brute force; (1, n) never mixes layers."""
    x = torch.rand(4, 6, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    hz, hxy = extent[0] // 2, extent[1] // 2
    ref = torch.empty_like(x)
    for i in range(4):
        for j in range(6):
            for k in range(5):
                sl = x[max(0, i - hz) : i + hz + 1, max(0, j - hxy) : j + hxy + 1, max(0, k - hxy) : k + hxy + 1]
                ref[i, j, k] = sl.mean()
    torch.testing.assert_close(neighbourhood_mean(x, extent), ref, rtol=1e-12, atol=1e-12)
    if extent[0] == 1:
        layered = torch.arange(4, dtype=torch.float64)[:, None, None].expand(4, 6, 5)
        torch.testing.assert_close(neighbourhood_mean(layered, extent), layered)


@pytest.mark.parametrize("bad", [(2, 3), (3, 0), (3,), (1.5, 3), "33"])
def test_neighbourhood_mean_bad_extent(bad: object) -> None:
    with pytest.raises(ValueError, match="odd integers"):
        neighbourhood_mean(torch.ones(2, 3, 3), bad)  # type: ignore[arg-type]


def test_path_inferrer_names_a_bad_prior_extent() -> None:
    with pytest.raises(ValueError, match="prior_extent must be a pair"):
        PathX0Inferrer(build_panel_volume(), prior_extent=(1, 4))
    with pytest.raises(ValueError, match="shrink_extent must be a pair"):
        PathX0Inferrer(build_panel_volume(), shrink_extent=(2, 3))


@pytest.mark.parametrize("extent", [(3, 3), (1, 5)])
def test_stencil_spectrum_is_the_box_mean_on_a_periodic_lattice(extent: tuple[int, int]) -> None:
    """The eigenvalue at each listed wave number is the box mean applied to the plane wave cos(q . r), at the origin."""
    a = stencil_spectrum(torch.float64, torch.device("cpu"), extent).reshape(8, 8, 8)
    q = (torch.arange(8, dtype=torch.float64) + 0.5) * torch.pi / 8
    for iz, ix, iy in [(0, 0, 0), (3, 5, 1), (7, 2, 6)]:
        hz, hxy = extent[0] // 2, extent[1] // 2
        dz = torch.arange(-hz, hz + 1, dtype=torch.float64)[:, None, None]
        dxy = torch.arange(-hxy, hxy + 1, dtype=torch.float64)
        wave = torch.cos(q[iz] * dz + q[ix] * dxy[None, :, None] + q[iy] * dxy[None, None, :])
        assert float(a[iz, ix, iy]) == pytest.approx(float(wave.mean()), abs=1e-12)


def test_neighbourhood_mean_gradient_and_bad_shape() -> None:
    x = torch.rand(2, 2, 2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(neighbourhood_mean, (x,))
    with pytest.raises(ValueError, match="Z, X, Y"):
        neighbourhood_mean(torch.ones(4, 4))


def test_bilateral_mean_limits_and_edges() -> None:
    """Wide widths give the plain neighbourhood mean; a step far larger than the widths is not averaged across (a lead
    block's ln rho next to beryllium's), while values within the widths still are; brute force on a voxel."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(3, 4, 5, generator=g, dtype=torch.float64)
    wide = bilateral_neighbourhood_mean(x, torch.full_like(x, 1e6))
    assert torch.allclose(wide, neighbourhood_mean(x), atol=1e-9)
    step = torch.zeros(3, 4, 5, dtype=torch.float64)
    step[:, :2] = 4.1  # ln(rho_lead / rho_beryllium)
    narrow = bilateral_neighbourhood_mean(step, torch.full_like(step, 0.3))
    assert torch.allclose(narrow, step, atol=1e-12)  # exp(-4.1^2 / 0.18): no mixing
    t = torch.rand(3, 4, 5, generator=g, dtype=torch.float64) + 0.5
    m = bilateral_neighbourhood_mean(x, t)
    v = (1, 2, 3)
    num = den = 0.0
    for dz in (-1, 0, 1):
        for dx in (-1, 0, 1):
            for dy in (-1, 0, 1):
                u = (v[0] + dz, v[1] + dx, v[2] + dy)
                if 0 <= u[0] < 3 and 0 <= u[1] < 4 and 0 <= u[2] < 5:
                    w = float(torch.exp(-((x[u] - x[v]) ** 2) / (t[v] ** 2 + t[u] ** 2)))
                    num, den = num + w * float(x[u]), den + w
    assert float(m[v]) == pytest.approx(num / den, rel=1e-12)
    with pytest.raises(ValueError, match="shape"):
        bilateral_neighbourhood_mean(x, t[0])


@pytest.mark.parametrize("n_layers", [1, 2])
def test_inference_on_thin_passive_blocks(n_layers: int) -> None:
    """A passive block of 1 or 2 layers: PoCA and path inference (neighbourhood priors) and the dense-block classifier's
    average pooling give finite predictions and gradients (they raised inside avg_pool3d before)."""
    vol = build_panel_volume(passive_n_layers=n_layers, res=1e4, eff=0.9, panel_span=1.0)
    vol.record_xyz_hist = False
    vol.load_rad_length(lambda *, z, lw, size: torch.full((10, 10), X0["iron"]))
    rng = torch.Generator().manual_seed(3)
    gen = MuonGenerator2016.from_volume(vol, fixed_mom=3.0, min_angle=0.0)
    mu = MuonBatch(gen(2000, generator=rng), init_z=vol.h)
    vol(mu, generator=rng)
    sb = ScatterBatch(mu, vol)
    inf = PanelX0Inferrer(vol)
    inf.add_scatters(sb)
    pred = inf.get_prediction()
    assert pred.shape == (n_layers, 10, 10) and torch.isfinite(pred).all()
    assert 0.5 < float(pred.median() / X0["iron"]) < 2.0  # and calibrated: a thin iron slab reads as iron
    path = PathX0Inferrer(vol)  # its smoothness prior and final shrinkage average neighbourhoods too
    path.add_scatters(sb)
    pred_path = path.get_prediction()
    assert pred_path.shape == (n_layers, 10, 10) and torch.isfinite(pred_path).all()
    assert 0.5 < float(pred_path.median() / X0["iron"]) < 2.0
    clf = DenseBlockClassifierFromX0s(5, PanelX0Inferrer, vol)
    clf.add_scatters(sb)
    p = clf.get_prediction()
    assert p.shape == (1, 1) and 0 < float(p) < 1
    p.sum().backward()
    g = vol.get_detectors()[0].panels[0].xy.grad
    assert g is not None and torch.isfinite(g).all()
