"""Track fits of the scatter batches: exact and weighted least-squares line fits, efficiency weights, unusable hits,
quality cuts."""

import math

import numpy as np
import pytest
import torch
from scatter_helpers import Z_ABOVE, StandInVolume, line_at, make_mu, random_scatters

from tomopt_lib.inference.scattering import GenScatterBatch, ScatterBatch
from tomopt_lib.inference.track_fit import fit_lines

pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")


def test_exact_fit_of_lines(gen):
    vtx, a_in, _ = random_scatters(50, gen)
    hits = torch.stack([line_at(vtx, a_in, z) for z in Z_ABOVE], 1)
    uncs = torch.rand(50, 4, 3, generator=gen, dtype=torch.float64) * 1e-3 + 1e-4
    effs = torch.rand(50, 4, 1, generator=gen, dtype=torch.float64) * 0.9 + 0.1
    fit = fit_lines(hits, uncs, effs, z_ref=0.5)
    assert bool(fit.ok.all())
    x_ref = vtx[:, :2] + a_in * (0.5 - vtx[:, 2:3])
    torch.testing.assert_close(fit.params[:, :2], x_ref, atol=1e-10, rtol=0)
    torch.testing.assert_close(fit.params[:, 2:], a_in, atol=1e-10, rtol=0)
    direction, start = ScatterBatch.get_muon_trajectory(hits, uncs, torch.tensor([1.0, 1.0]), effs)
    v = torch.cat([-a_in, -torch.ones(50, 1, dtype=torch.float64)], 1)
    torch.testing.assert_close(direction, v / v.norm(dim=1, keepdim=True))
    torch.testing.assert_close(start, hits[:, 0])


@pytest.mark.parametrize("use_eff", [False, True])
def test_fit_matches_weighted_least_squares(gen, use_eff):
    n = 20
    z = torch.tensor(Z_ABOVE, dtype=torch.float64)
    hits = torch.rand(n, 4, 3, generator=gen, dtype=torch.float64)
    hits[..., 2] = z
    uncs = torch.rand(n, 4, 3, generator=gen, dtype=torch.float64) * 0.1 + 0.01
    effs = (
        torch.rand(n, 4, 1, generator=gen, dtype=torch.float64) * 0.9 + 0.1
        if use_eff
        else torch.ones(n, 4, 1, dtype=torch.float64)
    )
    fit = fit_lines(hits, uncs, effs, z_ref=0.0)
    for i in range(n):
        for k in range(2):
            sigma = (uncs[i, :, k] / effs[i, :, 0]).numpy()
            slope, icpt = np.polyfit(z.numpy(), hits[i, :, k].numpy(), 1, w=1 / sigma)
            assert float(fit.params[i, k]) == pytest.approx(icpt, abs=1e-9)
            assert float(fit.params[i, k + 2]) == pytest.approx(slope, abs=1e-9)


def test_efficiency_deweights_outlier():
    z = torch.tensor(Z_ABOVE, dtype=torch.float64)
    hits = torch.stack([torch.zeros(4, dtype=torch.float64), torch.zeros(4, dtype=torch.float64), z], 1)[None].clone()
    hits[0, 1, 0] = 1.0  # outlier in x
    uncs = torch.ones(1, 4, 3, dtype=torch.float64)
    full = fit_lines(hits, uncs, torch.ones(1, 4, 1, dtype=torch.float64), 1.0)
    low = torch.ones(1, 4, 1, dtype=torch.float64)
    low[0, 1] = 0.1
    deweighted = fit_lines(hits, uncs, low, 1.0)
    assert abs(float(deweighted.params[0, 0])) < abs(float(full.params[0, 0])) / 10


@pytest.mark.parametrize("bad", ["inf_unc", "nan_unc", "inf_pos", "nan_pos", "zero_eff"])
def test_unusable_hits_are_ignored(gen, bad):
    vtx, a_in, _ = random_scatters(10, gen)
    hits = torch.stack([line_at(vtx, a_in, z) for z in Z_ABOVE], 1)
    hits = hits + torch.randn(hits.shape, generator=gen, dtype=torch.float64) * 1e-3 * torch.tensor(
        [1.0, 1.0, 0.0], dtype=torch.float64
    )
    uncs = torch.full((10, 4, 3), 1e-3, dtype=torch.float64)
    effs = torch.ones(10, 4, 1, dtype=torch.float64)
    ref = fit_lines(hits[:, [0, 2, 3]], uncs[:, [0, 2, 3]], effs[:, [0, 2, 3]], 0.5)
    h, u, e = hits.clone(), uncs.clone(), effs.clone()
    if bad == "inf_unc":
        u[:, 1, :2] = math.inf
    elif bad == "nan_unc":
        u[:, 1, :2] = math.nan
    elif bad == "inf_pos":
        h[:, 1, :2] = -math.inf
    elif bad == "nan_pos":
        h[:, 1, :2] = math.nan
    else:
        e[:, 1] = 0.0
    fit = fit_lines(h, u, e, 0.5)
    torch.testing.assert_close(fit.params, ref.params)
    torch.testing.assert_close(fit.cov, ref.cov)
    assert fit.n_valid.tolist() == [[3, 3]] * 10


def test_fewer_than_two_usable_hits_filtered(gen):
    vtx, a_in, a_out = random_scatters(6, gen)
    mu = make_mu(vtx, a_in, a_out, noise=1.0, gen=gen)
    # muon 1 misses all but one above panel; muon 4 misses all but one below panel (realistic-eval style infinities)
    for grp, idx in (("above", 1), ("below", 4)):
        for j, h in enumerate(mu._hits[grp]["reco_xyz"]):
            if j > 0:
                h[idx, :2] = math.inf
                mu._hits[grp]["unc_xyz"][j][idx, :2] = math.inf
    # muon 2 misses one panel only: kept
    mu._hits["above"]["reco_xyz"][2][2, :2] = math.inf
    sb = ScatterBatch(mu, StandInVolume())
    assert sb.keep_mask.tolist() == [True, False, True, True, False, True]
    assert sb.n_mu == 4 and sb.poca_xyz.shape == (4, 3) and bool(torch.isfinite(sb.poca_xyz_unc).all())
    direction, start = ScatterBatch.get_muon_trajectory(
        mu.get_hits()["above"]["reco_xyz"], mu.get_hits()["above"]["unc_xyz"], None
    )
    assert bool(torch.isnan(direction[1]).all()) and bool(torch.isfinite(direction[[0, 2, 3, 4, 5]]).all())


def test_quality_cuts(gen):
    vtx, a_in, a_out = random_scatters(5, gen)
    a_in[2] = torch.tensor([3e5, 0.0], dtype=torch.float64)  # near horizontal
    a_out[2] = a_in[2] + 0.01
    vtx[3, 0] = 50.0  # crosses the passive planes far outside the block
    mu = make_mu(vtx, a_in, a_out)
    sb = GenScatterBatch(mu, StandInVolume())
    assert sb.keep_mask.tolist() == [True, True, False, False, True]
    # identical in- and out-tracks: zero scatter -> everything filtered
    assert ScatterBatch(mu, StandInVolume(), in_groups=["above"], out_groups=["above"]).n_mu == 0
