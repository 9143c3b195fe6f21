"""ScatterBatch / GenScatterBatch: PoCA, angles, uncertainties, gradients, groups, filtering, volume (track fits:
tests/test_track_fit.py)."""

import math

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402
from scatter_helpers import VARS, Z_ABOVE, Z_BELOW, NoGroupsVolume, StandInVolume, line_at, make_mu, random_scatters  # noqa: E402

from tomopt_lib.inference.scattering import GenScatterBatch, ScatterBatch  # noqa: E402
from tomopt_lib.inference.track_fit import VAR_SIZES, fit_lines, scatter_vars, split_vars  # noqa: E402
from tomopt_lib.muon.muon_batch import MuonBatch  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")


# ---------------------------------------------------------------------------- geometry and angles
def test_hand_built_90_degree_scatter():
    vtx = torch.tensor([[0.5, 0.5, 0.5]], dtype=torch.float64)
    a_in = torch.tensor([[-1.0, 0.0]], dtype=torch.float64)  # flight direction (1, 0, -1) / sqrt(2)
    a_out = torch.tensor([[1.0, 0.0]], dtype=torch.float64)  # flight direction (-1, 0, -1) / sqrt(2)
    mu = make_mu(vtx, a_in, a_out)
    for cls in (ScatterBatch, GenScatterBatch):
        sb = cls(mu, StandInVolume())
        pi = math.pi
        expect = {
            "poca_xyz": [0.5, 0.5, 0.5],
            "dxy": [0.0, 0.0],
            "theta_in": [pi / 4],
            "theta_out": [pi / 4],
            "phi_in": [0.0],
            "phi_out": [pi],
            "theta_xy_in": [pi / 4, 0.0],
            "theta_xy_out": [-pi / 4, 0.0],
            "dtheta_xy": [-pi / 2, 0.0],
            "dtheta": [pi / 2],
            "dphi": [0.0],
            "theta_msc": [pi / 2],
            "total_scatter": [pi / 2],
            "xyz_in": [0.2, 0.5, 0.8],
            "xyz_out": [0.2, 0.5, 0.2],
        }
        for name, val in expect.items():
            torch.testing.assert_close(getattr(sb, name), torch.tensor([val], dtype=torch.float64), atol=1e-10, rtol=0, msg=name)
        r2 = math.sqrt(0.5)
        torch.testing.assert_close(sb.track_in, torch.tensor([[r2, 0.0, -r2]], dtype=torch.float64))
        torch.testing.assert_close(sb.track_out, torch.tensor([[-r2, 0.0, -r2]], dtype=torch.float64))
        torch.testing.assert_close(sb.track_start_in, torch.tensor([[-0.15, 0.5, 1.15]], dtype=torch.float64))
        torch.testing.assert_close(sb.track_start_out, torch.tensor([[0.05, 0.5, 0.05]], dtype=torch.float64))
        assert sb.get_scatter_mask().tolist() == [True]
        for name in VARS:
            assert getattr(sb, f"{name}_unc").shape == getattr(sb, name).shape


