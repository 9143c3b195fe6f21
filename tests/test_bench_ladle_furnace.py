"""Ladle-furnace benchmark (``tomopt_lib.benchmarks.ladle_furnace``): layouts, detectors, fill-level inference,
losses, de-biasing, plots and a tiny end-to-end fit. Seeded and fast."""

from __future__ import annotations

import time
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from tomopt_lib.benchmarks.ladle_furnace import (
    EdgeDetLadleFurnaceFillLevelInferrer,
    LadleFurnaceIntClassLoss,
    LadleFurnacePassiveGenerator,
    LinearCorrectionCallback,
    PocaZLadleFurnaceFillLevelInferrer,
    SpreadRangeLoss,
    compare_init_optimised_2,
    compare_init_to_optimised,
    compare_optimised_to_baselines,
    compare_raw_init_to_bias_corrected_init,
    get_baseline_detector_1,
    get_baseline_detector_2,
    get_initial_detector,
)
from tomopt_lib.benchmarks.ladle_furnace.data import ladle_furnace_cube
from tomopt_lib.benchmarks.ladle_furnace.inference import fill_height_to_layer, fit_linear_correction
from tomopt_lib.benchmarks.ladle_furnace.loss import spread_range
from tomopt_lib.benchmarks.ladle_furnace.plotting import debiased_mse
from tomopt_lib.core import X0
from tomopt_lib.inference import PanelX0Inferrer
from tomopt_lib.optimisation import PanelVolumeWrapper, PassiveYielder, VolumeMSELoss
from tomopt_lib.volume import PanelDetectorLayer, SigmoidDetectorPanel, Volume

FILLS = [round(0.6 + 0.1 * i, 1) for i in range(8)]  # 0.6 ... 1.3 m


@pytest.fixture(scope="module")
def volume() -> Volume:
    return Volume(get_baseline_detector_1())


# ----------------------------------------------------------------------------------------------- detectors
@pytest.mark.parametrize(
    ("builder", "z_above", "z_below"),
    [
        (get_initial_detector, [1.47, 1.45, 1.43, 1.41], [0.39, 0.37, 0.35, 0.33]),
        (get_baseline_detector_1, [1.79, 1.66, 1.53, 1.41], [0.39, 0.26, 0.13, 0.01]),
        (get_baseline_detector_2, [1.79, 1.74, 1.46, 1.41], [0.39, 0.34, 0.06, 0.01]),
    ],
)
def test_detectors_geometry_and_cost(builder, z_above: list[float], z_below: list[float]) -> None:
    layers = builder(span=0.8)
    vol = Volume(layers)
    dets = vol.get_detectors()
    assert [d.pos for d in dets] == ["above", "below"] and all(isinstance(d, PanelDetectorLayer) for d in dets)
    assert len(vol.get_passives()) == 10
    bottom, top = (float(v) for v in vol.get_passive_z_range())
    assert bottom == pytest.approx(0.4) and top == pytest.approx(1.4) and float(vol.h) == pytest.approx(1.8)
    for det, zs in zip(dets, (z_above, z_below)):
        assert len(det.panels) == 4 and all(isinstance(p, SigmoidDetectorPanel) for p in det.panels)
        assert [float(p.z.detach()) for p in det.panels] == pytest.approx(zs)
        assert all(torch.allclose(p.xy_span, torch.tensor([0.8, 0.8])) for p in det.panels)
        assert all(float(p.resolution) == pytest.approx(1e4) and float(p.efficiency) == pytest.approx(0.9) for p in det.panels)
    assert float(vol.get_cost().detach()) == pytest.approx(8 * 0.64, rel=1e-6)
    assert float(Volume(builder(), budget=6.0).get_cost()) == pytest.approx(6.0, rel=1e-5)  # fixed-budget mode
    assert all(p.energy_loss for p in Volume(builder(energy_loss=True)).get_passives())


