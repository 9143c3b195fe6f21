"""Muon generators: flux formulas, sampled marginals against numerically integrated fluxes, ranges, seeding."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate, stats

from tomopt_lib.core import MUON_MASS
from tomopt_lib.muon.generation import AbsMuonGenerator, MuonGenerator2015, MuonGenerator2016
from tomopt_lib.volume.builders import build_panel_volume

N_STAT = 200_000
THETA_MAX = 70 * math.pi / 180


# Independent NumPy transcriptions of the two published models (intensity per sr, without cos*sin factors).
def guan2015_intensity(e: np.ndarray, t: np.ndarray) -> np.ndarray:
    p1, p2, p3, p4, p5 = 0.102573, -0.068287, 0.958633, 0.0407253, 0.817285
    c = np.cos(t)
    cs = np.sqrt((c**2 + p1**2 + p2 * c**p3 + p4 * c**p5) / (1 + p1**2 + p2 + p4))
    return 0.14 * (e * (1 + 3.64 / (e * cs**1.29))) ** -2.7 * (1 / (1 + 1.1 * e * cs / 115) + 0.054 / (1 + 1.1 * e * cs / 850))


def shukla2016_intensity(e: np.ndarray, t: np.ndarray) -> np.ndarray:
    r, n, e0, ec, eps, i0 = 174.0, 3.0, 3.87, 0.5, 854.0, 88.0
    c = np.cos(t)
    d = np.sqrt(r**2 * c**2 + 2 * r + 1) - r * c
    return i0 * (n - 1) * (e0 + ec) ** (n - 1) * (e0 + e) ** -n / (1 + e / eps) * d ** -(n - 1)


MODELS = [(MuonGenerator2015, guan2015_intensity), (MuonGenerator2016, shukla2016_intensity)]


def plane_flux(intensity, e, t):
    """Flux per GeV per rad of zenith angle through a horizontal plane."""
    return intensity(e, t) * np.cos(t) * np.sin(t)


def _bin_integrals(f2, edges, other_range):
    """Integrals of f2(x, y) over [edges_k, edges_k+1] x other_range (nested scipy quad_vec, vectorised over bins)."""
    lo, hi = np.asarray(edges[:-1]), np.asarray(edges[1:])

    def inner(x):  # x: (n_bins,) -> integral over y for each x
        return integrate.quad_vec(lambda y: f2(x, y), *other_range, epsrel=1e-9)[0]

    return integrate.quad_vec(lambda s: (hi - lo) * inner(lo + s * (hi - lo)), 0.0, 1.0, epsrel=1e-8)[0]


def _chi2_pvalue(counts: np.ndarray, probs: np.ndarray) -> float:
    expected = probs / probs.sum() * counts.sum()
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    return float(stats.chi2.sf(chi2, len(counts) - 1))


@pytest.fixture(scope="module", params=MODELS, ids=["2015", "2016"])
def model(request):
    cls, intensity = request.param
    gen = cls((0.0, 1.0), (0.0, 1.0))
    muons = gen(N_STAT, generator=torch.Generator().manual_seed(7))
    return cls, intensity, gen, muons


# ---------------------------------------------------------------- flux formulas
@pytest.mark.parametrize("cls,intensity", MODELS)
def test_flux_matches_published_formula(cls, intensity):
    gen = cls((0.0, 1.0), (0.0, 1.0), n_bins_energy=4, n_bins_theta=4)
    e = np.geomspace(0.5, 500, 13)[:, None]
    t = np.linspace(0.01, 1.5, 11)[None, :]
    ours = gen.flux(torch.tensor(e), torch.tensor(t)).numpy()
    np.testing.assert_allclose(ours, plane_flux(intensity, e, t), rtol=1e-10)
    assert gen.flux(2.0, 0.0).item() == 0.0  # sin(0): no solid angle at the zenith


@pytest.mark.parametrize("intensity,to_m2", [(guan2015_intensity, 1e4), (shukla2016_intensity, 1.0)])
def test_vertical_intensity_and_cos2_law(intensity, to_m2):
    """PDG: vertical intensity above 1 GeV ~ 70 m^-2 s^-1 sr^-1, angular dependence ~ cos^2(theta)."""
    i_vert = integrate.quad(lambda e: intensity(e, 0.0), 1.0, np.inf)[0] * to_m2
    assert 55 < i_vert < 85
    ratio = integrate.quad(lambda e: intensity(e, math.pi / 3), 1.0, np.inf)[0] * to_m2 / i_vert
    assert 0.2 < ratio < 0.33  # cos^2(60 deg) = 0.25


def test_shukla_normalisation_constant():
    assert MuonGenerator2016.N == pytest.approx(38.1938, abs=1e-4)
    assert MuonGenerator2016.epinv == pytest.approx(0.00117096018735363, rel=1e-12)


# ---------------------------------------------------------------- samples
def test_shapes_and_ranges(model):
    _, _, gen, muons = model
    assert muons.shape == (N_STAT, 5) and muons.dtype == torch.float32
    x, y, p, theta, phi = muons.T
    assert 0 <= x.min() and x.max() <= 1 and 0 <= y.min() and y.max() <= 1
    p_lo, p_hi = math.sqrt(0.5**2 - MUON_MASS**2), math.sqrt(500**2 - MUON_MASS**2)
    assert p_lo * (1 - 1e-6) <= p.min() and p.max() <= p_hi * (1 + 1e-6)
    assert 0 <= theta.min() and theta.max() <= THETA_MAX * (1 + 1e-6)
    assert 0 <= phi.min() and phi.max() < 2 * math.pi
    # uniform x, y, phi
    for col, lo, hi in ((x, 0, 1), (y, 0, 1), (phi, 0, 2 * math.pi)):
        assert stats.kstest(col.double().numpy(), "uniform", args=(lo, hi - lo)).pvalue > 1e-3
    assert 2.0 < float(p.median()) < 6.0  # few-GeV median momentum at sea level


def test_theta_marginal_matches_flux(model):
    _, intensity, _, muons = model
    edges = np.linspace(0.0, THETA_MAX, 38)  # not aligned with the 200 table bins
    probs = _bin_integrals(lambda t, e: plane_flux(intensity, e, t), edges, (0.5, 500.0))
    counts = np.histogram(muons[:, 3].double().numpy(), bins=edges)[0]
    assert _chi2_pvalue(counts, probs) > 1e-3


def test_momentum_marginal_matches_flux(model):
    _, intensity, _, muons = model
    p_edges = np.geomspace(math.sqrt(0.5**2 - MUON_MASS**2), math.sqrt(500**2 - MUON_MASS**2), 31)
    e_edges = np.sqrt(p_edges**2 + MUON_MASS**2)
    e_edges[0], e_edges[-1] = 0.5, 500.0
    probs = _bin_integrals(lambda e, t: plane_flux(intensity, e, t), e_edges, (0.0, THETA_MAX))
    counts = np.histogram(muons[:, 2].double().numpy(), bins=p_edges)[0]
    keep = probs / probs.sum() * counts.sum() > 20  # chi-square validity
    assert keep.sum() >= 25
    assert _chi2_pvalue(counts[keep], probs[keep]) > 1e-3


def test_samples_are_not_bin_centres(model):
    _, _, gen, muons = model
    theta = muons[:10_000, 3].double()
    assert len(torch.unique(theta)) > 9_900
    centres = 0.5 * (gen._t_edges[1:] + gen._t_edges[:-1])
    dist = (theta[:, None] - centres[None, :]).abs().min(1).values
    assert (dist < 1e-6).float().mean() < 0.01
    # position inside the theta bins is spread over the whole bin
    frac = ((theta - gen.theta_range[0]) / (gen._t_edges[1] - gen._t_edges[0])) % 1.0
    assert np.histogram(frac.numpy(), bins=10, range=(0, 1))[0].min() > 800


def test_fixed_momentum_keeps_theta_distribution():
    gen = MuonGenerator2016((0.0, 1.0), (0.0, 1.0), fixed_mom=5.0)
    muons = gen(50_000, generator=torch.Generator().manual_seed(3))
    assert torch.all(muons[:, 2] == 5.0)
    edges = np.linspace(0.0, THETA_MAX, 25)
    probs = _bin_integrals(lambda t, e: plane_flux(shukla2016_intensity, e, t), edges, (0.5, 500.0))
    counts = np.histogram(muons[:, 3].double().numpy(), bins=edges)[0]
    assert _chi2_pvalue(counts, probs) > 1e-3


def test_custom_ranges_and_seeding():
    gen = MuonGenerator2015((-2.0, 3.0), (5.0, 6.0), energy_range=(10.0, 20.0), theta_range=(0.2, 0.4), device="cpu")
    a = gen(5000, generator=torch.Generator().manual_seed(11))
    assert a.device == torch.device("cpu")
    b = gen.generate_set(5000, generator=torch.Generator().manual_seed(11))
    c = gen(5000, generator=torch.Generator().manual_seed(12))
    assert torch.equal(a, b) and not torch.equal(a, c)
    x, y, p, theta, _ = a.T
    assert -2 <= x.min() and x.max() <= 3 and 5 <= y.min() and y.max() <= 6
    e = torch.sqrt(p.double() ** 2 + MUON_MASS**2)
    assert 10 * (1 - 1e-6) <= e.min() and e.max() <= 20 * (1 + 1e-6)
    assert 0.2 * (1 - 1e-6) <= theta.min() and theta.max() <= 0.4 * (1 + 1e-6)
    assert gen(0).shape == (0, 5)


def test_global_rng_without_generator():
    gen = MuonGenerator2016((0.0, 1.0), (0.0, 1.0), n_bins_energy=20, n_bins_theta=20)
    torch.manual_seed(5)
    a = gen(100)
    torch.manual_seed(5)
    assert torch.equal(a, gen(100))


def test_abstract_generator():
    with pytest.raises(TypeError):
        AbsMuonGenerator((0, 1), (0, 1))


@pytest.mark.parametrize(
    "kwargs,name",
    [
        (dict(x_range=(1.0, 0.0)), "x_range"),
        (dict(y_range=(0.0, float("nan"))), "y_range"),
        (dict(energy_range=(0.05, 10.0)), "energy_range"),
        (dict(energy_range=(10.0, 1.0)), "energy_range"),
        (dict(theta_range=(0.0, math.pi / 2)), "theta_range"),
        (dict(theta_range=(-0.1, 1.0)), "theta_range"),
        (dict(fixed_mom=-1.0), "fixed_mom"),
        (dict(n_bins_theta=0), "n_bins_theta"),
    ],
)
def test_bad_inputs(kwargs, name):
    args = dict(x_range=(0.0, 1.0), y_range=(0.0, 1.0))
    args.update(kwargs)
    with pytest.raises(ValueError, match=name):
        MuonGenerator2016(**args)
    with pytest.raises(ValueError, match="n_muons"):
        MuonGenerator2016((0.0, 1.0), (0.0, 1.0), n_bins_theta=5, n_bins_energy=5)(-1)


# ---------------------------------------------------------------- from_volume
def _volume():
    """TomOpt's test geometry: 1 x 1 m footprint, passive block z in [0.2, 0.8] m of 0.1 m voxels, top h = 1 m."""
    vol = build_panel_volume()
    assert float(vol.h) == pytest.approx(1.0) and vol.passive_size == pytest.approx(0.1)
    return vol


