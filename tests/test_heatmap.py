"""Heat-map detectors: sensitivity model, hits, gradients, cost / budget, clamping, realistic evaluation, layer,
drawing, ``HeatMapVolumeWrapper`` fit / save / load / predict and ``HeatMapGif``."""

import math
from functools import partial

import pytest
import torch
from torch import nn, optim

from tomopt_lib.muon.muon_batch import MuonBatch
from tomopt_lib.optimisation.callbacks import HeatMapGif, NoMoreNaNs
from tomopt_lib.optimisation.data import PassiveYielder, RandomBlockPassiveGenerator
from tomopt_lib.optimisation.loss import VoxelX0Loss
from tomopt_lib.optimisation.wrapper import HeatMapVolumeWrapper, PanelVolumeWrapper
from tomopt_lib.volume import DetectorHeatMap, HeatMapDetectorLayer, PanelDetectorLayer, PassiveLayer, Volume
from tomopt_lib.volume.heatmap import GMM, MIN_COVERAGE, NORM_RANGE, SIG_RANGE
from tomopt_lib.volume.panel import RES_EFF_FLOOR

RES, EFF = 1e3, 0.9
LW = (0.4, 0.4)

pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")


def heatmap(z: float = 0.9, k: int = 6, **kw) -> DetectorHeatMap:
    args = dict(res=RES, eff=EFF, init_xyz=(0.5, 0.5, z), init_xy_span=(0.6, 0.4), n_cluster=k)
    args.update(kw)
    return DetectorHeatMap(**args)


def muons_at(xy: torch.Tensor, z: float = 0.9) -> MuonBatch:
    n = len(xy)
    return MuonBatch(torch.cat([xy, torch.full((n, 1), 5.0), torch.zeros(n, 2)], dim=1), init_z=z)


def coverage_by_hand(hm: DetectorHeatMap, xy: torch.Tensor) -> torch.Tensor:
    mu, sig, norm = hm.mu.detach(), hm.sig.detach(), hm.get_scaled_norm().detach()
    s = torch.zeros(len(xy))
    for k in range(len(mu)):
        s = s + norm[k] * torch.exp(-0.5 * (((xy - mu[k]) / sig[k]) ** 2).sum(-1))
    return 1 - torch.exp(-s)


def heatmap_volume(*, budget=None, k: int = 4, realistic: bool = True) -> Volume:
    """0.4 x 0.4 m, three 0.1 m passive layers between two 0.2 m detector layers of two heat maps each."""

    def maps(z_top: float) -> list[DetectorHeatMap]:
        return [
            DetectorHeatMap(
                res=1e4,
                eff=0.9,
                init_xyz=(0.2, 0.2, z_top - i * 0.1),
                init_xy_span=(0.4, 0.4),
                n_cluster=k,
                realistic_validation=realistic,
            )
            for i in range(2)
        ]

    layers: list[nn.Module] = [PanelDetectorLayer("above", lw=LW, z=0.7, size=0.2, panels=maps(0.7))]
    layers += [PassiveLayer(lw=LW, z=z, size=0.1) for z in (0.5, 0.4, 0.3)]
    layers.append(PanelDetectorLayer("below", lw=LW, z=0.2, size=0.2, panels=maps(0.2)))
    return Volume(nn.ModuleList(layers), budget=budget)