# ----------------------------------------------------------------------------------------------- layouts
def test_generator_layouts_in_range_and_reproducible(volume: Volume) -> None:
    gen = LadleFurnacePassiveGenerator(volume, seed=7)
    targets = []
    for _ in range(60):
        func, targ = gen.get_data()
        volume.load_rad_length(func, targ)
        cube = volume.get_rad_cube()  # (z, x, y), z index 0 = bottom
        h = float(targ)
        k = int(round((h - 0.4) / 0.1)) - 1  # topmost liquid layer
        targets.append(round(h, 1))
        assert 1 <= k <= 8
        steel = torch.tensor(X0["steel"])
        for wall in (cube[0], cube[:, 0], cube[:, -1], cube[:, :, 0], cube[:, :, -1]):
            assert torch.allclose(wall, steel.expand_as(wall))
        inner = cube[:, 1:-1, 1:-1]
        assert torch.allclose(inner[1 : k + 1], torch.tensor(X0["hot liquid steel"]))
        assert torch.allclose(inner[k + 1], torch.tensor(X0["slag"]))  # at least one slag layer
        above = inner[k + 1 :]
        is_slag = torch.isclose(above, torch.tensor(X0["slag"]))
        assert bool((is_slag | torch.isclose(above, torch.tensor(X0["air"]))).all())
        assert bool((is_slag.float().diff(dim=0) <= 0).all())  # slag below, air above
        assert 1 <= int(is_slag[:, 0, 0].sum()) <= 2  # at most max_slag_thickness = 0.2 m
    assert set(targets) == set(FILLS)  # every fill height 0.6 ... 1.3 m occurs
    again = LadleFurnacePassiveGenerator(volume, seed=7)
    a = [float(again.get_data()[1]) for _ in range(60)]
    assert a == pytest.approx([float(t) for t in targets])
    assert torch.allclose(gen.fill_heights, torch.tensor(FILLS))


def test_generator_fixed_layouts_and_errors(volume: Volume) -> None:
    gen = LadleFurnacePassiveGenerator(volume, seed=0)
    func, targ = gen.get_fixed_data(0.9, 1.2)
    volume.load_rad_length(func, targ)
    inner = volume.get_rad_cube()[:, 1:-1, 1:-1].mean((1, 2))
    expect = [X0["steel"]] + [X0["hot liquid steel"]] * 4 + [X0["slag"]] * 3 + [X0["air"]] * 2
    assert float(targ) == pytest.approx(0.9) and torch.allclose(inner, torch.tensor(expect))
    with pytest.raises(ValueError, match="fixed_mat_z"):
        gen.get_fixed_data(0.95)
    with pytest.raises(ValueError, match="fixed_slag_z"):
        gen.get_fixed_data(0.9, 0.8)
    with pytest.raises(ValueError, match="material"):
        LadleFurnacePassiveGenerator(volume, fill_material="unobtainium")


# ----------------------------------------------------------------------------------------------- edge detection
def test_edge_det_helpers() -> None:
    e = EdgeDetLadleFurnaceFillLevelInferrer
    prof = torch.tensor([5.0, 5.0, 5.0, 1.0, 1.0])
    assert torch.allclose(e.avg_1d(prof), torch.tensor([5.0, 5.0, 11 / 3, 7 / 3, 1.0]))
    assert torch.allclose(e.gauss_1d(torch.full((6,), 2.0)), torch.full((6,), 2.0))
    assert torch.allclose(e.edge_det(torch.arange(5.0), torch.tensor([1.0, -2.0, 1.0]))[1:-1], torch.zeros(3))
    cube = torch.rand(6, 5, 4, generator=torch.Generator().manual_seed(0))
    assert e.remove_ladle(cube).shape == (6, 3, 2)
    assert torch.allclose(e.avg_3d(torch.full((4, 5, 6), 3.0)), torch.full((4, 5, 6), 3.0))
    assert torch.allclose(e.gauss_3d(torch.full((4, 5, 6), 3.0)), torch.full((4, 5, 6), 3.0))
    assert torch.allclose(e.avg_3d(cube)[2, 2, 2], cube[1:4, 1:4, 1:4].mean())
    assert torch.allclose(e.avg_layers(cube), cube.mean((1, 2)))
    assert torch.allclose(e.max_div_min(torch.tensor([1.0, 3.0])), torch.tensor([0.5, 1.5]))
    assert torch.allclose(e.max_sub_min(torch.tensor([1.0, 3.0, 2.0])), torch.tensor([0.0, 1.0, 0.5]))
    assert torch.equal(e.negative(prof), -prof)


