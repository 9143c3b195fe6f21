"""Panel detector layers: ordering, hits, propagation, gradients, clamping, cost / budget, validation."""

import math

import pytest
import torch

from tomopt_lib.muon.muon_batch import MuonBatch
from tomopt_lib.volume.layer import AbsDetectorLayer, AbsLayer, PanelDetectorLayer
from tomopt_lib.volume.panel import DetectorPanel, SigmoidDetectorPanel

pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")

LW, Z, SIZE = (1.0, 1.0), 1.0, 0.2
PANEL_ZS = (0.85, 1.0, 0.9, 0.95)  # deliberately not in z order


def make_panels(kind: str = "gauss", zs=PANEL_ZS, span=(0.8, 0.6)):
    out = []
    for z in zs:
        kw = dict(res=1e3, eff=0.9, init_xyz=(0.5, 0.5, z), init_xy_span=span)
        out.append(SigmoidDetectorPanel(smooth=0.1, **kw) if kind == "sigmoid" else DetectorPanel(**kw))
    return out


def make_layer(kind: str = "gauss", pos: str = "station_3", **kw) -> PanelDetectorLayer:
    return PanelDetectorLayer(pos, lw=LW, z=Z, size=SIZE, panels=make_panels(kind, **kw))


def make_muons(n: int, gen: torch.Generator, z: float = Z) -> MuonBatch:
    u = torch.rand(n, 5, generator=gen)
    state = torch.stack([u[:, 0], u[:, 1], 1 + 9 * u[:, 2], u[:, 3] * math.pi / 6, u[:, 4] * 2 * math.pi], dim=1)
    return MuonBatch(state, init_z=z)


KINDS = [pytest.param("gauss", id="gauss"), pytest.param("sigmoid", id="sigmoid")]


def test_basic_properties():
    layer = make_layer()
    assert isinstance(layer, AbsDetectorLayer) and isinstance(layer, AbsLayer)
    assert layer.type_label == "panel" and layer._n_costs == 4 and layer.pos == "station_3"
    assert layer.z_top == pytest.approx(Z) and layer.z_bottom == pytest.approx(Z - SIZE)
    assert layer.get_panel_zorder() == [1, 3, 2, 0]
    assert [i for i, _ in layer.yield_zordered_panels()] == [1, 3, 2, 0]
    assert len(list(layer.parameters())) == 12
    with pytest.raises(TypeError):
        AbsDetectorLayer("above", lw=LW, z=Z, size=SIZE)  # abstract


def test_passive_layer_reexport():
    from tomopt_lib.volume import layer as layer_module

    assert layer_module.AbsLayer is AbsLayer
    from tomopt_lib.volume.passive_layer import PassiveLayer

    assert layer_module.PassiveLayer is PassiveLayer  # the same class, not a stand-in


@pytest.mark.parametrize("kind", KINDS)
def test_forward_hits_and_straight_propagation(kind, gen):
    layer = make_layer(kind)
    mu = make_muons(300, gen)
    start = mu.muons.clone()
    layer(mu, gen)
    # all muons leave at the layer bottom, angles and momenta untouched (detectors do not scatter)
    assert torch.allclose(mu.z, torch.full_like(mu.z, Z - SIZE))
    assert torch.equal(mu.muons[:, 3:], start[:, 3:])
    dz = SIZE
    tan_t = torch.tan(start[:, 4])
    expected_xy = start[:, :2] + dz * tan_t[:, None] * torch.stack([torch.cos(start[:, 5]), torch.sin(start[:, 5])], 1)
    assert torch.allclose(mu.xy, expected_xy, atol=1e-5)
    assert not mu.muons.requires_grad
    hits = mu.get_hits()
    assert list(hits) == ["station_3"]
    h = hits["station_3"]
    for var in ("reco_xyz", "gen_xyz", "unc_xyz"):
        assert h[var].shape == (300, 4, 3)
    assert h["eff"].shape == (300, 4, 1)
    # hits recorded top to bottom at the panel heights
    assert torch.allclose(h["gen_xyz"][0, :, 2], torch.tensor([1.0, 0.95, 0.9, 0.85]))
    # generator-level hits lie on the straight track
    for k, pz in enumerate((1.0, 0.95, 0.9, 0.85)):
        dz_k = Z - pz
        exp_k = start[:, :2] + dz_k * tan_t[:, None] * torch.stack([torch.cos(start[:, 5]), torch.sin(start[:, 5])], 1)
        assert torch.allclose(h["gen_xyz"][:, k, :2], exp_k, atol=1e-5)
    assert torch.isfinite(h["reco_xyz"]).all() and (h["unc_xyz"][..., :2] > 0).all()


def test_generator_reproducibility():
    out = []
    for seed in (3, 3, 4):
        layer = make_layer()
        mu = make_muons(50, torch.Generator().manual_seed(0))
        layer(mu, torch.Generator().manual_seed(seed))
        out.append(mu.get_hits()["station_3"]["reco_xyz"])
    assert torch.equal(out[0], out[1]) and not torch.equal(out[0], out[2])


@pytest.mark.parametrize("kind", KINDS)
def test_hit_gradients_reach_every_panel_parameter(kind, gen):
    layer = make_layer(kind)
    mu = make_muons(200, gen)
    layer(mu, gen)
    h = mu.get_hits()["station_3"]
    for i, p in enumerate(layer.panels):
        g_reco = torch.autograd.grad(h["reco_xyz"].sum(), [p.xy, p.xy_span, p.z], retain_graph=True)
        g_eff = torch.autograd.grad(h["eff"].sum(), [p.xy, p.xy_span], retain_graph=True)
        for g in (*g_reco, *g_eff):
            assert torch.isfinite(g).all() and (g.abs() > 0).all(), i