def test_angles_match_muon_batch_conventions(gen):
    vtx, a_in, a_out = random_scatters(200, gen, scatter=0.2)
    sb = GenScatterBatch(make_mu(vtx, a_in, a_out), StandInVolume())
    for side, a in (("in", a_in), ("out", a_out)):
        d = torch.cat([-a, -torch.ones(len(a), 1, dtype=a.dtype)], 1)
        theta, phi = MuonBatch.theta_phi_from_direction(d)
        torch.testing.assert_close(getattr(sb, f"theta_{side}")[:, 0], theta)
        torch.testing.assert_close(getattr(sb, f"phi_{side}")[:, 0], phi)
        txy = torch.stack([MuonBatch.theta_x_from_theta_phi(theta, phi), MuonBatch.theta_y_from_theta_phi(theta, phi)], 1)
        torch.testing.assert_close(getattr(sb, f"theta_xy_{side}"), txy)
    d_in, d_out = sb.track_in, sb.track_out
    cos = (d_in * d_out).sum(1).clamp(-1, 1)
    torch.testing.assert_close(sb.theta_msc[:, 0], torch.acos(cos), atol=1e-7, rtol=0)
    # small-angle: dtheta, dphi never exceed what their hypothesis allows
    assert bool((sb.dphi <= math.pi + 1e-12).all()) and bool((sb.dtheta >= 0).all())


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-5), (torch.float32, 1e-4)])
def test_poca_recovers_vertex(gen, dtype, tol):
    vtx, a_in, a_out = random_scatters(500, gen, dtype=dtype, scatter=0.1)
    sb = ScatterBatch(make_mu(vtx, a_in, a_out), StandInVolume())
    keep = sb.keep_mask
    assert keep.float().mean() > 0.99
    # float32: the PoCA z of a scatter by angle a inherits the hit rounding (~1e-7 m) amplified by ~1/a
    ok = sb.theta_msc[:, 0] > (0.0 if dtype == torch.float64 else 0.005)
    assert ok.float().mean() > 0.9
    torch.testing.assert_close(sb.poca_xyz[ok], vtx[keep][ok], atol=tol, rtol=0)
    torch.testing.assert_close(sb.dxy, torch.zeros_like(sb.dxy), atol=tol, rtol=0)
    torch.testing.assert_close(sb.xyz_in, line_at(vtx, a_in, 0.8)[keep], atol=tol, rtol=0)
    torch.testing.assert_close(sb.xyz_out, line_at(vtx, a_out, 0.2)[keep], atol=tol, rtol=0)
    inside = ((vtx[keep, :2] >= 0) & (vtx[keep, :2] < 1)).all(1) & (vtx[keep, 2] >= 0.2) & (vtx[keep, 2] < 0.8)
    assert bool((sb.get_scatter_mask() == inside).float().mean() > 0.99)


def test_parallel_tracks_are_finite():
    vtx = torch.tensor([[0.5, 0.5, 0.5]])
    a = torch.tensor([[0.1, -0.2]])
    values, jac = scatter_vars(
        torch.cat([torch.tensor([[0.5, 0.5]]), a, torch.tensor([[0.5, 0.5]]), a], 1), 0.5, 0.8, 0.2, with_jac=True
    )
    v = split_vars(values)
    torch.testing.assert_close(v["poca_xyz"], vtx)
    assert float(v["theta_msc"]) == 0.0 and bool(torch.isfinite(jac).all())


# ---------------------------------------------------------------------------- uncertainties
def brute_force_unc(reco, unc, eff, n_in, z_ref, z_top, z_bottom):
    """sigma_var^2 = sum over all hits of the batch (d var / d hit)^2 sigma_hit^2 with a full-batch autograd Jacobian."""

    def all_vars(h):
        l_in = fit_lines(h[:, :n_in], unc[:, :n_in], eff[:, :n_in], z_ref)
        l_out = fit_lines(h[:, n_in:], unc[:, n_in:], eff[:, n_in:], z_ref)
        return scatter_vars(torch.cat([l_in.params, l_out.params], 1), z_ref, z_top, z_bottom)[0]

    jac = torch.autograd.functional.jacobian(all_vars, reco)  # (N, K, N, n, 3)
    var = (jac**2 * unc[None, None] ** 2).sum((2, 3, 4))
    return split_vars(var.sqrt())


def test_uncertainties_match_brute_force_jacobian(gen):
    n = 6
    vtx, a_in, a_out = random_scatters(n, gen, scatter=0.1)
    res = torch.rand(8, generator=gen, dtype=torch.float64) * 900 + 100
    eff = torch.rand(8, generator=gen, dtype=torch.float64) * 0.5 + 0.5
    mu = make_mu(vtx, a_in, a_out, res=res, eff=eff, noise=1.0, gen=gen)
    sb = ScatterBatch(mu, StandInVolume())
    assert sb.n_mu == n
    ref = brute_force_unc(sb.reco_hits, sb.hit_uncs, sb.hit_effs, sb.n_hits_above, sb.z_ref, sb.z_top, sb.z_bottom)
    for name in VAR_SIZES:
        got = getattr(sb, f"{name}_unc")
        torch.testing.assert_close(got, ref[name], atol=1e-9, rtol=1e-5, msg=name)
    assert bool((sb.poca_xyz_unc > 0).all()) and bool((sb.theta_msc_unc > 0).all())
    assert bool((sb.xyz_in_unc[:, 2] == 0).all())