def test_edge_det_recovers_fill_layer_from_true_maps(volume: Volume) -> None:
    inf = EdgeDetLadleFurnaceFillLevelInferrer(partial(PanelX0Inferrer, tomopt_exact=True), volume)
    ridge = inf.ridge_1d_0(torch.tensor([5.0, 5.0, 1.0, 1.0]))
    assert torch.allclose(ridge, torch.tensor([0.0, -4.0, 0.0, 0.0]))
    assert torch.allclose(inf.laplacian_1d(torch.tensor([0.0, 1.0, 4.0, 9.0]))[1:-1], torch.tensor([2.0, 2.0]))
    assert torch.allclose(inf.prewit_1d(torch.tensor([0.0, 1.0, 4.0, 9.0]))[1:-1], torch.tensor([4.0, 8.0]))
    for n_fill in range(1, 9):
        for n_slag in range(1, 10 - n_fill):
            cube = ladle_furnace_cube(
                n_zxy=(10, 10, 10),
                n_fill=n_fill,
                n_slag=n_slag,
                x0_furnace=X0["steel"],
                x0_fill=X0["hot liquid steel"],
                x0_slag=X0["slag"],
            )
            probs = inf.x02probs(cube)
            assert probs.shape == (1, 10) and float(probs.sum()) == pytest.approx(1.0, abs=1e-5)
            assert int(probs.argmax()) == n_fill, (n_fill, n_slag)
    with pytest.raises(ValueError, match="unknown steps"):
        EdgeDetLadleFurnaceFillLevelInferrer(PanelX0Inferrer, volume, pipeline=["avg_layers", "bogus"])


# ----------------------------------------------------------------------------------------------- PoCA z
def _predict(vol: Volume, inferrer, fills: list[float], n_mu: int, seed: int = 3) -> list[torch.Tensor]:
    gen = LadleFurnacePassiveGenerator(vol, seed=1)
    data = [gen.get_fixed_data(h, min(h + 0.1, 1.4)) for h in fills]
    w = PanelVolumeWrapper(vol, xy_pos_opt=None, z_pos_opt=None, xy_span_opt=None, partial_volume_inferrer=inferrer, seed=seed)
    return [
        torch.as_tensor(p).reshape(-1)
        for p, _ in w.predict(PassiveYielder(data, shuffle=False), n_mu_per_volume=n_mu, mu_bs=n_mu)
    ]


def test_edge_det_on_simulated_maps(volume: Volume) -> None:
    """3000 muons per layout through baseline 1, TomOpt's PoCA X0 maps: the fill layer is found up to a compression
    (measured: 0.6, 0.8, 0.8, 1.0 m for 0.6, 0.8, 1.0, 1.3 m; the PoCAs of a muon crossing the liquid sit around the
    middle of it, so the sharpest drop of the map lies below the surface for high fills): errors <= 0.3 m, ordered."""
    inferrer = partial(EdgeDetLadleFurnaceFillLevelInferrer, partial(PanelX0Inferrer, tomopt_exact=True), output_probs=False)
    fills = [0.6, 0.8, 1.0, 1.3]
    preds = torch.cat(_predict(volume, inferrer, fills, 3000))
    err = preds - torch.tensor(fills)
    assert float(err.abs().max()) <= 0.3 + 1e-6 and float(err.square().mean().sqrt()) < 0.2, preds
    assert bool((preds.diff() >= 0).all())


