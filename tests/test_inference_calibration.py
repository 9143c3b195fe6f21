"""Calibration of the X0 inferrers against truth (seeded, energy loss on): medians, pull widths, low statistics.

The full table over 20 seeds, three momentum models and 1k / 10k muons is ``benchmarks/bench_calibration.py``.
"""

import numpy as np
import pytest
import torch
from layouts import lead_in_beryllium

from tomopt_lib.core import X0
from tomopt_lib.inference import PanelX0Inferrer, PathX0Inferrer, ScatterBatch
from tomopt_lib.inference.momentum import MomentumModel
from tomopt_lib.muon import MuonBatch
from tomopt_lib.muon.generation import MuonGenerator2016
from tomopt_lib.volume.builders import build_panel_volume


def uniform(material):
    return lambda *, z, lw, size: torch.full((10, 10), X0[material])


def simulate(layout, n_mu, seed):
    vol = build_panel_volume(energy_loss=True)
    vol.record_xyz_hist = False
    vol.load_rad_length(layout)
    gen = MuonGenerator2016.from_volume(vol)
    rng = torch.Generator().manual_seed(seed)
    sbs = []
    with torch.no_grad():
        for i in range(0, n_mu, 2000):
            mu = MuonBatch(gen(min(2000, n_mu - i), generator=rng), init_z=vol.h)
            vol(mu, generator=rng)
            sbs.append(ScatterBatch(mu, vol))
    return vol, sbs


def predict(cls, vol, sbs, **kw):
    inf = cls(vol, **kw)
    for sb in sbs:
        inf.add_scatters(sb)
    with torch.no_grad():
        pred, unc = inf.get_prediction_and_unc()
    return inf, pred.numpy(), unc.numpy()


@pytest.fixture(scope="module")
def iron():
    return simulate(uniform("iron"), 10000, 21)


@pytest.mark.parametrize("momentum", ["true", "smeared", "unknown"])
def test_poca_uniform_iron_calibrated(iron, momentum):
    vol, sbs = iron
    _, pred, _ = predict(PanelX0Inferrer, vol, sbs, momentum=MomentumModel(momentum, seed=1))
    assert 0.8 <= np.median(pred / X0["iron"]) <= 1.25


def test_poca_unknown_momentum_stays_positive_at_low_statistics():
    """With 1k muons a voxel may hold a few high-momentum muons that scatter less than their noise; the mixture EM's
    multiplicative updates keep every density > 0 (a ratio of sums once put 6 of 3600 iron voxels and 16 of 3600
    lead-in-beryllium voxels at the X0 = 1e4 m clamp, which made training losses explode), and the uncertainty stays
    of the size of the spread (var = rho^2 / n_eff)."""
    preds = []
    for seed in range(4):
        vol, sbs = simulate(uniform("iron"), 1000, 308 + seed)  # 308 and 310 hit the clamp before
        inf, pred, unc = predict(PanelX0Inferrer, vol, sbs, momentum="unknown")
        assert pred.max() < 100 * X0["iron"] and pred.min() > 0.01 * X0["iron"]  # nowhere near the clamps
        measured = ~inf.low_data.numpy()  # the others are flagged: uncertainty >= prediction by rule
        assert measured.sum() > 50 and np.median((unc / pred)[measured]) < 0.6
        preds.append(pred)
    assert 0.67 <= np.median(np.stack(preds) / X0["iron"]) <= 1.5


def test_tomopt_exact_estimator_kept_and_biased(iron):
    """TomOpt's estimator (one flag) attributes the whole path's scatter to one voxel height: X0 several times low."""
    vol, sbs = iron
    _, pred, _ = predict(PanelX0Inferrer, vol, sbs, tomopt_exact=True)
    assert np.median(pred / X0["iron"]) < 0.5


@pytest.mark.parametrize("momentum", ["true", "smeared", "unknown"])
def test_path_uniform_iron_calibrated(iron, momentum):
    """Without a momentum measurement the likelihood is a mixture over the spectrum's momenta (EM over its nodes);
    plugging in the mean 1/p^2 instead gave long-tailed per-voxel estimates with a median of ~1.3-2.2. Without a
    momentum measurement one block of 10k muons varies a lot (medians 1.27 / 1.23 / 1.01 / 1.05 for seeds 21-24), so
    three seeds are pooled there (1.16; 20 seeds in the calibration benchmark: 1.1)."""
    vol, sbs = iron
    _, pred, _ = predict(PathX0Inferrer, vol, sbs, momentum=momentum)
    ratios = [pred / X0["iron"]]
    if momentum == "unknown":
        for seed in (22, 23):
            vol, sbs = simulate(uniform("iron"), 10000, seed)
            ratios.append(predict(PathX0Inferrer, vol, sbs, momentum=momentum)[1] / X0["iron"])
    assert 0.8 <= np.median(np.stack(ratios)) <= 1.25


