"""MuonBatch: state layout, geometry of propagation, hits bookkeeping, angular updates and conversions."""

from __future__ import annotations

import math

import pytest
import torch

from tomopt_lib.muon.muon_batch import MuonBatch

N = 1000


def _random_state(n: int = N, seed: int = 0, theta_max: float = 70 * math.pi / 180, dtype=torch.float32) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    u = torch.rand(n, 5, generator=g, dtype=torch.float64)
    x, y = u[:, 0], u[:, 1]
    p = 0.5 + 50 * u[:, 2]
    theta = theta_max * u[:, 3]
    phi = 2 * math.pi * u[:, 4]
    return torch.stack([x, y, p, theta, phi], 1).to(dtype)


@pytest.fixture
def batch() -> MuonBatch:
    return MuonBatch(_random_state(), init_z=1.0)


def _angle_between(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Numerically stable angle between unit vectors: 2 atan2(|a - b|, |a + b|)."""
    return 2 * torch.atan2((a - b).norm(dim=-1), (a + b).norm(dim=-1))


# ---------------------------------------------------------------- layout and accessors
def test_columns_and_properties(batch):
    src = _random_state()
    assert len(batch) == N and batch.muons.shape == (N, 6)
    assert torch.equal(batch.x, src[:, 0]) and torch.equal(batch.y, src[:, 1])
    assert torch.all(batch.z == 1.0)
    assert torch.equal(batch.mom, src[:, 2]) and torch.equal(batch.reco_mom, src[:, 2])
    assert torch.equal(batch.theta, src[:, 3]) and torch.equal(batch.phi, src[:, 4])
    assert torch.equal(batch.xy, batch.muons[:, :2]) and torch.equal(batch.xyz, batch.muons[:, :3])
    for i, name in enumerate(["x", "y", "z", "mom", "theta", "phi"]):
        assert torch.equal(getattr(batch, name), batch.muons[:, i])
    assert (MuonBatch.x_dim, MuonBatch.y_dim, MuonBatch.z_dim, MuonBatch.p_dim, MuonBatch.th_dim, MuonBatch.ph_dim) == (
        0,
        1,
        2,
        3,
        4,
        5,
    )
    assert torch.allclose(batch.theta_x, torch.atan(torch.tan(src[:, 3]) * torch.cos(src[:, 4])))
    assert torch.allclose(batch.theta_y, torch.atan(torch.tan(src[:, 3]) * torch.sin(src[:, 4])))
    assert torch.equal(batch.theta_xy, torch.stack([batch.theta_x, batch.theta_y], 1))
    assert torch.allclose(batch.direction.norm(dim=1), torch.ones(N))
    assert torch.all(batch.direction[:, 2] < 0)  # travelling downwards
    assert batch.device == torch.device("cpu")


def test_per_muon_init_z_and_dtype():
    z0 = torch.linspace(0, 1, 10)
    mu = MuonBatch(_random_state(10, dtype=torch.float64), init_z=z0)
    assert mu.muons.dtype == torch.float64 and torch.allclose(mu.z, z0.double())
    with pytest.raises(ValueError):
        MuonBatch(torch.zeros(5, 4), init_z=1.0)


def test_state_is_not_settable(batch):
    for name in ["x", "y", "z", "xy", "xyz", "mom", "theta", "phi", "muons", "theta_x", "theta_y"]:
        with pytest.raises((AttributeError, NotImplementedError)):
            setattr(batch, name, torch.zeros(N))


# ---------------------------------------------------------------- motion
def test_propagate_dz_geometry(batch):
    start = batch.xyz.clone()
    theta, phi = batch.theta.clone(), batch.phi.clone()
    batch.propagate_dz(0.3)
    assert torch.allclose(batch.z, torch.full((N,), 0.7))
    assert torch.allclose(batch.x, start[:, 0] + 0.3 * torch.tan(theta) * torch.cos(phi), atol=1e-6)
    assert torch.allclose(batch.y, start[:, 1] + 0.3 * torch.tan(theta) * torch.sin(phi), atol=1e-6)
    # the step is along the direction of flight and its length is dz / cos(theta)
    step = batch.xyz - start
    assert torch.allclose(step.norm(dim=1), 0.3 / torch.cos(theta), rtol=1e-5)
    assert torch.allclose(step / step.norm(dim=1, keepdim=True), batch.direction, atol=1e-5)
    assert torch.equal(batch.theta, theta) and torch.equal(batch.phi, phi)  # no scattering


def test_propagate_dz_per_muon_and_mask(batch):
    dz = torch.linspace(0, 0.5, N)
    mask = torch.arange(N) % 2 == 0
    start = batch.xyz.clone()
    batch.propagate_dz(dz, mask=mask)
    assert torch.allclose(batch.z[mask], 1.0 - dz[mask])
    assert torch.equal(batch.xyz[~mask], start[~mask])


def test_propagate_d_geometry(batch):
    start, d0 = batch.xyz.clone(), batch.direction.clone()
    batch.propagate_d(0.25)
    assert torch.allclose((batch.xyz - start).norm(dim=1), torch.full((N,), 0.25), atol=1e-6)
    assert torch.allclose(batch.xyz - start, 0.25 * d0, atol=1e-6)
    assert torch.allclose(batch.z, 1.0 - 0.25 * torch.cos(batch.theta), atol=1e-6)
    mask = batch.x > 0.5
    before = batch.xyz.clone()
    batch.propagate_d(torch.full((N,), 0.1), mask=mask)
    assert torch.equal(batch.xyz[~mask], before[~mask])
    assert torch.allclose((batch.xyz - before)[mask].norm(dim=1), torch.full((int(mask.sum()),), 0.1), atol=1e-6)


def test_scatter_dxyz(batch):
    start = batch.muons.clone()
    dx, dy = torch.full((N,), 0.01), torch.full((N,), -0.02)
    batch.scatter_dxyz(dx_vol=dx, dy_vol=dy)
    assert torch.allclose(batch.x, start[:, 0] + 0.01) and torch.allclose(batch.y, start[:, 1] - 0.02)
    assert torch.equal(batch.z, start[:, 2]) and torch.equal(batch.muons[:, 3:], start[:, 3:])
    mask = torch.zeros(N, dtype=torch.bool)
    mask[:10] = True
    batch.scatter_dxyz(dz_vol=torch.full((N,), -0.1), mask=mask)
    assert torch.allclose(batch.z[:10], torch.full((10,), 0.9)) and torch.all(batch.z[10:] == 1.0)


def test_xy_mask(batch):
    m = batch.get_xy_mask((0.2, 0.3), (0.8, 0.9))
    expect = (batch.x >= 0.2) & (batch.x < 0.8) & (batch.y >= 0.3) & (batch.y < 0.9)
    assert torch.equal(m, expect)
    assert torch.equal(batch.get_xy_mask(None, (0.5, 0.5)), (batch.x < 0.5) & (batch.y < 0.5))
    assert batch.get_xy_mask(None, None).all()


# ---------------------------------------------------------------- hits
def _add_hits(mu: MuonBatch, group: str, n: int) -> None:
    for i in range(n):
        mu.append_hits({"reco_xyz": mu.xyz + i, "eff": torch.full((len(mu), 1), float(i))}, group)


def test_hits_append_stack_filter(batch):
    _add_hits(batch, "above", 4)
    _add_hits(batch, "station_7", 2)
    assert batch.hit_groups == ["above", "station_7"]
    assert batch.n_hits("above") == 4 and batch.n_hits("station_7") == 2 and batch.n_hits("nowhere") == 0
    hits = batch.get_hits()
    assert hits["above"]["reco_xyz"].shape == (N, 4, 3) and hits["above"]["eff"].shape == (N, 4, 1)
    assert hits["station_7"]["reco_xyz"].shape == (N, 2, 3)
    assert torch.allclose(hits["above"]["reco_xyz"][:, 3], batch.xyz + 3)
    inside = batch.get_xy_mask((0, 0), (0.5, 0.5))
    assert torch.equal(batch.get_hits((0, 0), (0.5, 0.5))["above"]["reco_xyz"], hits["above"]["reco_xyz"][inside])
    keep = batch.x > 0.3
    kept_xyz = batch.xyz[keep].clone()
    batch.filter_muons(keep)
    assert len(batch) == int(keep.sum()) and torch.equal(batch.xyz, kept_xyz)
    hits = batch.get_hits()
    assert hits["above"]["reco_xyz"].shape == (len(batch), 4, 3)
    assert torch.allclose(hits["above"]["reco_xyz"][:, 0], kept_xyz)
    assert torch.equal(batch._keep_mask, keep)


def test_snapshot_and_copy(batch):
    _add_hits(batch, "below", 1)
    batch.snapshot_xyz()
    batch.propagate_dz(0.5)
    batch.snapshot_xyz()
    assert len(batch.xyz_hist) == 2 and torch.allclose(batch.xyz_hist[0][:, 2], torch.ones(N))
    cp = batch.copy()
    assert torch.equal(cp.muons, batch.muons) and cp.hit_groups == [] and cp.xyz_hist == []
    cp.propagate_dz(0.1)
    assert not torch.equal(cp.z, batch.z)  # independent storage


def test_dtheta_helpers(batch):
    ref = batch.theta + 0.1
    assert torch.allclose(batch.dtheta(ref), torch.full((N,), 0.1), atol=1e-6)
    assert torch.allclose(batch.dtheta_x(batch.theta_x - 0.2), torch.full((N,), 0.2), atol=1e-6)
    assert torch.allclose(batch.dtheta_y(batch.theta_y + 0.3), torch.full((N,), 0.3), atol=1e-6)


# ---------------------------------------------------------------- angular updates
def test_scatter_dtheta_xy(batch):
    tx, ty = batch.theta_x.clone(), batch.theta_y.clone()
    d = torch.full((N,), 0.01)
    batch.scatter_dtheta_xy(dtheta_x_vol=d, dtheta_y_vol=-d)
    assert len(batch) == N
    assert torch.allclose(batch.theta_x, tx + 0.01, atol=1e-5) and torch.allclose(batch.theta_y, ty - 0.01, atol=1e-5)


def test_scatter_dtheta_xy_removes_upwards():
    mu = MuonBatch(torch.tensor([[0.0, 0.0, 1.0, 0.1, 0.0], [0.0, 0.0, 1.0, 0.1, 0.0]]), init_z=1.0)
    mu.scatter_dtheta_xy(dtheta_x_vol=torch.tensor([0.0, 2.0]))
    assert len(mu) == 1 and mu.upwards_muons.shape == (1, 6)
    assert torch.equal(mu._keep_mask, torch.tensor([True, False]))


def test_scatter_dtheta_dphi_wraps_and_removes():
    src = torch.tensor(
        [
            [0.0, 0.0, 5.0, 0.2, 1.0],  # theta 0.2 -> -0.1: folded to 0.1 with phi + pi
            [0.0, 0.0, 5.0, 0.5, 6.0],  # phi 6 -> 6.5: wrapped to 6.5 - 2 pi
            [0.0, 0.0, 5.0, 1.0, 0.0],  # theta 1.0 -> 1.7 > pi/2: removed
            [0.0, 0.0, 5.0, 1.0, 0.0],
        ]  # theta 1.0 -> 3.5 > pi: wrapped, still upwards: removed
    )
    mu = MuonBatch(src, init_z=0.0)
    mu.scatter_dtheta_dphi(dtheta_vol=torch.tensor([-0.3, 0.0, 0.7, 2.5]), dphi_vol=torch.tensor([0.0, 0.5, 0.0, 0.0]))
    assert len(mu) == 2 and mu.upwards_muons.shape == (2, 6)
    assert torch.equal(mu._keep_mask, torch.tensor([True, True, False, False]))
    assert mu.theta[0] == pytest.approx(0.1, abs=1e-6) and mu.phi[0] == pytest.approx(1.0 + math.pi, abs=1e-6)
    assert mu.theta[1] == pytest.approx(0.5, abs=1e-6) and mu.phi[1] == pytest.approx(6.5 - 2 * math.pi, abs=1e-6)
    assert torch.all((mu.phi >= 0) & (mu.phi < 2 * math.pi))
    # the removed muons are recorded with their folded angles: theta 3.5 -> 2 pi - 3.5 with phi + pi
    up = mu.upwards_muons
    assert up[1, 4] == pytest.approx(2 * math.pi - 3.5, abs=1e-6) and up[1, 5] == pytest.approx(math.pi, abs=1e-6)
    # folding theta through zero keeps the physical direction continuous
    expected = MuonBatch.direction_from_theta_phi(torch.tensor(-0.1), torch.tensor(1.0))
    assert torch.allclose(mu.direction[0], expected, atol=1e-6)


def test_deflect_rotation_angle():
    mu = MuonBatch(_random_state(seed=3, dtype=torch.float64), init_z=1.0)
    g = torch.Generator().manual_seed(4)
    d1 = 0.05 * torch.randn(N, generator=g, dtype=torch.float64)
    d2 = 0.05 * torch.randn(N, generator=g, dtype=torch.float64)
    before = mu.direction.clone()
    mu.deflect(d1, d2)
    assert len(mu) == N
    assert torch.allclose(_angle_between(before, mu.direction), torch.hypot(d1, d2), atol=1e-10)


def test_deflect_axes():
    """dtheta_1 turns the track in its vertical plane (theta changes, phi does not); dtheta_2 is transverse."""
    src = _random_state(200, seed=5, dtype=torch.float64)
    src[:, 3] = src[:, 3].clamp(0.2, 1.0)
    mu = MuonBatch(src, init_z=1.0)
    theta, phi = mu.theta.clone(), mu.phi.clone()
    mu.deflect(torch.full((200,), 0.05, dtype=torch.float64), torch.zeros(200, dtype=torch.float64))
    assert torch.allclose(mu.theta, theta + 0.05, atol=1e-10) and torch.allclose(mu.phi, phi, atol=1e-10)
    mu2 = MuonBatch(src, init_z=1.0)
    d_before, e_phi = mu2.direction.clone(), torch.stack([-torch.sin(phi), torch.cos(phi), torch.zeros_like(phi)], 1)
    mu2.deflect(torch.zeros(200, dtype=torch.float64), torch.full((200,), 0.05, dtype=torch.float64))
    change = mu2.direction - d_before
    assert torch.allclose((change * e_phi).sum(1), torch.full((200,), math.sin(0.05), dtype=torch.float64), atol=1e-10)
    # a purely transverse rotation keeps the vertical component at cos(a) cos(theta) (theta changes at 2nd order only)
    assert torch.allclose(mu2.theta, torch.acos(math.cos(0.05) * torch.cos(theta)), atol=1e-10)


def test_deflect_precision_near_vertical_float32():
    """Small kicks of near-vertical float32 tracks keep ~1e-7 rad precision (acos(-d_z) would lose ~1e-4 rad)."""
    theta = torch.tensor([0.0, 1e-4, 1e-3, 0.3])
    src = torch.stack([torch.zeros(4), torch.zeros(4), torch.ones(4), theta, torch.full((4,), 0.7)], 1)
    mu = MuonBatch(src, init_z=0.0)
    mu.deflect(torch.full((4,), 2e-4), torch.zeros(4))
    assert torch.allclose(mu.theta.double(), theta.double() + 2e-4, atol=2e-7, rtol=0)
    assert torch.allclose(mu.phi[1:], torch.full((3,), 0.7), atol=1e-5)


def test_deflect_vertical_muon_and_mask_and_upwards():
    src = torch.tensor([[0.0, 0.0, 1.0, 0.0, 0.3], [0.0, 0.0, 1.0, 1.2, 0.0], [0.0, 0.0, 1.0, 0.4, 2.0]], dtype=torch.float64)
    mu = MuonBatch(src, init_z=0.0)
    mu.deflect(
        torch.tensor([0.1, 0.5, 0.3], dtype=torch.float64),
        torch.tensor([0.0, 0.0, 0.0], dtype=torch.float64),
        mask=torch.tensor([True, True, False]),
    )
    assert len(mu) == 2 and mu.upwards_muons.shape == (1, 6)  # 1.2 + 0.5 > pi/2
    assert mu.theta[0] == pytest.approx(0.1) and mu.phi[0] == pytest.approx(0.3)
    assert mu.theta[1] == pytest.approx(0.4) and mu.phi[1] == pytest.approx(2.0)  # masked out: unchanged


# ---------------------------------------------------------------- conversions
@pytest.mark.parametrize("theta_max", [70 * math.pi / 180, math.pi / 2 - 1e-3])
def test_theta_phi_theta_xy_round_trip(theta_max):
    src = _random_state(5000, seed=6, theta_max=theta_max, dtype=torch.float64)
    theta, phi = src[:, 3], src[:, 4]
    tx, ty = MuonBatch.theta_x_from_theta_phi(theta, phi), MuonBatch.theta_y_from_theta_phi(theta, phi)
    assert torch.all(tx.abs() < math.pi / 2) and torch.all(ty.abs() < math.pi / 2)
    theta2, phi2 = MuonBatch.theta_from_theta_xy(tx, ty), MuonBatch.phi_from_theta_xy(tx, ty)
    assert torch.allclose(theta2, theta, atol=1e-9)
    dphi = torch.remainder(phi2 - phi + math.pi, 2 * math.pi) - math.pi
    assert torch.allclose(dphi, torch.zeros_like(dphi), atol=1e-9)
    assert torch.all((phi2 >= 0) & (phi2 < 2 * math.pi))
    # and from random theta_x, theta_y back again
    g = torch.Generator().manual_seed(8)
    tx = (torch.rand(5000, generator=g, dtype=torch.float64) - 0.5) * 2.8
    ty = (torch.rand(5000, generator=g, dtype=torch.float64) - 0.5) * 2.8
    th, ph = MuonBatch.theta_from_theta_xy(tx, ty), MuonBatch.phi_from_theta_xy(tx, ty)
    assert torch.allclose(MuonBatch.theta_x_from_theta_phi(th, ph), tx, atol=1e-9)
    assert torch.allclose(MuonBatch.theta_y_from_theta_phi(th, ph), ty, atol=1e-9)


def test_conversions_quadrants_and_nans():
    tx = torch.tensor([0.1, -0.1, -0.1, 0.1, 0.0])
    ty = torch.tensor([0.1, 0.1, -0.1, -0.1, 0.0])
    phi = MuonBatch.phi_from_theta_xy(tx, ty)
    assert torch.allclose(phi[:4], torch.tensor([1, 3, 5, 7]) * math.pi / 4, atol=1e-6)
    assert MuonBatch.theta_from_theta_xy(tx, ty)[4] == 0
    assert torch.isnan(MuonBatch.theta_from_theta_xy(torch.tensor([math.pi / 2]), torch.tensor([0.0]))).all()
    assert torch.isnan(MuonBatch.phi_from_theta_xy(torch.tensor([0.0]), torch.tensor([-2.0]))).all()
    assert torch.isnan(MuonBatch.theta_x_from_theta_phi(torch.tensor([math.pi / 2]), torch.tensor([0.3]))).all()
    assert torch.isnan(MuonBatch.theta_y_from_theta_phi(torch.tensor([2.0]), torch.tensor([0.3]))).all()
    d = torch.tensor([[0.3, -0.4, -0.5]])
    th, ph = MuonBatch.theta_phi_from_direction(d)
    assert torch.allclose(MuonBatch.direction_from_theta_phi(th, ph), d / d.norm(), atol=1e-6)


# ---------------------------------------------------------------- empty batch
def test_empty_batch():
    mu = MuonBatch(torch.zeros(0, 5), init_z=1.0)
    assert len(mu) == 0 and mu.muons.shape == (0, 6)
    mu.propagate_dz(0.1)
    mu.propagate_d(0.1)
    mu.scatter_dxyz(dx_vol=torch.zeros(0))
    mu.scatter_dtheta_xy(dtheta_x_vol=torch.zeros(0), dtheta_y_vol=torch.zeros(0))
    mu.scatter_dtheta_dphi(dtheta_vol=torch.zeros(0))
    mu.deflect(torch.zeros(0), torch.zeros(0))
    mu.append_hits({"reco_xyz": mu.xyz.clone()}, "above")
    assert mu.get_hits()["above"]["reco_xyz"].shape == (0, 1, 3)
    mu.filter_muons(torch.zeros(0, dtype=torch.bool))
    assert mu.copy().muons.shape == (0, 6) and mu.upwards_muons.shape == (0, 6)
    assert mu.theta_xy.shape == (0, 2) and mu.get_xy_mask((0, 0), (1, 1)).shape == (0,)


def test_all_muons_removed():
    mu = MuonBatch(torch.tensor([[0.0, 0.0, 1.0, 1.5, 0.0]]), init_z=1.0)
    mu.append_hits({"eff": torch.ones(1, 1)}, "above")
    mu.scatter_dtheta_dphi(dtheta_vol=torch.tensor([0.2]))
    assert len(mu) == 0 and mu.get_hits()["above"]["eff"].shape == (0, 1, 1)