def test_pocaz_recovers_fill_height(volume: Volume) -> None:
    """Simulated 2000 muons per layout through baseline 1, one slag layer: without de-biasing the fill heights come
    back with a mean absolute error < 0.08 m (per-layout noise ~0.05 m, bias ~ +0.04 m from the slag), none off by
    0.2 m, and de-biasing has a slope near 1."""
    fills = [0.6, 0.8, 1.0, 1.2, 1.3]
    preds = torch.cat(_predict(volume, PocaZLadleFurnaceFillLevelInferrer, fills, 2000))
    assert preds.shape == (5,)
    err = (preds - torch.tensor(fills)).abs()
    assert float(err.mean()) < 0.08 and float(err.max()) < 0.2, preds
    assert float(np.corrcoef(preds.numpy(), fills)[0, 1]) > 0.95
    w, _ = fit_linear_correction(preds, torch.tensor(fills))
    assert 0.75 < float(w) < 1.25


def test_pocaz_properties_and_gradients() -> None:
    torch.manual_seed(0)
    vol = Volume(get_initial_detector())
    gen = LadleFurnacePassiveGenerator(vol, seed=2)
    vol.load_rad_length(*gen.get_fixed_data(1.0))
    from tomopt_lib.inference import ScatterBatch
    from tomopt_lib.muon import MuonBatch, MuonGenerator2016

    mu = MuonBatch(MuonGenerator2016.from_volume(vol)(500, generator=torch.Generator().manual_seed(1)), init_z=vol.h)
    vol(mu, generator=torch.Generator().manual_seed(2))
    inf = PocaZLadleFurnaceFillLevelInferrer(vol, smooth=0.1)
    assert inf.n_mu == 0
    inf.add_scatters(ScatterBatch(mu, vol))
    n = inf.n_mu
    assert n > 100 and inf.muon_poca_xyz.shape == inf.muon_poca_xyz_unc.shape == (n, 3)
    assert inf.muon_efficiency.shape == (n, 1) and float(inf.smooth) == pytest.approx(0.1)
    w = inf.muon_weights()
    assert bool((w >= 0).all()) and float((w == w.max()).float().mean()) >= 0.15  # clipped at the 84th percentile
    pred = inf.pred_height
    assert pred.shape == (1,) and 0.4 < float(pred.detach()) < 1.6
    pred.sum().backward()
    grads = [p.grad for det in vol.get_detectors() for panel in det.panels for p in (panel.xy, panel.z, panel.xy_span)]
    assert all(g is not None and bool(torch.isfinite(g).all()) for g in grads)
    assert any(float(g.abs().sum()) > 0 for g in grads if g is not None)
    with pytest.raises(ValueError, match="smooth"):
        PocaZLadleFurnaceFillLevelInferrer(vol, smooth=0.0)


# ----------------------------------------------------------------------------------------------- losses
def test_int_class_loss_hand_values(volume: Volume) -> None:
    gen = LadleFurnacePassiveGenerator(volume, seed=0)
    volume.load_rad_length(*gen.get_fixed_data(0.7))  # topmost liquid layer k = 2
    assert int(fill_height_to_layer(volume.target, volume)) == 2
    loss = LadleFurnaceIntClassLoss(use_mse=False, target_budget=None)
    errs = torch.tensor([2.0, 1, 0, 1, 2, 3, 4, 5, 6, 7])  # |2 - j|, sum 31
    probs = torch.zeros(1, 10)
    probs[0, 4] = 1.0
    probs.requires_grad_(True)
    val = loss(probs, volume)
    assert float(val.detach()) == pytest.approx(2 / 31)
    val.backward()
    assert torch.allclose(probs.grad, (errs / 31)[None])
    assert float(loss(torch.full((1, 10), 0.1), volume)) == pytest.approx(0.1)
    one_hot = torch.zeros(1, 10)
    one_hot[0, 2] = 1.0
    assert float(loss(one_hot, volume)) == 0.0
    sq = LadleFurnaceIntClassLoss(use_mse=True, target_budget=None, pred_int_start=1)  # columns are layers 1 ... 10
    sq_errs = (2.0 - torch.arange(1, 11)).square()
    assert float(sq(probs.detach(), volume)) == pytest.approx(float(sq_errs[4] / sq_errs.sum()))
    budget = LadleFurnaceIntClassLoss(use_mse=False, target_budget=5.12, cost_coeff=1.0)
    assert float(budget(one_hot, volume).detach()) == pytest.approx(1.0, rel=1e-4)  # error 0 + 2 sigmoid(0) at cost = budget