# ---------------------------------------------------------------------------- construction and model
def test_parameters_buffers_and_properties():
    hm = heatmap()
    assert set(dict(hm.named_parameters())) == {"gmm.mu", "gmm.sig", "gmm.norm", "z"}
    assert hm.mu.shape == (6, 2) and hm.sig.shape == (6, 2) and hm.norm.shape == (6,) and hm.z.shape == (1,)
    assert hm.mu is hm.gmm.mu and hm.sig is hm.gmm.sig and hm.norm is hm.gmm.norm
    assert {"resolution", "efficiency", "m2_cost"} <= set(dict(hm.named_buffers()))
    assert hm.type_label == "heatmap" and hm.budget is None and float(hm.budget_scale) == 1.0
    # centres spread over the initial area, centroid near its centre
    mu = hm.mu.detach()
    assert bool(((mu - torch.tensor([0.5, 0.5])).abs() <= torch.tensor([0.3, 0.2])).all())
    assert torch.allclose(hm.xy, torch.tensor([0.5, 0.5]), atol=0.06)
    assert float(hm.x) == pytest.approx(float(hm.xy[0])) and float(hm.y) == pytest.approx(float(hm.xy[1]))
    assert hm.get_scaled_xy_span().shape == (2,) and bool((hm.get_scaled_xy_span() > 0).all())
    with pytest.raises(NotImplementedError):
        hm()


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"res": 0.0}, "res"),
        ({"eff": 1.5}, "eff"),
        ({"m2_cost": -1.0}, "m2_cost"),
        ({"init_xyz": (0.5, 0.5)}, "init_xyz"),
        ({"init_xy_span": (0.0, 1.0)}, "init_xy_span"),
        ({"n_cluster": 0}, "n_cluster"),
        ({"budget": 0.0}, "budget"),
    ],
)
def test_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        heatmap(**kw)


def test_coverage_resolution_efficiency_formulas():
    gen = torch.Generator().manual_seed(0)
    hm = heatmap()
    xy = torch.rand(200, 2, generator=gen)
    with torch.no_grad():
        cov = hm.coverage(xy)
        res, eff = hm.get_resolution(xy), hm.get_efficiency(xy)
    expect = coverage_by_hand(hm, xy)
    assert torch.allclose(cov, expect, atol=1e-6)
    assert res.shape == (200, 2) and torch.allclose(res[:, 0], (RES * cov).clamp_min(RES_EFF_FLOOR), rtol=1e-5)
    assert torch.equal(res[:, 0], res[:, 1])
    assert torch.allclose(eff, (EFF * cov).clamp_min(RES_EFF_FLOOR), rtol=1e-5)
    assert hm.get_efficiency(xy, as_2d=True).shape == (200, 1)
    far = torch.tensor([[50.0, 50.0]])
    assert float(hm.get_resolution(far)[0, 0]) == pytest.approx(RES_EFF_FLOOR)
    assert float(hm.get_efficiency(far)[0]) == pytest.approx(RES_EFF_FLOOR)
    mask = hm.get_xy_mask(torch.cat([xy, far]))
    assert torch.equal(mask, torch.cat([expect >= MIN_COVERAGE, torch.tensor([False])]))


def test_gmm_integral_matches_numerical_integration():
    g = GMM(n_cluster=3, init_xy=(0.0, 0.0), init_xy_span=(1.0, 0.5))
    n = 400
    xs = torch.linspace(-2, 2, n + 1)
    centres = (xs[1:] + xs[:-1]) / 2
    grid = torch.stack(torch.meshgrid(centres, centres, indexing="ij"), -1).reshape(-1, 2)
    with torch.no_grad():
        num = float(g(grid).sum()) * (4 / n) ** 2
    assert num == pytest.approx(float(g.integral().detach()), rel=1e-3)


def test_cost_formula_and_m2_cost():
    hm = heatmap(m2_cost=2.5)
    expect = 2.5 * sum(2 * math.pi * float(n) * float(s[0]) * float(s[1]) for n, s in zip(hm.norm.detach(), hm.sig.detach()))
    assert float(hm.get_cost()) == pytest.approx(expect, rel=1e-5)


# ---------------------------------------------------------------------------- hits and gradients
def test_training_hits_are_differentiable_wrt_every_parameter():
    gen = torch.Generator().manual_seed(1)
    hm = heatmap()
    xy = 0.2 + 0.6 * torch.rand(300, 2, generator=gen)
    hits = hm.get_hits(muons_at(xy), gen)
    assert set(hits) == {"reco_xyz", "gen_xyz", "unc_xyz", "eff"}
    assert hits["reco_xyz"].shape == (300, 3) and hits["eff"].shape == (300, 1)
    assert torch.allclose(hits["gen_xyz"][:, :2], xy) and torch.allclose(hits["reco_xyz"][:, 2], hm.z.detach().expand(300))
    assert bool(torch.isfinite(hits["reco_xyz"]).all())
    loss = hits["reco_xyz"].sum() + hits["unc_xyz"].sum() + hits["eff"].sum()
    loss.backward()
    for name, p in hm.named_parameters():
        assert p.grad is not None and bool(torch.isfinite(p.grad).all()), name
        assert float(p.grad.abs().sum()) > 0, name