def test_path_unknown_momentum_has_no_depth_gradient(iron):
    """Without a momentum measurement the muons still slow down in the block, so the scattering per unit length grows
    with depth; without that profile the path inferrer reads the top layers too light and the bottom ones too dense
    (6 seeds: X0 1.65x / 0.68x the truth). With the spectrum's mean profile the two are alike (1.26x / 1.31x)."""
    vol, sbs = iron

    def top_over_bottom(profile: bool) -> float:
        inf = PathX0Inferrer(vol, momentum="unknown")
        inf.unknown_momentum_profile = profile
        for sb in sbs:
            inf.add_scatters(sb)
        with torch.no_grad():
            pred = inf.get_prediction().numpy()
        return float(np.median(pred[-1]) / np.median(pred[0]))  # layer index 0 = bottom

    assert 0.7 <= top_over_bottom(True) <= 1.4
    assert top_over_bottom(False) > 1.6


def test_unknown_momentum_energy_loss_matches_the_crossings(iron):
    """With energy loss the unknown model's mean 1/(beta p)^2 over the crossings (spectrum at the measured angle,
    survivors of the named material's loss along the path in the block) is within 8 % of the true crossings' mean
    (measured -2 %). Three errors it caught: a homogeneous X0 dominated by tracks that miss panels (efficiency ~0,
    scatter ~1 rad) once named a material 5x too dense, and a path of height / cos(theta) ignored muons that leave
    through a side (-31 %); a constant energy loss (E_out = E_in - dE) let spectrum muons that the rise of the
    stopping power near the end of their range stops come out slowly, with a large 1/(beta p)^2 (+17 %)."""
    vol, sbs = iron
    unknown, _, _ = predict(PathX0Inferrer, vol, sbs, momentum="unknown")
    true, _, _ = predict(PathX0Inferrer, vol, sbs, momentum="true")
    d_unk, d_true = unknown._get_muon_data(), true._get_muon_data()
    assert len(d_unk["mom"]) == len(d_true["mom"])
    e = d_true["efficiency"][:, 0]
    mean_unk = float((e * d_unk["inv_p2"][:, 0]).sum() / e.sum())
    mean_true = float((e * d_true["inv_p2"][:, 0]).sum() / e.sum())
    assert mean_unk == pytest.approx(mean_true, rel=0.08)


def test_path_separates_lead_in_beryllium():
    vol, sbs = simulate(lead_in_beryllium, 10000, 5)
    truth = vol.get_rad_cube().numpy()
    _, pred, _ = predict(PathX0Inferrer, vol, sbs)
    lead = truth < 0.01
    assert 0.6 <= np.median(pred[lead] / truth[lead]) <= 2.0
    assert 0.6 <= np.median(pred[~lead] / truth[~lead]) <= 1.6
    assert np.median(pred[lead]) < 0.1 * np.median(pred[~lead])
    # against the plain 3 x 3 x 3 prior, the edge-aware one does not smooth across the lead / beryllium step, and the
    # default in-layer prior does not smear the two lead layers into the beryllium above and below: lead denser
    _, box, _ = predict(PathX0Inferrer, vol, sbs, prior_extent=(3, 3))
    _, edged, _ = predict(PathX0Inferrer, vol, sbs, edge_scale=0.25, prior_extent=(3, 3))
    assert np.median(edged[lead] / truth[lead]) < 0.95 * np.median(box[lead] / truth[lead])
    assert np.median(pred[lead] / truth[lead]) < 0.95 * np.median(box[lead] / truth[lead])