def test_spread_range_values_and_invariance() -> None:
    p = torch.tensor([1.0, 3.0, 10.0, 12.0], requires_grad=True)
    t = torch.tensor([0.6, 0.6, 0.7, 0.7])
    val = spread_range(p, t)
    assert float(val.detach()) == pytest.approx(1 / 9)
    val.backward()
    # dL/dp for group means 2, 11 (range 9) and stds 1: d(mean std)/dp_i = (p_i - m_g) / (n_g s_g) / n_groups
    expect = torch.tensor([-0.25, 0.25, -0.25, 0.25]) / 9 + torch.tensor([1.0, 1.0, -1.0, -1.0]) * (1 / 81) / 2
    assert torch.allclose(p.grad, expect, atol=1e-6)
    assert float(spread_range(3 * p.detach() + 0.2, t)) == pytest.approx(1 / 9)
    assert float(spread_range(torch.tensor([1.0, 2.0]), torch.tensor([0.6, 0.7]))) == 0.0  # no repeated target


# ----------------------------------------------------------------------------------------------- de-biasing
def test_linear_correction() -> None:
    p = torch.tensor([0.1, 0.5, 0.9, 1.3])
    w, b = fit_linear_correction(p, 2 * p + 0.3)
    assert float(w) == pytest.approx(2.0) and float(b) == pytest.approx(0.3)
    for partial_opt in (None, partial(torch.optim.SGD, lr=0.5)):
        cb = LinearCorrectionCallback(partial_opt, n_steps=300)
        vol = SimpleNamespace(target=None)
        cb.wrapper = SimpleNamespace(fit_params=SimpleNamespace(state="train", pred=None), volume=vol)  # type: ignore[assignment]
        cb.on_train_begin()
        cb.on_volume_batch_begin()
        for pi in p:
            vol.target = 2 * pi + 0.3
            cb.wrapper.fit_params.pred = pi.reshape(1)
            cb.on_x0_pred_end()
            assert torch.allclose(cb.wrapper.fit_params.pred, pi.reshape(1))  # initial (w, b) = (1, 0)
        cb.on_backwards_end()
        assert float(cb.weight.detach()) == pytest.approx(2.0, abs=1e-3) and float(cb.bias.detach()) == pytest.approx(
            0.3, abs=1e-3
        )
        cb.wrapper.fit_params.state = "valid"
        cb.wrapper.fit_params.pred = torch.tensor([1.0])
        cb.on_x0_pred_end()
        assert float(cb.wrapper.fit_params.pred) == pytest.approx(2.3, abs=1e-3)