def test_cost_is_differentiable_wrt_sig_and_norm():
    hm = heatmap()
    hm.get_cost().backward()
    assert float(hm.sig.grad.abs().sum()) > 0 and float(hm.norm.grad.abs().sum()) > 0
    assert hm.mu.grad is None or float(hm.mu.grad.abs().sum()) == 0


def test_realistic_evaluation_gives_physical_hits():
    gen = torch.Generator().manual_seed(2)
    hm = heatmap(realistic_validation=True, k=8)
    hm.eval()
    xy = torch.rand(4000, 2, generator=gen)
    with torch.no_grad():
        cov = hm.coverage(xy)
        hits = hm.get_hits(muons_at(xy), gen)
    hit = torch.isfinite(hits["reco_xyz"][:, 0])
    # a muon leaves a hit with probability c(xy): the hit fraction matches the mean coverage (binomial error ~0.008)
    assert float(hit.float().mean()) == pytest.approx(float(cov.mean()), abs=0.03)
    assert not bool(hit[cov < 1e-4].any())
    # hits: nominal resolution and efficiency; misses: infinite position and uncertainty, zero efficiency
    assert torch.allclose(hits["unc_xyz"][hit, :2], torch.full((int(hit.sum()), 2), 1 / RES))
    assert torch.allclose(hits["eff"][hit, 0], torch.full((int(hit.sum()),), EFF))
    assert bool(torch.isinf(hits["reco_xyz"][~hit, :2]).all()) and bool(torch.isinf(hits["unc_xyz"][~hit, :2]).all())
    assert bool((hits["eff"][~hit] == 0).all())
    assert float((hits["reco_xyz"][hit, :2] - xy[hit]).abs().max()) < 10 / RES
    # the same draw for the same seed; training mode is unaffected by realistic_validation
    h1 = hm.get_hits(muons_at(xy), torch.Generator().manual_seed(7))
    h2 = hm.get_hits(muons_at(xy), torch.Generator().manual_seed(7))
    assert torch.equal(h1["reco_xyz"], h2["reco_xyz"])
    hm.train()
    assert bool(torch.isfinite(hm.get_hits(muons_at(xy), gen)["reco_xyz"]).all())


def test_non_realistic_evaluation_keeps_the_smooth_model():
    hm = heatmap(realistic_validation=False)
    hm.eval()
    xy = torch.rand(50, 2)
    with torch.no_grad():
        assert torch.allclose(hm.get_efficiency(xy), (EFF * hm.coverage(xy)).clamp_min(RES_EFF_FLOOR))


# ---------------------------------------------------------------------------- budget and clamping
def test_assign_budget_fixes_the_cost_and_keeps_gradients():
    hm = heatmap(budget=3.0)
    assert float(hm.get_cost()) == pytest.approx(3.0, rel=1e-5)
    with torch.no_grad():
        hm.sig.mul_(1.7)
        hm.norm[0] = 4.0
    assert float(hm.get_cost()) == pytest.approx(3.0, rel=1e-5)  # the scale follows the parameters
    b = torch.tensor(2.0, requires_grad=True)
    hm.assign_budget(b)
    xy = torch.rand(100, 2)
    hm.get_efficiency(xy).sum().backward()
    assert b.grad is not None and float(b.grad) > 0  # more budget, more coverage
    hm.assign_budget(None)
    assert hm.budget is None and float(hm.budget_scale) == 1.0