def test_uncertainties_scale_with_resolution(gen):
    vtx, a_in, a_out = random_scatters(100, gen)
    lo = ScatterBatch(make_mu(vtx, a_in, a_out, res=1e2), StandInVolume())
    hi = ScatterBatch(make_mu(vtx, a_in, a_out, res=1e3), StandInVolume())
    for name in VARS:
        torch.testing.assert_close(getattr(hi, f"{name}_unc") * 10, getattr(lo, f"{name}_unc"), rtol=1e-6, atol=1e-12, msg=name)


# ---------------------------------------------------------------------------- gradients
def test_uncertainty_gradients_pass_gradcheck(gen):
    """Autograd through the per-muon Jacobians (d unc / d hits, d unc / d hit uncertainties) matches finite differences."""
    from tomopt_lib.inference.track_fit import propagate_unc

    vtx, a_in, a_out = random_scatters(3, gen, scatter=0.2)
    mu = make_mu(vtx, a_in, a_out, res=50.0, noise=1.0, gen=gen)
    sb = ScatterBatch(mu, StandInVolume())
    hits = sb.reco_hits.detach().clone().requires_grad_()
    uncs = sb.hit_uncs.detach().clone().requires_grad_()
    effs = sb.hit_effs.detach()

    def uncs_of(h, u):
        l_in, l_out = fit_lines(h[:, :4], u[:, :4], effs[:, :4], 0.5), fit_lines(h[:, 4:], u[:, 4:], effs[:, 4:], 0.5)
        values, jac = scatter_vars(torch.cat([l_in.params, l_out.params], 1), 0.5, 0.8, 0.2, with_jac=True)
        return propagate_unc(jac, l_in.cov, l_out.cov), values

    assert torch.autograd.gradcheck(uncs_of, (hits, uncs), eps=1e-6, atol=1e-5, rtol=1e-4, fast_mode=True)


def test_gradients_reach_panel_like_parameters(gen):
    vtx, a_in, a_out = random_scatters(300, gen, dtype=torch.float32)
    res = torch.full((8,), 500.0, requires_grad=True)
    eff = torch.full((8,), 0.9, requires_grad=True)
    z_shift = torch.zeros(8, requires_grad=True)
    xy_shift = torch.zeros(8, 2, requires_grad=True)
    mu = make_mu(vtx, a_in, a_out, res=res, eff=eff, noise=1.0, gen=gen, z_shift=z_shift, xy_shift=xy_shift)
    sb = ScatterBatch(mu, StandInVolume())
    leaves = (res, eff, z_shift, xy_shift)
    for target in (sb.theta_msc.sum(), sb.poca_xyz.sum(), sb.poca_xyz_unc.sum(), sb.theta_msc_unc.sum(), sb.theta_in_unc.sum()):
        grads = torch.autograd.grad(target, leaves, allow_unused=True, retain_graph=True)
        for name, g in zip(("res", "eff", "z", "xy"), grads):
            assert g is not None, name
            assert bool(torch.isfinite(g).all()), name
            assert float(g.abs().sum()) > 0, name


def test_gen_scatter_batch_uses_true_hits(gen):
    vtx, a_in, a_out = random_scatters(100, gen)
    res = torch.tensor(200.0, dtype=torch.float64, requires_grad=True)
    mu = make_mu(vtx, a_in, a_out, res=res, noise=3.0, gen=gen)
    gsb, sb = GenScatterBatch(mu, StandInVolume()), ScatterBatch(mu, StandInVolume())
    torch.testing.assert_close(gsb.poca_xyz, vtx[gsb.keep_mask], atol=1e-9, rtol=0)
    assert float((sb.poca_xyz - vtx[sb.keep_mask]).abs().max()) > 1e-4
    assert bool((gsb.hit_uncs[..., :2] == 1).all()) and bool((gsb.hit_effs == 1).all())
    assert not gsb.poca_xyz.requires_grad and not gsb.poca_xyz_unc.requires_grad
    assert sb.poca_xyz.requires_grad
    torch.testing.assert_close(gsb.above_hits, sb.above_hits)


