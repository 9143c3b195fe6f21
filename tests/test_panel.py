"""Detector panels: response profiles, hits, realistic evaluation, cost / budget, clamping, validation, gradients."""

import math

import pytest
import torch

from tomopt_lib.muon.muon_batch import MuonBatch
from tomopt_lib.volume.panel import RES_EFF_FLOOR, DetectorPanel, SigmoidDetectorPanel

RES, EFF = 1e3, 0.9
CENTRE, SPAN = (0.5, 0.4), (0.4, 0.2)


def gauss_panel(**kw) -> DetectorPanel:
    args = dict(res=RES, eff=EFF, init_xyz=(*CENTRE, 0.9), init_xy_span=SPAN)
    args.update(kw)
    return DetectorPanel(**args)


def sig_panel(smooth: float = 0.1, **kw) -> SigmoidDetectorPanel:
    args = dict(smooth=smooth, res=RES, eff=EFF, init_xyz=(*CENTRE, 0.9), init_xy_span=SPAN)
    args.update(kw)
    return SigmoidDetectorPanel(**args)


def muons_at(xy: torch.Tensor, z: float = 0.9) -> MuonBatch:
    n = len(xy)
    state = torch.cat([xy, torch.full((n, 1), 5.0), torch.zeros(n, 2)], dim=1)
    return MuonBatch(state, init_z=z)


def random_xy(n: int, gen: torch.Generator, low=(0.0, 0.0), high=(1.0, 1.0)) -> torch.Tensor:
    low, high = torch.tensor(low), torch.tensor(high)
    return low + (high - low) * torch.rand(n, 2, generator=gen)


pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")

PANELS = [pytest.param(gauss_panel, id="gauss"), pytest.param(sig_panel, id="sigmoid")]


# ---------------------------------------------------------------------------- construction
@pytest.mark.parametrize("make", PANELS)
def test_parameters_and_buffers(make):
    p = make()
    names = dict(p.named_parameters())
    assert set(names) == {"xy", "z", "xy_span"}
    assert p.xy.shape == (2,) and p.z.shape == (1,) and p.xy_span.shape == (2,)
    assert torch.allclose(p.xy, torch.tensor(CENTRE)) and float(p.z.detach()) == pytest.approx(0.9)
    assert float(p.x.detach()) == pytest.approx(CENTRE[0]) and float(p.y.detach()) == pytest.approx(CENTRE[1])
    buffers = dict(p.named_buffers())
    assert {"resolution", "efficiency", "m2_cost"} <= set(buffers)
    assert float(p.resolution) == RES and float(p.efficiency) == pytest.approx(EFF) and float(p.m2_cost) == 1.0
    assert p.budget is None and float(p.budget_scale) == 1.0
    assert p.type_label == "panel"
    with pytest.raises(NotImplementedError):
        p()


def test_device_argument():
    p = gauss_panel(device="cpu")
    assert p.xy.device.type == "cpu" and p.resolution.device.type == "cpu"
    if torch.cuda.is_available():
        q = sig_panel(device="cuda")
        assert q.xy.is_cuda and q.smooth.is_cuda
        mu = muons_at(torch.rand(20, 2, device="cuda"))
        hits = q.get_hits(mu, torch.Generator(device="cuda").manual_seed(0))
        assert hits["reco_xyz"].is_cuda


# ---------------------------------------------------------------------------- profiles
def test_gaussian_profile():
    p = gauss_panel()
    sigma = torch.tensor(SPAN) / 4
    centre = torch.tensor([CENTRE])
    pts = torch.cat([centre, centre + sigma * torch.tensor([1.0, 0.0]), centre + sigma, centre + 50 * sigma])
    with torch.no_grad():
        res = p.get_resolution(pts)
        eff = p.get_efficiency(pts)
    assert res.shape == (4, 2) and eff.shape == (4,)
    assert torch.allclose(res[0], torch.tensor([RES, RES]))
    assert eff[0] == pytest.approx(EFF)
    # one sigma along x: x resolution falls by exp(-1/2), y unchanged
    assert res[1, 0] == pytest.approx(RES * math.exp(-0.5), rel=1e-5) and res[1, 1] == pytest.approx(RES)
    assert eff[1] == pytest.approx(EFF * math.exp(-0.5), rel=1e-5)
    assert eff[2] == pytest.approx(EFF * math.exp(-1.0), rel=1e-5)
    # far away: floored, never zero
    assert torch.all(res[3] == RES_EFF_FLOOR) and eff[3] == pytest.approx(RES_EFF_FLOOR)
    assert p.get_efficiency(pts, as_2d=True).shape == (4, 1)