def _enters_box(muons, h, lw, z_lo, z_hi):
    """Straight-line (slab) test: does the track started at z=h cross the box [0,lw0]x[0,lw1]x[z_lo,z_hi]?"""
    x, y, _, theta, phi = muons.double().T
    s_lo, s_hi = torch.full_like(x, h - z_hi), torch.full_like(x, h - z_lo)  # depth below h
    for pos, slope, size in ((x, torch.tan(theta) * torch.cos(phi), lw[0]), (y, torch.tan(theta) * torch.sin(phi), lw[1])):
        safe = torch.where(slope.abs() < 1e-12, torch.full_like(slope, 1e-12), slope)
        a, b = (0 - pos) / safe, (size - pos) / safe
        lo, hi = torch.minimum(a, b), torch.maximum(a, b)
        flat = slope.abs() < 1e-12
        inside = (pos >= 0) & (pos <= size)
        lo = torch.where(flat, torch.where(inside, -torch.inf, torch.inf), lo)
        hi = torch.where(flat, torch.where(inside, torch.inf, -torch.inf), hi)
        s_lo, s_hi = torch.maximum(s_lo, lo), torch.minimum(s_hi, hi)
    return s_lo <= s_hi


@pytest.mark.parametrize("cls", [MuonGenerator2015, MuonGenerator2016])
def test_from_volume(cls):
    vol = _volume()
    gen = cls.from_volume(vol, fixed_mom=None)
    d = math.tan(math.pi / 12) * (1.0 - 0.2 + 0.1)
    assert gen.x_range == pytest.approx((-d, 1 + d)) and gen.y_range == pytest.approx((-d, 1 + d))
    muons = gen(20_000, generator=torch.Generator().manual_seed(2))
    assert (muons[:, 0] < 0).any() and (muons[:, 0] > 1).any()
    hit = _enters_box(muons, 1.0, (1.0, 1.0), 0.2, 0.8)
    assert hit.float().mean() > 0.5
    # widening matters: many of the muons that start outside the footprint still reach the passive block
    outside = (muons[:, 0] < 0) | (muons[:, 0] > 1) | (muons[:, 1] < 0) | (muons[:, 1] > 1)
    assert hit[outside].float().mean() > 0.1
    assert cls.from_volume(vol, min_angle=0.0).x_range == pytest.approx((0.0, 1.0))
    with pytest.raises(ValueError, match="min_angle"):
        cls.from_volume(vol, min_angle=math.pi / 2)