# ---------------------------------------------------------------------------- groups, empty batches, no mutation
def test_arbitrary_group_names(gen):
    vtx, a_in, a_out = random_scatters(50, gen)
    two = make_mu(vtx, a_in, a_out, noise=1.0, gen=torch.Generator().manual_seed(7))
    groups3 = [("station_a", Z_ABOVE[:2], "in"), ("station b", Z_ABOVE[2:], "in"), ("exit", Z_BELOW, "out")]
    three = make_mu(vtx, a_in, a_out, noise=1.0, gen=torch.Generator().manual_seed(7), groups=groups3)
    ref = ScatterBatch(two, NoGroupsVolume())  # falls back to "above" / "below"
    sb = ScatterBatch(three, StandInVolume({"above": ["station_a", "station b"], "below": ["exit"]}))
    sb2 = ScatterBatch(three, StandInVolume(), in_groups=["station_a", "station b"], out_groups=["exit"])
    assert sb.n_hits_above == 4 and sb.n_hits_below == 4 and sb.above_hits.shape == (50, 4, 3)
    for name in ("poca_xyz", "theta_msc", "xyz_in", "dphi"):
        torch.testing.assert_close(getattr(sb, name), getattr(ref, name))
        torch.testing.assert_close(getattr(sb, f"{name}_unc"), getattr(ref, f"{name}_unc"))
        torch.testing.assert_close(getattr(sb2, name), getattr(ref, name))
    assert set(sb.hits) == {"station_a", "station b", "exit"}
    with pytest.raises(ValueError, match="recorded hits"):
        ScatterBatch(three, StandInVolume())


def test_empty_batches(gen):
    empty = make_mu(*random_scatters(0, gen))
    vtx, a_in, a_out = random_scatters(4, gen)
    one_hit = make_mu(vtx, a_in, a_out, groups=[("above", Z_ABOVE[:1], "in"), ("below", Z_BELOW, "out")])
    for mu in (empty, one_hit):
        sb = ScatterBatch(mu, StandInVolume())
        assert sb.n_mu == 0 and len(sb) == 0
        for name in VARS:
            k = 1 if name == "total_scatter" else VAR_SIZES[name]
            assert getattr(sb, name).shape == (0, k), name
            assert getattr(sb, f"{name}_unc").shape == (0, k), name
        assert sb.get_scatter_mask().shape == (0,) and sb.track_in.shape == (0, 3) and sb.mom.shape == (0,)
        assert sb.track_start_out.shape == (0, 3) and sb.reco_hits.shape[0] == 0 and "n_mu=0" in repr(sb)


def test_muon_batch_not_mutated(gen):
    vtx, a_in, a_out = random_scatters(20, gen)
    mu = make_mu(vtx, a_in, a_out, noise=1.0, gen=gen)
    mu._hits["below"]["reco_xyz"][0][3] = math.nan  # muon 3 is filtered
    mu._hits["below"]["reco_xyz"][1][3] = math.nan
    mu._hits["below"]["reco_xyz"][2][3] = math.nan
    state = mu.muons.clone()
    hits = {g: {k: v.clone() for k, v in d.items()} for g, d in mu.get_hits().items()}
    sb = ScatterBatch(mu, StandInVolume())
    _ = [getattr(sb, f"{v}_unc") for v in VARS]
    assert sb.n_mu == 19 and len(mu) == 20
    torch.testing.assert_close(mu.muons, state)
    for g, d in mu.get_hits().items():
        for k, v in d.items():
            torch.testing.assert_close(v, hits[g][k], equal_nan=True)
    assert sb.mom.shape == (19,)