@pytest.mark.parametrize("make", PANELS)
def test_profiles_decrease_outwards(make):
    p = make()
    dx = torch.linspace(0, 0.6, 25)
    pts = torch.stack([CENTRE[0] + dx, torch.full_like(dx, CENTRE[1])], dim=1)
    with torch.no_grad():
        res, eff = p.get_resolution(pts)[:, 0], p.get_efficiency(pts)
    assert res[0] == pytest.approx(RES, rel=1e-5) and eff[0] == pytest.approx(EFF, rel=1e-5)
    assert torch.all(res[1:] <= res[:-1]) and torch.all(eff[1:] <= eff[:-1])
    assert res[-1] < 0.01 * RES
    # symmetric about the centre
    mirrored = torch.stack([CENTRE[0] - dx, torch.full_like(dx, CENTRE[1])], dim=1)
    assert torch.allclose(p.get_efficiency(mirrored).detach(), eff)


def test_sigmoid_profile_edge_and_smoothness():
    half = SPAN[0] / 2
    edge = torch.tensor([[CENTRE[0] + half, CENTRE[1]]])
    outside = torch.tensor([[CENTRE[0] + 1.5 * half, CENTRE[1]]])
    fracs = []
    for smooth in (0.5, 0.1, 0.02):
        p = sig_panel(smooth=smooth)
        expected_edge = 0.5 / (1 / (1 + math.exp(-1 / smooth)))
        assert float(p.get_resolution(edge)[0, 0]) == pytest.approx(RES * expected_edge, rel=1e-5)
        assert float(p.sig_model(edge)[0, 1]) == pytest.approx(1.0)
        fracs.append(float(p.get_efficiency(outside)[0]) / EFF)
    # sharper sigmoid -> less response outside the physical panel
    assert fracs[0] > fracs[1] > fracs[2]
    p = sig_panel(smooth=0.5)
    p.smooth = 0.02
    assert float(p.smooth) == pytest.approx(0.02)
    assert float(p.get_efficiency(outside)[0]) / EFF == pytest.approx(fracs[2], rel=1e-5)


# ---------------------------------------------------------------------------- hits
@pytest.mark.parametrize("make", PANELS)
def test_hits_shapes_and_values(make, gen):
    p = make()
    xy = random_xy(500, gen)
    hits = p.get_hits(muons_at(xy), gen)
    assert set(hits) == {"reco_xyz", "gen_xyz", "unc_xyz", "eff"}
    for k in ("reco_xyz", "gen_xyz", "unc_xyz"):
        assert hits[k].shape == (500, 3)
    assert hits["eff"].shape == (500, 1)
    assert torch.allclose(hits["gen_xyz"][:, :2], xy)
    assert torch.all(hits["reco_xyz"][:, 2] == p.z) and torch.all(hits["gen_xyz"][:, 2] == p.z)
    res = p.get_resolution(xy)
    assert torch.allclose(hits["unc_xyz"][:, :2], 1 / res) and torch.all(hits["unc_xyz"][:, 2] == 0)
    assert torch.all((hits["eff"] > 0) & (hits["eff"] <= EFF + 1e-6))
    assert torch.isfinite(hits["reco_xyz"]).all()


def test_hit_smearing_statistics(gen):
    """Pulls (reco - true) * res follow N(0, 1) for muons spread over the panel."""
    p = gauss_panel()
    xy = random_xy(20000, gen, low=(0.3, 0.3), high=(0.7, 0.5))
    hits = p.get_hits(muons_at(xy), gen)
    pull = (hits["reco_xyz"][:, :2] - xy) / hits["unc_xyz"][:, :2]
    assert pull.mean(0).abs().max() < 0.03
    assert torch.allclose(pull.std(0), torch.ones(2), atol=0.03)


def test_generator_reproducibility():
    p = gauss_panel()
    xy = random_xy(100, torch.Generator().manual_seed(1))
    h1 = p.get_hits(muons_at(xy), torch.Generator().manual_seed(7))
    h2 = p.get_hits(muons_at(xy), torch.Generator().manual_seed(7))
    h3 = p.get_hits(muons_at(xy), torch.Generator().manual_seed(8))
    assert torch.equal(h1["reco_xyz"], h2["reco_xyz"])
    assert not torch.equal(h1["reco_xyz"], h3["reco_xyz"])


