"""Volume: layer bookkeeping and validation, voxel geometry, X0 cube, cost / budget, forward, gradients, drawing."""

import math

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from tomopt_lib.core import X0  # noqa: E402
from tomopt_lib.muon.muon_batch import MuonBatch  # noqa: E402
from tomopt_lib.volume.layer import AbsLayer, PanelDetectorLayer  # noqa: E402
from tomopt_lib.volume.panel import DetectorPanel, SigmoidDetectorPanel  # noqa: E402
from tomopt_lib.volume.passive_layer import PassiveLayer  # noqa: E402
from tomopt_lib.volume.volume import Volume  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")

LW, SIZE = (1.0, 1.0), 0.1
N_PASSIVE = 6


def lead_below_half(*, z, lw, size):
    """Lead for layers whose top is below 0.45 m, beryllium above."""
    n = (lw / size).round().long().tolist()
    x0 = X0["lead"] if float(z) < 0.45 else X0["beryllium"]
    return torch.full(n, x0)


def x0_equals_layer_top(*, z, lw, size):
    n = (lw / size).round().long().tolist()
    return torch.full(n, float(z))


def det_layer(pos: str, z: float, kind: str = "gauss", lw=LW, span=(0.8, 0.8)) -> PanelDetectorLayer:
    panels = []
    for k in range(4):
        kw = dict(res=1e3, eff=0.9, init_xyz=(0.5 * lw[0], 0.5 * lw[1], z - 0.05 * k), init_xy_span=span)
        panels.append(SigmoidDetectorPanel(smooth=0.1, **kw) if kind == "sigmoid" else DetectorPanel(**kw))
    return PanelDetectorLayer(pos, lw=lw, z=z, size=2 * SIZE, panels=panels)


def passive_layers(top: float = 0.8, n: int = N_PASSIVE, func=lead_below_half):
    return [PassiveLayer(lw=LW, z=top - i * SIZE, size=SIZE, rad_length_func=func) for i in range(n)]


def make_volume(kind: str = "gauss", budget=None, names=("above", "below")) -> Volume:
    layers = [det_layer(names[0], 1.0, kind), *passive_layers(), det_layer(names[1], 0.2, kind)]
    return Volume(nn.ModuleList(layers), budget=budget)


def make_muons(n: int, gen: torch.Generator, z: float = 1.0) -> MuonBatch:
    u = torch.rand(n, 5, generator=gen)
    state = torch.stack([u[:, 0], u[:, 1], 5 + 5 * u[:, 2], u[:, 3] * math.pi / 8, u[:, 4] * 2 * math.pi], dim=1)
    return MuonBatch(state, init_z=z)


KINDS = [pytest.param("gauss", id="gauss"), pytest.param("sigmoid", id="sigmoid")]


# ---------------------------------------------------------------------------- bookkeeping
def test_layer_bookkeeping():
    vol = make_volume()
    assert len(vol.layers) == 8
    dets, pas = vol.get_detectors(), vol.get_passives()
    assert len(dets) == 2 and len(pas) == N_PASSIVE
    assert [d.pos for d in dets] == ["above", "below"]
    assert all(isinstance(p, PassiveLayer) for p in pas)
    assert [p.z_top for p in pas] == pytest.approx([0.8 - 0.1 * i for i in range(N_PASSIVE)])
    bottom, top = vol.get_passive_z_range()
    assert float(bottom) == pytest.approx(0.2) and float(top) == pytest.approx(0.8)
    assert float(vol.h) == pytest.approx(1.0)
    assert torch.allclose(vol.lw, torch.tensor(LW)) and vol.passive_size == pytest.approx(SIZE)
    assert vol.device.type == "cpu"
    assert vol.get_detector_groups() == {"above": ["above"], "below": ["below"]}
    assert vol.budget is None and not hasattr(vol, "budget_weights")
    # a plain list is accepted too
    assert len(Volume([det_layer("a", 1.0), *passive_layers()]).layers) == 7


def test_detector_groups_any_names():
    layers = [det_layer("s1", 1.4), det_layer("s2", 1.0), *passive_layers(), det_layer("s3", 0.2)]
    vol = Volume(nn.ModuleList(layers))
    assert vol.get_detector_groups() == {"above": ["s1", "s2"], "below": ["s3"]}


def test_cost():
    vol = make_volume()
    cost = vol.get_cost()
    assert cost.shape == () and float(cost) == pytest.approx(8 * 0.8 * 0.8, rel=1e-6)
    cost.backward()
    assert all(torch.allclose(p.xy_span.grad, torch.tensor([0.8, 0.8])) for d in vol.get_detectors() for p in d.panels)