def test_plot_scatter(gen):
    vtx, a_in, a_out = random_scatters(3, gen)
    sb = ScatterBatch(make_mu(vtx, a_in, a_out, noise=1.0, gen=gen), StandInVolume())
    fig = sb.plot_scatter(1)
    assert len(fig.axes) == 2
    import matplotlib.pyplot as plt

    plt.close(fig)


# ---------------------------------------------------------------------------- real volume
def _real_volume(res: float):
    from tomopt_lib.core import X0
    from tomopt_lib.volume.builders import build_panel_volume

    vol = build_panel_volume(res=res, eff=0.9, panel_span=1.0)

    def lead_beryllium(*, z, lw, size):
        n = (lw / size).round().long().tolist()
        x0 = torch.full(n, X0["beryllium"])
        if float(z) < 0.55:
            x0[3:7, 3:7] = X0["lead"]
        return x0

    vol.load_rad_length(lead_beryllium)
    return vol


def _real_muons(vol, n: int, seed: int):
    from tomopt_lib.muon.generation import MuonGenerator2016

    g = torch.Generator().manual_seed(seed)
    mg = MuonGenerator2016.from_volume(vol, min_angle=0.0, fixed_mom=5.0)  # start above the passive footprint
    mu = MuonBatch(mg(n, generator=g), init_z=vol.h)
    vol(mu, generator=g)
    return mu


def test_real_volume_integration():
    vol = _real_volume(1e4)
    mu = _real_muons(vol, 2000, seed=0)
    assert vol.get_detector_groups() == {"above": ["above"], "below": ["below"]}
    sb = ScatterBatch(mu, vol)
    assert sb.n_mu > 1500 and len(mu) == 2000
    assert float(sb.get_scatter_mask().float().mean()) > 0.25
    for name in VARS:
        assert bool(torch.isfinite(getattr(sb, name)).all()), name
        assert bool(torch.isfinite(getattr(sb, f"{name}_unc")).all()), name
    panels = [p for d in vol.get_detectors() for p in d.panels]
    params = [t for p in panels for t in (p.xy, p.z, p.xy_span)]
    for target in (sb.theta_msc.sum(), sb.poca_xyz_unc.sum()):
        grads = torch.autograd.grad(target, params, allow_unused=True, retain_graph=True)
        for g in grads:
            assert g is not None and bool(torch.isfinite(g).all()) and float(g.abs().sum()) > 0
    # better resolution -> smaller uncertainties (same muons and noise draws, 10x coarser panels)
    coarse_vol = _real_volume(1e3)
    coarse = ScatterBatch(_real_muons(coarse_vol, 2000, seed=0), coarse_vol)
    for name in ("theta_msc", "theta_in", "xyz_out", "poca_xyz"):
        # the PoCA uncertainty ~ hit unc / measured angle, and coarse panels also inflate the measured angle
        factor = 1 if name == "poca_xyz" else 3
        assert float(getattr(sb, f"{name}_unc").median()) < float(getattr(coarse, f"{name}_unc").median()) / factor, name


def test_real_volume_realistic_eval_keeps_muons_missing_a_panel():
    vol = _real_volume(1e4)
    with torch.no_grad():
        for p in (p for d in vol.get_detectors() for p in d.panels):
            p.xy_span.fill_(0.6)
    vol.eval()
    with torch.no_grad():
        mu = _real_muons(vol, 1000, seed=1)
        sb = ScatterBatch(mu, vol)
    missed = ~torch.isfinite(sb.reco_hits).all(-1)  # (n_mu, 8): panels missed by kept muons
    assert sb.n_mu > 50 and int(missed.any(1).sum()) > 10
    assert int((~missed[:, :4]).sum(1).min()) >= 2 and int((~missed[:, 4:]).sum(1).min()) >= 2
    for name in VARS:
        assert bool(torch.isfinite(getattr(sb, name)).all()) and bool(torch.isfinite(getattr(sb, f"{name}_unc")).all()), name