@pytest.mark.parametrize("make", PANELS)
def test_zero_muons(make):
    p = make()
    hits = p.get_hits(muons_at(torch.zeros(0, 2)))
    assert hits["reco_xyz"].shape == (0, 3) and hits["eff"].shape == (0, 1)
    p.eval()
    assert p.get_hits(muons_at(torch.zeros(0, 2)))["unc_xyz"].shape == (0, 3)


# ---------------------------------------------------------------------------- realistic evaluation
@pytest.mark.parametrize("make", PANELS)
def test_realistic_validation(make, gen):
    p = make()
    xy = random_xy(2000, gen)
    mask = p.get_xy_mask(xy)
    half = torch.tensor(SPAN) / 2
    expected = ((xy - torch.tensor(CENTRE)).abs() <= half).all(1)
    assert torch.equal(mask, expected) and 0 < int(mask.sum()) < 2000
    p.eval()
    res, eff = p.get_resolution(xy), p.get_efficiency(xy)
    assert torch.all(res[mask] == RES) and torch.all(res[~mask] == 0)
    assert torch.allclose(eff[mask], torch.tensor(EFF)) and torch.all(eff[~mask] == 0)
    hits = p.get_hits(muons_at(xy), gen)
    reco = hits["reco_xyz"][:, :2]
    assert torch.isinf(reco[~mask]).all() and torch.isinf(hits["unc_xyz"][~mask][:, :2]).all()
    assert torch.all(hits["eff"][~mask] == 0)
    # hits of muons inside stay inside the physical panel, within the resolution of the truth
    lo, hi = torch.tensor(CENTRE) - half, torch.tensor(CENTRE) + half
    assert torch.all((reco[mask] >= lo - 1e-6) & (reco[mask] <= hi + 1e-6))
    assert (reco[mask] - xy[mask]).abs().max() < 10 / RES
    # not differentiable w.r.t. xy / span in this mode
    assert not hits["eff"].requires_grad
    # without realistic validation, eval mode keeps the smooth model
    q = make(realistic_validation=False)
    q.eval()
    assert torch.all(q.get_resolution(xy) > 0) and torch.allclose(q.get_resolution(xy), make().get_resolution(xy))


def test_realistic_clamping_of_edge_hits(gen):
    """A muon just inside the edge, with a poor resolution, gets its hit clamped onto the panel."""
    p = gauss_panel(res=1.0)
    p.eval()
    xy = torch.tensor([[CENTRE[0] + SPAN[0] / 2 - 1e-3, CENTRE[1]]]).repeat(200, 1)
    reco = p.get_hits(muons_at(xy), gen)["reco_xyz"]
    assert reco[:, 0].max() <= CENTRE[0] + SPAN[0] / 2 + 1e-6
    assert reco[:, 1].min() >= CENTRE[1] - SPAN[1] / 2 - 1e-6


# ---------------------------------------------------------------------------- gradients
@pytest.mark.parametrize("make", PANELS)
def test_hit_gradients(make, gen):
    p = make()
    xy = random_xy(200, gen)
    hits = p.get_hits(muons_at(xy), gen)
    for var, params in (("reco_xyz", ("xy", "xy_span", "z")), ("eff", ("xy", "xy_span"))):
        grads = torch.autograd.grad(hits[var].sum(), [getattr(p, n) for n in params], retain_graph=True)
        for name, g in zip(params, grads):
            assert g is not None and torch.isfinite(g).all(), (var, name)
            assert (g.abs() > 0).all(), (var, name)
    (g_unc,) = torch.autograd.grad(hits["unc_xyz"].sum(), p.xy_span)
    assert torch.isfinite(g_unc).all() and (g_unc < 0).all()  # bigger panel -> better resolution


def test_cost_and_gradient():
    p = gauss_panel(m2_cost=3.0)
    cost = p.get_cost()
    assert cost.shape == () and float(cost) == pytest.approx(3.0 * SPAN[0] * SPAN[1])
    (g,) = torch.autograd.grad(cost, p.xy_span)
    assert torch.allclose(g, torch.tensor([3.0 * SPAN[1], 3.0 * SPAN[0]]))


# ---------------------------------------------------------------------------- budget
@pytest.mark.parametrize("make", PANELS)
def test_budget_mode(make):
    p = make(m2_cost=2.0, budget=0.5)
    area = SPAN[0] * SPAN[1]
    scale = math.sqrt(0.5 / (2.0 * area))
    assert float(p.budget_scale) == pytest.approx(scale, rel=1e-6)
    span = p.get_scaled_xy_span()
    assert torch.allclose(span, torch.tensor(SPAN) * scale)
    assert float(span[0] / span[1]) == pytest.approx(SPAN[0] / SPAN[1], rel=1e-6)
    assert float(p.get_cost()) == pytest.approx(0.5, rel=1e-6)
    # changing xy_span keeps the cost at the budget (no stale scale)
    with torch.no_grad():
        p.xy_span.mul_(3.0)
    assert float(p.get_cost()) == pytest.approx(0.5, rel=1e-6)
    p.assign_budget(None)
    assert p.budget is None and float(p.get_cost()) == pytest.approx(2.0 * 9 * area, rel=1e-6)