# ----------------------------------------------------------------------------------------------- plots
def test_comparison_plots(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    true = np.repeat(FILLS, 3)

    def frame(scale: float, noise: float) -> pd.DataFrame:
        return pd.DataFrame({"pred": 0.4 + scale * true + rng.normal(0, noise, len(true)), "gen_target": true})

    start, opt, bl1, bl2 = frame(0.5, 0.05), frame(0.9, 0.01), frame(1.0, 0.02), frame(1.0, 0.03)
    exact = pd.DataFrame({"pred": 0.5 * true + 0.1, "gen_target": true})
    assert debiased_mse(exact) == pytest.approx(0.0, abs=1e-20)
    assert debiased_mse(opt) < debiased_mse(start)
    compare_raw_init_to_bias_corrected_init(start, tmp_path / "raw_vs_corrected")
    compare_init_to_optimised(start, opt, tmp_path / "init_opt.png")
    compare_init_optimised_2(start, opt, tmp_path / "init_opt2")
    fig = compare_optimised_to_baselines(bl1, bl2, opt, tmp_path / "baselines")
    assert len(fig.axes[0].get_legend().get_texts()) == 4
    for name in ("raw_vs_corrected", "init_opt", "init_opt2", "baselines"):
        assert (tmp_path / f"{name}.png").stat().st_size > 0
    with pytest.raises(ValueError, match="gen_target"):
        compare_init_to_optimised(start.drop(columns="gen_target"), opt, None)


# ----------------------------------------------------------------------------------------------- end to end
def test_end_to_end_fit_and_predict(tmp_path: Path) -> None:
    """Fixed budget 6, PoCA-z fill levels with linear de-biasing and the spread/range loss: one epoch of 4 layouts."""
    t0 = time.time()
    torch.manual_seed(0)
    vol = Volume(get_initial_detector(), budget=6.0)
    gen = LadleFurnacePassiveGenerator(vol, seed=4)
    trn = [gen.get_fixed_data(h) for h in (0.7, 0.7, 1.1, 1.1)]
    wrapper = PanelVolumeWrapper(
        vol,
        xy_pos_opt=partial(torch.optim.SGD, lr=1e-3),
        z_pos_opt=partial(torch.optim.SGD, lr=1e-3),
        xy_span_opt=None,
        budget_opt=partial(torch.optim.SGD, lr=1e-2),
        loss_func=VolumeMSELoss(target_budget=None),
        partial_volume_inferrer=PocaZLadleFurnaceFillLevelInferrer,
        seed=5,
    )
    before = [p.detach().clone() for p in vol.parameters()]
    lin, spread = LinearCorrectionCallback(), SpreadRangeLoss()
    wrapper.fit(1, passive_bs=4, n_mu_per_volume=300, mu_bs=300, trn_passives=trn, cbs=[lin, spread], cb_savepath=tmp_path)
    assert wrapper.fit_params.n_updates == 1 and not wrapper.fit_params.skip_backward
    assert any(not torch.equal(a, b) for a, b in zip(before, vol.parameters()))
    assert float(wrapper.fit_params.mean_loss) > 0 and float(vol.get_cost()) == pytest.approx(6.0, rel=1e-4)
    assert (float(lin.weight.detach()), float(lin.bias.detach())) != (1.0, 0.0)
    preds = wrapper.predict(PassiveYielder(trn[:2], shuffle=False), n_mu_per_volume=300, mu_bs=300, cbs=[lin])
    assert len(preds) == 2 and all(0.0 < float(np.asarray(p).reshape(-1)[0]) < 2.5 for p, _ in preds)
    assert time.time() - t0 < 20


def test_end_to_end_edge_detection_fit(tmp_path: Path) -> None:
    """Edge-detection fill layers with the integer-class loss: one epoch of 2 layouts, then argmax fill heights."""
    t0 = time.time()
    torch.manual_seed(1)
    vol = Volume(get_baseline_detector_1(), budget=6.0)
    gen = LadleFurnacePassiveGenerator(vol, seed=6)
    inferrer = partial(EdgeDetLadleFurnaceFillLevelInferrer, partial(PanelX0Inferrer, tomopt_exact=True))
    wrapper = PanelVolumeWrapper(
        vol,
        xy_pos_opt=partial(torch.optim.SGD, lr=1e-3),
        z_pos_opt=partial(torch.optim.SGD, lr=1e-3),
        xy_span_opt=None,
        loss_func=LadleFurnaceIntClassLoss(use_mse=True, target_budget=None),
        partial_volume_inferrer=inferrer,
        seed=7,
    )
    before = [p.detach().clone() for p in vol.parameters()]
    trn = [gen.get_fixed_data(0.8), gen.get_fixed_data(1.2)]
    wrapper.fit(1, passive_bs=2, n_mu_per_volume=400, mu_bs=400, trn_passives=trn, cb_savepath=tmp_path)
    assert wrapper.fit_params.n_updates == 1 and 0 < float(wrapper.fit_params.mean_loss) < 1
    assert any(not torch.equal(a, b) for a, b in zip(before, vol.parameters()))
    wrapper.partial_volume_inferrer = partial(inferrer, output_probs=False)
    preds = wrapper.predict(PassiveYielder(trn, shuffle=False), n_mu_per_volume=400, mu_bs=400)
    heights = [float(torch.as_tensor(p).reshape(-1)[0]) for p, _ in preds]
    assert all(any(h == pytest.approx(f, abs=1e-5) for f in FILLS + [0.5, 1.4]) for h in heights)  # layer tops
    assert time.time() - t0 < 20