def test_clamp_params():
    hm = heatmap()
    with torch.no_grad():
        hm.mu[0] = torch.tensor([-1.0, 2.0])
        hm.sig[1] = torch.tensor([1e-6, 10.0])
        hm.norm[2] = -3.0
        hm.norm[3] = 100.0
        hm.z.fill_(5.0)
    hm.clamp_params((0.0, 0.0, 0.8), (1.0, 0.5, 1.0), generator=torch.Generator().manual_seed(0))
    mu, sig, norm, z = hm.mu.detach(), hm.sig.detach(), hm.norm.detach(), float(hm.z.detach())
    assert mu[0].tolist() == [0.0, 0.5]
    assert sig[1].tolist() == pytest.approx([SIG_RANGE[0] * 1.0, SIG_RANGE[1] * 0.5])
    assert norm[2] == pytest.approx(NORM_RANGE[0]) and norm[3] == pytest.approx(NORM_RANGE[1])
    assert 1.0 - 1e-3 <= z < 1.0
    with pytest.raises(ValueError, match="musigz_high"):
        hm.clamp_params((0, 0, 1), (1, 1, 0))


# ---------------------------------------------------------------------------- layer
def test_panel_detector_layer_builds_a_heatmap_layer():
    maps = [heatmap(z=0.9), heatmap(z=0.95)]
    layer = PanelDetectorLayer("above", lw=(1.0, 1.0), z=1.0, size=0.2, panels=maps)
    assert isinstance(layer, HeatMapDetectorLayer) and layer.type_label == "heatmap" and layer._n_costs == 2
    assert layer.get_panel_zorder() == [1, 0]
    assert float(layer.get_cost()) == pytest.approx(float(maps[0].get_cost() + maps[1].get_cost()))
    with pytest.raises(ValueError, match="panels"):  # an empty list is still refused by PanelDetectorLayer
        PanelDetectorLayer("above", lw=(1.0, 1.0), z=1.0, size=0.2, panels=[])
    with pytest.raises(ValueError, match="panels"):
        HeatMapDetectorLayer("above", lw=(1.0, 1.0), z=1.0, size=0.2, panels=[heatmap(z=0.5)])
    with pytest.raises(ValueError, match="panels"):
        HeatMapDetectorLayer("above", lw=(1.0, 1.0), z=1.0, size=0.2, panels=[])


def test_layer_forward_conform_and_budget():
    gen = torch.Generator().manual_seed(3)
    maps = [heatmap(z=0.9), heatmap(z=0.95)]
    layer = HeatMapDetectorLayer("above", lw=(1.0, 1.0), z=1.0, size=0.2, panels=maps)
    mu = muons_at(torch.rand(100, 2, generator=gen), z=1.0)
    layer(mu, gen)
    hits = mu.get_hits()["above"]
    assert hits["reco_xyz"].shape == (100, 2, 3)
    assert torch.allclose(hits["gen_xyz"][:, 0, 2], torch.full((100,), 0.95))  # visited by decreasing z
    assert torch.allclose(mu.z, torch.full_like(mu.z, 0.8))
    with torch.no_grad():
        maps[0].mu.add_(5.0)
        maps[1].z.fill_(0.1)
    layer.conform_detector(generator=gen)
    assert bool((maps[0].mu <= 1.0).all()) and 0.8 < float(maps[1].z.detach()) < 1.0
    layer.assign_budget(torch.tensor([1.0, 2.0]))
    z_order = layer.get_panel_zorder()
    assert float(maps[z_order[0]].get_cost()) == pytest.approx(1.0, rel=1e-5)
    assert float(maps[z_order[1]].get_cost()) == pytest.approx(2.0, rel=1e-5)
    with pytest.raises(ValueError, match="budget"):
        layer.assign_budget(torch.tensor([1.0]))