def test_path_in_layer_shrinkage_keeps_the_beryllium_around_lead_light():
    """At 1k muons the beryllium voxels next to the lead corner are data-poor; the final shrinkage over the 3 x 3 x 3 box
    (the default) weights their neighbourhood by information, so the lead layers above or below set them (20 seeds:
    0.61x their X0); within the layer, ``shrink_extent=(1, 3)``, they stay lighter (0.87x; the lead 1.70 -> 1.85x)."""
    vol, sbs = simulate(lead_in_beryllium, 1000, 7)
    truth = vol.get_rad_cube().numpy()
    be = truth > 0.1
    _, box, _ = predict(PathX0Inferrer, vol, sbs)
    _, in_layer, _ = predict(PathX0Inferrer, vol, sbs, shrink_extent=(1, 3))
    assert np.median(in_layer[be] / truth[be]) > 1.15 * np.median(box[be] / truth[be])


def test_path_in_layer_prior_keeps_a_thin_slab():
    """An iron slab of two layers across the whole footprint of a beryllium block: a smoothness prior over the
    3 x 3 x 3 box sets the depth profile (the weakly measured direction) and smears the slab into the beryllium above
    and below (20 seeds: 1.3x its X0); the default prior, within each layer, leaves the depth to the data (1.05x)."""

    def layout(*, z, lw, size):
        top = float(torch.as_tensor(z).reshape(-1)[0])
        return torch.full((10, 10), X0["iron" if abs(top - 0.5) < 1e-6 or abs(top - 0.6) < 1e-6 else "beryllium"])

    vol, sbs = simulate(layout, 10000, 41)
    truth = vol.get_rad_cube().numpy()
    slab = truth < 0.1
    _, pred, _ = predict(PathX0Inferrer, vol, sbs)
    _, box, _ = predict(PathX0Inferrer, vol, sbs, prior_extent=(3, 3))
    assert 0.8 <= np.median(pred[slab] / truth[slab]) <= 1.2
    assert np.median(box[slab] / truth[slab]) > 1.1 * np.median(pred[slab] / truth[slab])


def test_poca_pull_width_uniform():
    """Over 8 seeds the relative spread of the PoCA predictions matches the reported uncertainty within 25 %."""
    preds, rel = [], []
    for seed in range(8):
        vol, sbs = simulate(uniform("aluminium"), 3000, 100 + seed)
        inf, pred, unc = predict(PanelX0Inferrer, vol, sbs)
        preds.append(pred)
        rel.append(unc / pred)
    preds, rel = np.stack(preds), np.stack(rel)
    width = np.median(np.log(preds).std(0, ddof=1) / np.median(rel, 0))
    assert 0.75 <= width <= 1.25


@pytest.mark.slow
def test_path_pull_width_uniform():
    """Over 5 seeds of 5k muons the relative spread of the path inferrer's predictions for a uniform iron block matches
    its reported uncertainty (the linear response through the smoothness prior; before it, the reported uncertainty
    was ~3.5x the spread: width 0.28 here). Seeded: measured 0.76 (5 seeds bias the spread low by ~8 %)."""
    preds, rel, low = [], [], []
    for seed in range(5):
        vol, sbs = simulate(uniform("iron"), 5000, 200 + seed)
        inf, pred, unc = predict(PathX0Inferrer, vol, sbs)
        preds.append(pred)
        rel.append(unc / pred)
        low.append(inf.low_data.numpy())
    preds, rel, ok = np.stack(preds), np.stack(rel), ~np.stack(low).any(0)
    assert ok.mean() > 0.3
    width = np.median((np.log(preds).std(0, ddof=1) / np.median(rel, 0))[ok])
    assert 0.65 <= width <= 1.4


def test_path_no_runaway_at_low_statistics():
    """With ~300 muons crossing the block no voxel ends at a clamp of x0_range; prior-set voxels say so."""
    vol, sbs = simulate(uniform("iron"), 700, 9)
    inf, pred, unc = predict(PathX0Inferrer, vol, sbs)
    assert inf.n_mu >= 300
    lo, hi = inf.x0_range
    assert (pred > 1.01 * lo).all() and (pred < 0.99 * hi).all()
    low = inf.low_data.numpy()
    assert (unc[low] >= pred[low]).all()
    assert 0.5 <= np.median(pred / X0["iron"]) <= 2.0


def test_path_homogeneous_start_has_the_log_term(iron):
    """The path inferrer's homogeneous start, the method-of-moments density of the whole block that seeds the updates.
    Solved with Highland's log term (1 + B ln X)^2 it matches a uniform iron block (seeds 21-25: 0.96-1.00). Without
    the log term X0 came out ~0.75x (the term is ~1.3 at the ~34 X0 of the 0.6 m of iron), and with equal weights for
    all muons the few lowest-momentum ones set the level (0.84-1.08 over the same seeds; 0.44-1.63 at 1k muons)."""
    vol, sbs = iron
    inf, _, _ = predict(PathX0Inferrer, vol, sbs)
    assert 0.9 <= float(inf.homogeneous_x0) / X0["iron"] <= 1.1