def test_budget_gradient_through_hits(gen):
    budget = torch.tensor(0.05, requires_grad=True)
    p = gauss_panel()
    p.assign_budget(budget)
    hits = p.get_hits(muons_at(random_xy(200, gen)), gen)
    (g_cost,) = torch.autograd.grad(p.get_cost(), budget, retain_graph=True)
    assert float(g_cost) == pytest.approx(1.0, rel=1e-5)
    (g_eff,) = torch.autograd.grad(hits["eff"].sum(), budget, retain_graph=True)
    (g_reco,) = torch.autograd.grad(hits["reco_xyz"].sum(), budget)
    assert torch.isfinite(g_eff) and float(g_eff) > 0  # more budget -> bigger panel -> more efficient
    assert torch.isfinite(g_reco) and float(g_reco) != 0


# ---------------------------------------------------------------------------- clamping
def test_clamp_params(gen):
    p = gauss_panel()
    with torch.no_grad():
        p.xy.copy_(torch.tensor([-1.0, 3.0]))
        p.z.fill_(5.0)
        p.xy_span.copy_(torch.tensor([0.001, 100.0]))
    p.clamp_params((0.0, 0.0, 0.8), (1.0, 2.0, 1.0), generator=gen)
    assert torch.allclose(p.xy, torch.tensor([0.0, 2.0]))
    assert 1.0 - 1e-3 <= float(p.z.detach()) < 1.0
    assert torch.allclose(p.xy_span, torch.tensor([1.0 / 20, 2.0 * 10]))
    with torch.no_grad():
        p.z.fill_(-5.0)
    p.clamp_params((0.0, 0.0, 0.8), (1.0, 2.0, 1.0), generator=gen)
    assert 0.8 < float(p.z.detach()) <= 0.8 + 1e-3
    # values already inside are untouched
    q = gauss_panel()
    before = {n: t.detach().clone() for n, t in q.named_parameters()}
    q.clamp_params((0.0, 0.0, 0.8), (1.0, 1.0, 1.0), generator=gen)
    for n, t in q.named_parameters():
        assert torch.equal(t, before[n])
    with pytest.raises(ValueError, match="xyz_high"):
        q.clamp_params((0.0, 0.0, 1.0), (1.0, 1.0, 0.8))


# ---------------------------------------------------------------------------- validation
BAD_ARGS = [
    ("res", 0.0),
    ("res", -5.0),
    ("res", float("nan")),
    ("res", float("inf")),
    ("res", "high"),
    ("eff", 0.0),
    ("eff", 1.5),
    ("eff", -0.1),
    ("eff", float("nan")),
    ("init_xy_span", (0.0, 1.0)),
    ("init_xy_span", (-1.0, 1.0)),
    ("init_xy_span", (1.0, float("nan"))),
    ("init_xy_span", (1.0,)),
    ("init_xyz", (0.0, 0.0)),
    ("init_xyz", (0.0, float("inf"), 0.0)),
    ("m2_cost", 0.0),
    ("m2_cost", -1.0),
    ("m2_cost", float("inf")),
    ("budget", 0.0),
    ("budget", -2.0),
    ("budget", float("nan")),
]


@pytest.mark.parametrize("make", PANELS)
@pytest.mark.parametrize("name,value", BAD_ARGS)
def test_bad_arguments(make, name, value):
    with pytest.raises(ValueError, match=name):
        make(**{name: value})


@pytest.mark.parametrize("value", [0.0, -0.1, float("nan"), float("inf")])
def test_bad_smooth(value):
    with pytest.raises(ValueError, match="smooth"):
        sig_panel(smooth=value)
    p = sig_panel()
    with pytest.raises(ValueError, match="smooth"):
        p.smooth = value
    with pytest.raises(ValueError, match="budget"):
        p.assign_budget(torch.tensor(-1.0))


def test_error_messages_state_range():
    with pytest.raises(ValueError, match=r"res.*> 0"):
        gauss_panel(res=0)
    with pytest.raises(ValueError, match=r"eff must be a finite number > 0 and <= 1 \(hit efficiency\), got 2"):
        gauss_panel(eff=2)