def test_zero_muons_flow_through(gen):
    layer = make_layer()
    mu = make_muons(0, gen)
    layer(mu, gen)
    assert len(mu) == 0
    h = mu.get_hits()["station_3"]
    assert h["reco_xyz"].shape == (0, 4, 3) and h["eff"].shape == (0, 4, 1)
    # a batch emptied by filtering upstream also flows through
    mu = make_muons(10, gen)
    mu.filter_muons(torch.zeros(10, dtype=torch.bool))
    layer(mu, gen)
    assert mu.get_hits()["station_3"]["unc_xyz"].shape == (0, 4, 3)


def test_muons_below_top_are_moved_to_each_panel(gen):
    """Muons starting above the layer are first brought to each panel's z."""
    layer = make_layer()
    mu = make_muons(20, gen, z=1.5)
    layer(mu, gen)
    assert torch.allclose(mu.get_hits()["station_3"]["gen_xyz"][:, :, 2], torch.tensor([1.0, 0.95, 0.9, 0.85]).expand(20, 4))


def test_cost_is_sum_of_areas():
    layer = make_layer(span=(0.5, 0.4))
    cost = layer.get_cost()
    assert cost.shape == () and float(cost) == pytest.approx(4 * 0.5 * 0.4, rel=1e-6)
    cost.backward()
    for p in layer.panels:
        assert torch.allclose(p.xy_span.grad, torch.tensor([0.4, 0.5]))


def test_conform_detector(gen):
    layer = make_layer()
    bad = [((-0.5, 2.0), 1.3, (0.001, 50.0)), ((0.3, 0.7), 0.5, (0.6, 0.6))]
    with torch.no_grad():
        for p, (xy, z, span) in zip(layer.panels, bad):
            p.xy.copy_(torch.tensor(xy))
            p.z.fill_(z)
            p.xy_span.copy_(torch.tensor(span))
    layer.conform_detector(generator=gen)
    p0, p1 = layer.panels[0], layer.panels[1]
    assert torch.allclose(p0.xy, torch.tensor([0.0, 1.0]))
    assert Z - 1e-3 <= float(p0.z.detach()) < Z
    assert torch.allclose(p0.xy_span, torch.tensor([LW[0] / 20, LW[1] * 10]))
    assert torch.allclose(p1.xy, torch.tensor([0.3, 0.7])) and torch.allclose(p1.xy_span, torch.tensor([0.6, 0.6]))
    assert Z - SIZE < float(p1.z.detach()) <= Z - SIZE + 1e-3
    for p in layer.panels:
        assert layer.z_bottom < float(p.z.detach()) < layer.z_top


def test_assign_budget_in_z_order():
    layer = make_layer()
    budgets = torch.tensor([0.1, 0.2, 0.3, 0.4], requires_grad=True)
    layer.assign_budget(budgets)
    for k, i in enumerate(layer.get_panel_zorder()):
        assert float(layer.panels[i].get_cost()) == pytest.approx(float(budgets[k]), rel=1e-5)
    cost = layer.get_cost()
    assert float(cost) == pytest.approx(1.0, rel=1e-5)
    (g,) = torch.autograd.grad(cost, budgets)
    assert torch.allclose(g, torch.ones(4), atol=1e-5)
    layer.assign_budget(None)  # no-op
    with pytest.raises(ValueError, match="budget"):
        layer.assign_budget(torch.ones(3))


def test_device():
    layer = make_layer()
    assert layer.device.type == "cpu" and layer.lw.device.type == "cpu"
    if torch.cuda.is_available():
        panels = [
            DetectorPanel(res=1e3, eff=0.9, init_xyz=(0.5, 0.5, z), init_xy_span=(0.5, 0.5), device="cuda") for z in (0.9, 0.95)
        ]
        layer = PanelDetectorLayer("above", lw=LW, z=Z, size=SIZE, panels=panels)
        assert layer.device.type == "cuda" and layer.z.is_cuda
        g = torch.Generator(device="cuda").manual_seed(0)
        state = torch.rand(10, 5, device="cuda") * torch.tensor([1, 1, 5, 0.3, 6.0], device="cuda")
        mu = MuonBatch(state, init_z=1.0)
        layer(mu, g)
        assert mu.get_hits()["above"]["reco_xyz"].is_cuda


# ---------------------------------------------------------------------------- validation
@pytest.mark.parametrize("pos", ["", None, 3])
def test_bad_pos(pos):
    with pytest.raises(ValueError, match="pos"):
        PanelDetectorLayer(pos, lw=LW, z=Z, size=SIZE, panels=make_panels())


@pytest.mark.parametrize("panels", [[], None, ["not a panel"]])
def test_bad_panels(panels):
    with pytest.raises(ValueError, match="panels"):
        PanelDetectorLayer("above", lw=LW, z=Z, size=SIZE, panels=panels)


@pytest.mark.parametrize("z", [1.05, 0.75])
def test_panel_outside_layer(z):
    with pytest.raises(ValueError, match="panels"):
        PanelDetectorLayer("above", lw=LW, z=Z, size=SIZE, panels=make_panels(zs=(0.9, z)))


@pytest.mark.parametrize(
    "name,value", [("lw", (1.0, 0.0)), ("lw", (1.0,)), ("size", 0.0), ("size", float("nan")), ("z", float("inf"))]
)
def test_bad_geometry(name, value):
    kw = dict(lw=LW, z=Z, size=SIZE)
    kw[name] = value
    with pytest.raises(ValueError, match=name):
        PanelDetectorLayer("above", panels=make_panels(zs=(0.9,)), **kw)