def test_path_data_poor_voxels_fall_back_to_the_typical_material():
    """At 1k muons (1.5 per voxel) many beryllium voxels around the lead corner have too few muons and take their
    neighbourhood's density blended with the block's typical density. That fallback is the median of ln rho over the
    measured voxels (beryllium here), not the homogeneous start, a mean of rho that the lead corner (8 % of the voxels)
    dominates. Seeds 7-10 pooled: the flagged beryllium voxels read 0.45x their X0 (0.31x with the homogeneous start as
    the fallback), all beryllium voxels 0.60x (0.46x); the lead is unchanged (1.71x)."""

    flagged, everywhere = [], []
    for seed in range(7, 11):
        vol, sbs = simulate(lead_in_beryllium, 1000, seed)
        truth = vol.get_rad_cube().numpy()
        be = truth > 0.1
        inf, pred, _ = predict(PathX0Inferrer, vol, sbs)
        assert float(inf.homogeneous_x0) < 0.3 * X0["beryllium"]  # the lead-dominated mean density
        low = inf.low_data.numpy()
        flagged.append(pred[be & low] / truth[be & low])
        everywhere.append(pred[be] / truth[be])
    assert np.median(np.concatenate(flagged)) >= 0.38
    assert np.median(np.concatenate(everywhere)) >= 0.53


def test_path_median_at_1k_muons():
    """1k muons (~1.7 per voxel): median predicted / true X0 within the [0.67, 1.5] band for uniform iron. Measured
    0.77 over 20 seeds (benchmarks/bench_calibration.py); 0.52 on these seeds when the prior's weight was re-evaluated
    every update (it followed the data-poor voxels running to rho -> 0) and the fallback density lacked the log term."""
    ratios = []
    for seed in range(4):
        vol, sbs = simulate(uniform("iron"), 1000, 308 + seed)  # 308 and 310 hit the clamp before
        _, pred, _ = predict(PathX0Inferrer, vol, sbs)
        ratios.append(pred / X0["iron"])
    assert 0.67 <= np.median(np.stack(ratios)) <= 1.5


def test_poca_known_momentum_never_at_the_clamp_at_low_statistics():
    """Beryllium with 1k muons: a voxel crossed by a few muons that scattered less than their measurement noise has a
    negative data term (sum of w (y - n)); it counts as no evidence of density (rho >= 0 before the neighbourhood
    pull), not as X0 = 1e4 m (the clamp, which put single voxels at 2.8e4 x the truth in 5 of 10 volumes and gave
    training losses of 1e5)."""
    ratios = []
    for seed in range(4):
        vol, sbs = simulate(uniform("beryllium"), 1000, 500 + seed)
        inf, pred, unc = predict(PanelX0Inferrer, vol, sbs, momentum="true")
        assert pred.max() < 100 * X0["beryllium"]
        assert np.isfinite(unc).all() and (unc > 0).all()
        ratios.append(pred / X0["beryllium"])
    assert 0.67 <= np.median(np.stack(ratios)) <= 1.5


@pytest.mark.parametrize(("material", "momentum"), [("lead", "true"), ("lead", "unknown"), ("iron", "unknown")])
def test_path_no_voxel_at_a_bound_with_300_muons(material, momentum):
    """300 muons: a voxel whose multiplicative updates ran into a bound of ``x0_range`` (X0 = 1e-4 m) has no interior
    maximum; the shrinkage sets it from its neighbourhood and flags it (before: 3 / 31 / 11 such voxels over these ten
    seeds), with a finite uncertainty of at least 100 %."""
    lo, hi = PathX0Inferrer(build_panel_volume()).x0_range
    for seed in range(1300, 1310):
        vol, sbs = simulate(uniform(material), 300, seed)
        inf, pred, unc = predict(PathX0Inferrer, vol, sbs, momentum=MomentumModel(momentum, seed=1))
        assert pred.min() > lo * 1.01 and pred.max() < hi * 0.99
        assert np.isfinite(unc).all() and (unc > 0).all()
        low = inf.low_data.numpy()
        assert (unc[low] >= pred[low] * (1 - 1e-6)).all()