def test_volume_budget_is_respected_and_budget_weights_get_gradients():
    gen = torch.Generator().manual_seed(4)
    vol = heatmap_volume(budget=5.0)
    assert vol.budget_weights.shape == (4,)
    with torch.no_grad():
        vol.budget_weights.copy_(torch.tensor([0.5, -0.2, 0.1, 0.3]))
    mu = muons_at(0.4 * torch.rand(200, 2, generator=gen), z=0.7)
    vol(mu, gen)
    costs = torch.stack([d.get_cost() for d in vol.get_detectors()])
    assert float(costs.sum()) == pytest.approx(5.0, rel=1e-5) and float(vol.get_cost()) == pytest.approx(5.0)
    hits = mu.get_hits()
    loss = sum(h["reco_xyz"].sum() + h["eff"].sum() for h in hits.values())
    loss.backward()
    assert vol.budget_weights.grad is not None and float(vol.budget_weights.grad.abs().sum()) > 0
    for d in vol.get_detectors():
        for hm in d.panels:
            for name, p in hm.named_parameters():
                assert p.grad is not None and float(p.grad.abs().sum()) > 0, name


def test_plot_map(tmp_path):
    hm = heatmap()
    fig = hm.plot_map()
    assert len(fig.axes) == 2
    path = tmp_path / "map.png"
    hm.plot_map(bpixelate=True, bsavefig=True, filename=path)
    assert path.stat().st_size > 0
    with pytest.raises(ValueError, match="filename"):
        hm.plot_map(bsavefig=True)


# ---------------------------------------------------------------------------- wrapper, GIF, save / load
def _wrapper(vol: Volume, **kw) -> HeatMapVolumeWrapper:
    return HeatMapVolumeWrapper(
        vol,
        mu_opt=partial(optim.SGD, lr=1e-4),
        norm_opt=partial(optim.SGD, lr=1e-3),
        sig_opt=partial(optim.SGD, lr=1e-5),
        z_pos_opt=partial(optim.SGD, lr=1e-5),
        **kw,
    )


def test_wrapper_optimiser_groups_and_errors():
    vol = heatmap_volume(budget=4.0)
    vw = _wrapper(vol, budget_opt=partial(optim.SGD, lr=1.0), loss_func=VoxelX0Loss(target_budget=None))
    assert sorted(vw.opts) == ["budget_opt", "mu_opt", "norm_opt", "sig_opt", "z_pos_opt"]
    maps = [hm for d in vol.get_detectors() for hm in d.panels]
    assert [id(p) for p in vw.opts["mu_opt"].param_groups[0]["params"]] == [id(hm.mu) for hm in maps]
    assert [id(p) for p in vw.opts["sig_opt"].param_groups[0]["params"]] == [id(hm.sig) for hm in maps]
    assert vw.get_opt_lr("norm_opt") == pytest.approx(1e-3)
    with pytest.raises(ValueError, match="budget_opt"):
        _wrapper(heatmap_volume(), budget_opt=partial(optim.SGD, lr=1.0))
    from tomopt_lib.volume.builders import build_panel_volume

    with pytest.raises(ValueError, match="DetectorHeatMap"):
        _wrapper(build_panel_volume(n_panels_above=1, n_panels_below=1, passive_n_layers=1))
    with pytest.raises(ValueError, match="PanelDetectorLayer"):
        PanelVolumeWrapper(vol, xy_pos_opt=partial(optim.SGD, lr=1.0), z_pos_opt=None, xy_span_opt=None)