# ---------------------------------------------------------------------------- voxels and X0
def test_rad_cube_orientation_and_target():
    vol = make_volume()
    vol.load_rad_length(x0_equals_layer_top, target=torch.tensor([3]))
    cube = vol.get_rad_cube()
    assert cube.shape == (N_PASSIVE, 10, 10)
    tops = torch.tensor([0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
    assert torch.allclose(cube[:, 0, 0], tops)  # index 0 = bottom layer
    assert torch.equal(vol.target, torch.tensor([3]))
    vol.load_rad_length(lead_below_half)
    assert vol.target is None
    cube = vol.get_rad_cube()
    lead, beryllium = torch.tensor(X0["lead"]), torch.tensor(X0["beryllium"])
    assert torch.all(cube[:2] == lead) and torch.all(cube[2:] == beryllium)  # layer tops 0.3, 0.4 < 0.5 m


def test_voxel_edges_centres_and_lookup():
    vol = make_volume()
    edges, centres = vol.xyz_edges, vol.xyz_centres
    assert edges.shape == (10 * 10 * N_PASSIVE, 3)
    assert torch.allclose(edges[0], torch.tensor([0.0, 0.0, 0.2]))
    assert torch.allclose(edges[1], torch.tensor([0.0, 0.0, 0.3]))  # z fastest, from the bottom
    assert torch.allclose(edges[N_PASSIVE], torch.tensor([0.0, 0.1, 0.2]))  # then y
    assert torch.allclose(edges[10 * N_PASSIVE], torch.tensor([0.1, 0.0, 0.2]))  # x slowest
    assert torch.allclose(edges[-1], torch.tensor([0.9, 0.9, 0.7]))
    assert torch.allclose(centres, edges + SIZE / 2)
    assert torch.allclose(vol.build_xyz_edges(), edges)
    # centres map back to their own (x, y, z) voxel indices, consistent with the rad cube
    idx = vol.lookup_passive_xyz_coords(centres)
    assert idx.dtype == torch.long and idx.shape == (600, 3)
    expected = torch.stack(
        torch.meshgrid(torch.arange(10), torch.arange(10), torch.arange(N_PASSIVE), indexing="ij"), -1
    ).reshape(-1, 3)
    assert torch.equal(idx, expected)
    vol.load_rad_length(x0_equals_layer_top)
    cube = vol.get_rad_cube()
    x0_at_centres = cube[idx[:, 2], idx[:, 0], idx[:, 1]]
    assert torch.allclose(x0_at_centres, centres[:, 2] + SIZE / 2)
    pts = torch.tensor([[0.05, 0.15, 0.25], [1.0, 1.0, 0.8], [0.0, 0.0, 0.2], [0.55, 0.31, 0.61]])
    assert vol.lookup_passive_xyz_coords(pts).tolist() == [[0, 1, 0], [9, 9, 5], [0, 0, 0], [5, 3, 4]]
    for bad in ([0.5, 0.5, 0.85], [0.5, 0.5, 0.1], [-0.01, 0.5, 0.5], [0.5, 1.2, 0.5]):
        with pytest.raises(ValueError, match="outside"):
            vol.lookup_passive_xyz_coords(torch.tensor([bad]))


# ---------------------------------------------------------------------------- budget
def test_budget_weights_and_assignment():
    vol = make_volume(budget=4.0)
    assert isinstance(vol.budget_weights, nn.Parameter)
    assert torch.equal(vol.budget_weights.detach(), torch.zeros(8))
    assert "budget_weights" in dict(vol.named_parameters())
    vol.assign_budget()
    for d in vol.get_detectors():
        for p in d.panels:
            assert float(p.get_cost()) == pytest.approx(0.5, rel=1e-5)
    assert float(vol.get_cost()) == pytest.approx(4.0)
    with torch.no_grad():
        vol.budget_weights.copy_(torch.arange(8.0))
    vol.assign_budget()
    expected = 4.0 * torch.softmax(torch.arange(8.0), 0)
    above, below = vol.get_detectors()
    got = [float(above.panels[i].get_cost()) for i in above.get_panel_zorder()]
    got += [float(below.panels[i].get_cost()) for i in below.get_panel_zorder()]
    assert got == pytest.approx(expected.tolist(), rel=1e-4)
    total = sum(d.get_cost() for d in vol.get_detectors())
    assert float(total) == pytest.approx(4.0, rel=1e-5)


def test_loaded_budget_split_reaches_the_panels_without_a_forward():
    """A trained fixed-budget detector loaded into a fresh volume has its trained spans at once (the evaluate stage
    draws and describes it without propagating muons; before the load hook it showed the equal split)."""
    trained = make_volume(budget=4.0)
    with torch.no_grad():
        trained.budget_weights.copy_(torch.tensor([2.0, -2.0, -2.0, 2.0, 1.0, -1.0, 0.0, 0.5]))
    trained.assign_budget()
    fresh = make_volume(budget=4.0)
    fresh.load_state_dict(trained.state_dict())
    spans = [p.get_scaled_xy_span().detach() for d in trained.get_detectors() for p in d.panels]
    loaded = [p.get_scaled_xy_span().detach() for d in fresh.get_detectors() for p in d.panels]
    assert max(float(s.max()) for s in loaded) > 1.5 * min(float(s.min()) for s in loaded)  # not the equal split
    for a, b in zip(spans, loaded):
        assert torch.allclose(a, b)
    assert not any(p.budget.requires_grad for d in fresh.get_detectors() for p in d.panels)  # no stale graph


@pytest.mark.parametrize("kind", KINDS)
def test_budget_weights_get_gradients(kind, gen):
    vol = make_volume(kind, budget=4.0)
    mu = make_muons(200, gen)
    vol(mu, gen)
    hits = mu.get_hits()
    loss = hits["above"]["unc_xyz"][..., :2].sum() + (hits["below"]["eff"] * torch.arange(4.0).reshape(1, 4, 1)).sum()
    (g,) = torch.autograd.grad(loss, vol.budget_weights, retain_graph=True)
    assert torch.isfinite(g).all() and (g.abs() > 0).all()
    panel_cost = vol.get_detectors()[0].panels[0].get_cost()
    (g_cost,) = torch.autograd.grad(panel_cost, vol.budget_weights)
    assert torch.isfinite(g_cost).all() and (g_cost.abs() > 0).any()


# ---------------------------------------------------------------------------- forward
@pytest.mark.parametrize("kind", KINDS)
def test_forward(kind, gen):
    vol = make_volume(kind)
    mu = make_muons(500, gen)
    start = mu.muons.clone()
    vol(mu, gen)
    assert len(mu) > 490  # at most a handful removed as upwards-going
    assert torch.allclose(mu.z, torch.zeros_like(mu.z), atol=1e-6)
    assert not torch.allclose(mu.theta, start[: len(mu), 4])  # passive layers scattered them
    assert len(mu.xyz_hist) == len(vol.layers)
    hits = mu.get_hits()
    assert set(hits) == {"above", "below"}
    for pos, zs in (("above", [1.0, 0.95, 0.9, 0.85]), ("below", [0.2, 0.15, 0.1, 0.05])):
        h = hits[pos]
        assert h["reco_xyz"].shape == (len(mu), 4, 3) and h["eff"].shape == (len(mu), 4, 1)
        assert torch.allclose(h["reco_xyz"][0, :, 2], torch.tensor(zs))
        unc = h["unc_xyz"][..., :2]
        assert (unc >= 1e-3 - 1e-9).all() and (unc <= 1e10).all()
        assert ((h["eff"] > 0) & (h["eff"] <= 0.9 + 1e-6)).all()
        assert torch.isfinite(h["reco_xyz"]).all()
        # mostly good hits for muons over the panels
        assert (unc < 1e-2).float().mean() > 0.5
    for d in vol.get_detectors():
        for p in d.panels:
            for var, params in (("reco_xyz", (p.xy, p.xy_span, p.z)), ("eff", (p.xy, p.xy_span))):
                grads = torch.autograd.grad(hits[d.pos][var].sum(), params, retain_graph=True)
                assert all(torch.isfinite(g).all() and (g.abs() > 0).all() for g in grads)


def test_forward_options_and_reproducibility():
    out = []
    for seed in (5, 5):
        vol = make_volume()
        vol.record_xyz_hist = False
        mu = make_muons(100, torch.Generator().manual_seed(1))
        vol(mu, torch.Generator().manual_seed(seed))
        assert mu.xyz_hist == []
        out.append((mu.muons, mu.get_hits()["below"]["reco_xyz"]))
    assert torch.equal(out[0][0], out[1][0]) and torch.equal(out[0][1], out[1][1])


def test_zero_muons_flow_through(gen):
    vol = make_volume(budget=2.0)
    mu = make_muons(0, gen)
    vol(mu, gen)
    assert len(mu) == 0
    assert mu.get_hits()["below"]["reco_xyz"].shape[0] == 0


def test_realistic_eval_forward(gen):
    vol = make_volume()
    vol.eval()
    mu = make_muons(300, gen)
    vol(mu, gen)
    h = mu.get_hits()["above"]
    missed = h["eff"][..., 0] == 0
    assert missed.any() and (~missed).any()
    assert torch.isinf(h["unc_xyz"][..., 0][missed]).all()
    assert torch.isfinite(h["reco_xyz"][~missed]).all()


def test_draw():
    import matplotlib.pyplot as plt

    vol = make_volume()
    fig = vol.draw(xlim=(-0.5, 1.5), ylim=(-0.5, 1.5), zlim=(0.0, 1.2))
    assert isinstance(fig, matplotlib.figure.Figure) and len(fig.axes) == 1
    plt.close(fig)


# ---------------------------------------------------------------------------- validation
@pytest.mark.parametrize("budget", [0.0, -1.0, float("nan"), float("inf"), "a lot"])
def test_bad_budget(budget):
    with pytest.raises(ValueError, match="budget"):
        make_volume(budget=budget)


def test_layers_out_of_order_or_overlapping():
    pas = passive_layers()
    with pytest.raises(ValueError, match=r"layers.*decreasing"):
        Volume(nn.ModuleList([pas[1], pas[0], *pas[2:]]))
    with pytest.raises(ValueError, match=r"layers.*overlap"):
        Volume(nn.ModuleList([det_layer("above", 0.85), *pas]))
    with pytest.raises(ValueError, match="layers"):
        Volume(nn.ModuleList([]))
    with pytest.raises(ValueError, match="layers"):
        Volume(nn.ModuleList([nn.Linear(2, 2)]))
    # touching layers within 1e-6 m are fine
    Volume(nn.ModuleList([det_layer("above", 1.0 + 5e-7), *pas]))


def test_passive_block_rules():
    pas = passive_layers()
    with pytest.raises(ValueError, match=r"layers.*contiguous"):
        Volume(nn.ModuleList([*pas[:3], det_layer("mid", 0.5), *passive_layers(top=0.3, n=1)]))
    gap = [*pas[:3], *passive_layers(top=0.45, n=2)]
    with pytest.raises(ValueError, match=r"layers.*touch"):
        Volume(nn.ModuleList(gap))
    with pytest.raises(ValueError, match="lw"):
        Volume(nn.ModuleList([pas[0], PassiveLayer(lw=(1.0, 0.5), z=0.7, size=SIZE)]))
    with pytest.raises(ValueError, match="size"):
        Volume(nn.ModuleList([pas[0], PassiveLayer(lw=LW, z=0.7, size=0.2)]))
    # a generic (non-PassiveLayer) block whose footprint is not a voxel multiple
    with pytest.raises(ValueError, match=r"lw.*voxel size"):
        Volume(nn.ModuleList([AbsLayer(lw=(1.0, 0.95), z=0.8, size=SIZE)]))
    with pytest.raises(ValueError, match=r"layers.*both above and below"):
        Volume(nn.ModuleList([det_layer("g", 1.0), *pas, det_layer("g", 0.2)]))


def test_volume_without_passives():
    vol = Volume(nn.ModuleList([det_layer("a", 1.0), det_layer("b", 0.8)]))
    assert vol.get_detector_groups() == {"above": ["a", "b"], "below": []}
    assert float(vol.get_cost()) == pytest.approx(8 * 0.64, rel=1e-6)
    with pytest.raises(ValueError, match="passive"):
        vol.get_rad_cube()


def test_device_property_cuda():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    panels = [DetectorPanel(res=1e3, eff=0.9, init_xyz=(0.5, 0.5, z), init_xy_span=(0.8, 0.8), device="cuda") for z in (1.0, 0.9)]
    top = PanelDetectorLayer("above", lw=LW, z=1.0, size=0.2, panels=panels)
    pas = [PassiveLayer(lw=LW, z=0.8 - i * SIZE, size=SIZE, rad_length_func=lead_below_half, device="cuda") for i in range(2)]
    panels = [DetectorPanel(res=1e3, eff=0.9, init_xyz=(0.5, 0.5, z), init_xy_span=(0.8, 0.8), device="cuda") for z in (0.6, 0.5)]
    bot = PanelDetectorLayer("below", lw=LW, z=0.6, size=0.2, panels=panels)
    vol = Volume(nn.ModuleList([top, *pas, bot]), budget=2.0)
    assert vol.device.type == "cuda" and vol.budget_weights.is_cuda and vol.xyz_edges.is_cuda
    g = torch.Generator(device="cuda").manual_seed(0)
    state = torch.rand(100, 5, device="cuda") * torch.tensor([1, 1, 5, 0.3, 6.0], device="cuda")
    mu = MuonBatch(state + torch.tensor([0, 0, 1.0, 0, 0], device="cuda"), init_z=1.0)
    vol(mu, g)
    assert mu.get_hits()["below"]["reco_xyz"].is_cuda
    assert vol.get_rad_cube().is_cuda