def test_short_fit_gif_save_load_predict(tmp_path):
    torch.manual_seed(0)
    vol = heatmap_volume(budget=2.0)
    vw = _wrapper(vol, budget_opt=partial(optim.SGD, lr=1.0), loss_func=VoxelX0Loss(target_budget=None), seed=0)
    gen = RandomBlockPassiveGenerator(
        vol, materials=["beryllium", "lead"], block_size=None, sort_x0=False, enforce_diff_mat=True, seed=1
    )
    trn = PassiveYielder(gen, n_passives=2)
    before = {n: p.detach().clone() for n, p in vol.named_parameters()}
    gif = HeatMapGif("hm.gif", gif_length=1.0)
    vw.fit(2, 1, 200, 200, trn, trn, cbs=[gif, NoMoreNaNs()], cb_savepath=tmp_path)
    after = dict(vol.named_parameters())
    changed = {n.split(".")[-1] for n, p in after.items() if not torch.equal(p.detach(), before[n])}
    assert {"mu", "sig", "norm", "z", "budget_weights"} <= changed
    assert all(bool(torch.isfinite(p).all()) for p in after.values())
    # clamped into the layers, budget still respected
    for d in vol.get_detectors():
        for hm in d.panels:
            assert bool((hm.mu >= 0).all()) and bool((hm.mu <= 0.4).all())
            assert d.z_bottom <= float(hm.z.detach()) <= d.z_top
    assert float(torch.stack([d.get_cost() for d in vol.get_detectors()]).sum()) == pytest.approx(2.0, rel=1e-4)
    assert gif.gif_path is not None and gif.gif_path.stat().st_size > 0 and len(gif.frames) == 3
    assert not (tmp_path / "hm_frames").exists()
    # save / from_save round trip
    vw.save(tmp_path / "hm.pt")
    vw2 = HeatMapVolumeWrapper.from_save(
        tmp_path / "hm.pt",
        volume=heatmap_volume(budget=2.0),
        mu_opt=partial(optim.SGD, lr=1e-4),
        norm_opt=partial(optim.SGD, lr=1e-3),
        sig_opt=partial(optim.SGD, lr=1e-5),
        z_pos_opt=partial(optim.SGD, lr=1e-5),
        budget_opt=partial(optim.SGD, lr=1.0),
        loss_func=VoxelX0Loss(target_budget=None),
        seed=0,
    )
    for (n1, p1), (n2, p2) in zip(vol.named_parameters(), vw2.volume.named_parameters()):
        assert n1 == n2 and torch.equal(p1, p2)
    for name in vw.opts:
        assert vw2.get_opt_lr(name) == pytest.approx(vw.get_opt_lr(name))
    # prediction with the physical heat maps (realistic evaluation)
    preds = vw2.predict(PassiveYielder(gen, n_passives=1), n_mu_per_volume=300, mu_bs=300)
    assert len(preds) == 1 and preds[0][0].shape == (3, 4, 4)


def test_heatmap_gif_needs_a_heatmap_volume(tmp_path):
    from tomopt_lib.volume.builders import build_panel_volume

    vw = PanelVolumeWrapper(
        build_panel_volume(n_panels_above=1, n_panels_below=1, passive_n_layers=1),
        xy_pos_opt=None,
        z_pos_opt=None,
        xy_span_opt=None,
    )
    gif = HeatMapGif()
    gif.set_wrapper(vw)
    with pytest.raises(ValueError, match="heat-map"):
        gif.on_train_begin()
    with pytest.raises(ValueError, match="gif_length"):
        HeatMapGif(gif_length=0)


def test_no_more_nans_cleans_heatmap_gradients():
    vw = _wrapper(heatmap_volume())
    hm = vw.volume.get_detectors()[0].panels[0]
    for p in hm.parameters():
        p.grad = torch.full_like(p, math.nan)
    cb = NoMoreNaNs()
    cb.set_wrapper(vw)
    cb.on_backwards_end()
    assert all(bool((p.grad == 0).all()) for p in hm.parameters())


def test_layers_deepcopy_and_mixed_panels():
    import copy

    from tomopt_lib.volume import DetectorPanel

    vol = heatmap_volume()
    vol2 = copy.deepcopy(vol)
    assert isinstance(vol2.get_detectors()[0], HeatMapDetectorLayer)
    for p1, p2 in zip(vol.parameters(), vol2.parameters()):
        assert torch.equal(p1, p2) and p1 is not p2
    panel = DetectorPanel(res=RES, eff=EFF, init_xyz=(0.5, 0.5, 0.9), init_xy_span=(0.5, 0.5))
    layer = PanelDetectorLayer("above", lw=(1.0, 1.0), z=1.0, size=0.2, panels=[panel])
    assert type(copy.deepcopy(layer)) is PanelDetectorLayer
    with pytest.raises(ValueError, match="panels"):  # one layer holds one detector type
        PanelDetectorLayer("above", lw=(1.0, 1.0), z=1.0, size=0.2, panels=[panel, heatmap()])
