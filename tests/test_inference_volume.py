"""Volume inference: PoCA and path-based X0 inferrers, voxel probabilities, efficiency, classifiers, registry."""

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from layouts import lead_in_beryllium

from tomopt_lib.core import X0
from tomopt_lib.inference import ScatterBatch
from tomopt_lib.inference.volume import (
    AbsIntClassifierFromX0,
    DenseBlockClassifierFromX0s,
    NoMuonsError,
    PanelX0Inferrer,
    PathX0Inferrer,
    dense_voxel_probs,
    get_volume_inferrer,
    prob_at_least_two,
    solve_highland_x,
    voxel_pair_probs,
    x0_from_scatters,
)
from tomopt_lib.muon.generation import MuonGenerator2016
from tomopt_lib.muon.muon_batch import MuonBatch
from tomopt_lib.volume.builders import build_panel_volume

pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")


pb_corner = lead_in_beryllium


def make_volume(func=pb_corner, span=2.0):
    vol = build_panel_volume(res=1e4, eff=0.9, panel_span=span)
    vol.record_xyz_hist = False
    vol.load_rad_length(func)
    return vol


def propagate(vol, n, seed=0, mom=5.0):
    gen = MuonGenerator2016.from_volume(vol, fixed_mom=mom, min_angle=0.0)
    rng = torch.Generator().manual_seed(seed)
    mu = MuonBatch(gen(n, generator=rng), init_z=vol.h)
    vol(mu, generator=rng)
    return mu


def sub_batch(mu, idx):
    """MuonBatch holding muons ``idx`` of ``mu`` with their hits (graph kept)."""
    sub = MuonBatch(torch.zeros(len(idx), 5), init_z=0.0)
    sub._muons = mu._muons[idx]
    sub._mom_in = mu._mom_in[idx]
    sub._hits = {g: {k: [h[idx] for h in v] for k, v in d.items()} for g, d in mu._hits.items()}
    return sub


@pytest.fixture(scope="module")
def sim():
    torch.manual_seed(0)
    vol = make_volume()
    with torch.no_grad():
        mu = propagate(vol, 4000, seed=1)
    return vol, ScatterBatch(mu, vol)


# ---------------------------------------------------------------- registry and bad input
def test_registry_and_bad_names():
    assert get_volume_inferrer("poca") is PanelX0Inferrer
    assert get_volume_inferrer("path") is PathX0Inferrer
    with pytest.raises(ValueError, match="inferrer=.*allowed"):
        get_volume_inferrer("nope")
    vol = make_volume()
    with pytest.raises(ValueError, match="path"):
        PathX0Inferrer(vol, path="curvy")
    with pytest.raises(ValueError, match="n_iter"):
        PathX0Inferrer(vol, n_iter=0)
    with pytest.raises(ValueError, match="window"):
        PanelX0Inferrer(vol, window=0)


@pytest.mark.parametrize("cls", [PanelX0Inferrer, PathX0Inferrer])
def test_empty_input_raises(cls, sim):
    vol, sb = sim
    inf = cls(vol)
    assert inf.n_mu == 0
    with pytest.raises(NoMuonsError, match="no muons"):
        inf.get_prediction()
    empty = SimpleNamespace(n_mu=0)
    inf.add_scatters(empty)
    with pytest.raises(ValueError):
        inf.get_prediction()


# ---------------------------------------------------------------- properties, memoisation, shapes, gradients
@pytest.mark.parametrize("cls", [PanelX0Inferrer, PathX0Inferrer])
def test_properties_lazy_shapes(cls, sim):
    vol, sb = sim
    inf = cls(vol)
    inf.add_scatters(sb)
    assert inf._muon_data is None and inf._vox_zxy_x0_preds is None  # lazy
    n = inf.n_mu
    assert 0 < n <= sb.n_mu
    assert inf.shp_zxy == (6, 10, 10) and inf.shp_xyz == (10, 10, 6)
    assert inf.muon_poca_xyz.shape == (n, 3) and inf.muon_poca_xyz_unc.shape == (n, 3)
    for name in ("total_scatter", "theta_in", "theta_out", "mom", "efficiency"):
        assert getattr(inf, f"muon_{name}").shape == (n, 1)
    assert (inf.muon_mom_unc == 0).all()
    pred, unc = inf.get_prediction_and_unc()
    assert pred.shape == unc.shape == (6, 10, 10)
    assert torch.isfinite(pred).all() and (pred > 0).all() and torch.isfinite(unc).all() and (unc > 0).all()
    assert inf.get_prediction() is pred  # memoised
    inf.add_scatters(sb)  # reset
    assert inf._vox_zxy_x0_preds is None and inf._muon_data is None
    assert inf.n_mu == 2 * n


@pytest.mark.parametrize("cls", [PanelX0Inferrer, PathX0Inferrer])
def test_gradients_wrt_panels(cls):
    vol = make_volume()
    mu = propagate(vol, 600, seed=2)
    inf = cls(vol)
    inf.add_scatters(ScatterBatch(mu, vol))
    pred, unc = inf.get_prediction_and_unc()
    (pred.sum() + unc.sum()).backward()
    for det in vol.get_detectors():
        for p in det.panels:
            for param in (p.xy, p.z, p.xy_span):
                assert param.grad is not None and torch.isfinite(param.grad).all(), param
            assert p.xy.grad.abs().sum() > 0 and p.z.grad.abs().sum() > 0 and p.xy_span.grad.abs().sum() > 0


@pytest.mark.parametrize("cls", [PanelX0Inferrer, PathX0Inferrer])
def test_one_batch_equals_four(cls):
    vol = make_volume()
    with torch.no_grad():
        mu = propagate(vol, 1000, seed=3)
    one = cls(vol)
    one.add_scatters(ScatterBatch(mu, vol))
    four = cls(vol)
    for i in range(4):
        four.add_scatters(ScatterBatch(sub_batch(mu, torch.arange(250 * i, 250 * (i + 1))), vol))
    assert one.n_mu == four.n_mu
    p1, p4 = one.get_prediction(), four.get_prediction()
    assert ((p1 - p4).abs() / p1).max() < 1e-4


# ---------------------------------------------------------------- efficiency
def test_efficiency_formula_vs_mc():
    gen = torch.Generator().manual_seed(0)
    effs = torch.tensor([[0.9, 0.3, 0.5, 0.7], [1.0, 0.0, 0.0, 1.0], [0.2, 0.2, 0.2, 0.2]], dtype=torch.float64)
    p = prob_at_least_two(effs)
    hits = torch.rand(200_000, *effs.shape, generator=gen, dtype=torch.float64) < effs
    mc = (hits.sum(-1) >= 2).double().mean(0)
    assert torch.allclose(p, mc, atol=4e-3)
    assert p[1] == 1.0
    sb = SimpleNamespace(above_hit_effs=effs[:, :, None], below_hit_effs=effs.flip(1)[:, :, None])
    assert torch.allclose(PanelX0Inferrer.compute_efficiency(None, sb), p * p)  # type: ignore[arg-type]
    assert prob_at_least_two(torch.tensor([[float("nan"), 1.0, 1.0]])) == 1.0


# ---------------------------------------------------------------- voxel probabilities
def test_voxel_probs_separable_equals_dense_and_sum():
    gen = torch.Generator().manual_seed(0)
    n, shp, size = 50, (3, 4, 5), 0.1
    low = (0.0, 0.0, 0.2)
    poca = torch.rand(n, 3, generator=gen, dtype=torch.float64) * torch.tensor([0.6, 0.7, 0.5]) - 0.05
    poca[:, 2] += 0.2
    unc = torch.rand(n, 3, generator=gen, dtype=torch.float64) * 0.1 + 0.01
    probs, idx = voxel_pair_probs(poca, unc, low_xyz=low, size=size, shp_zxy=shp, window=None)
    sparse = torch.zeros(n, 60, dtype=torch.float64).scatter_add(1, idx, probs)
    dense = dense_voxel_probs(poca, unc, low_xyz=low, size=size, shp_zxy=shp).reshape(n, -1)
    assert torch.allclose(sparse, dense, atol=1e-12)
    hi = torch.tensor([low[0] + 0.4, low[1] + 0.5, low[2] + 0.3], dtype=torch.float64)
    lo = torch.tensor(low, dtype=torch.float64)
    norm = torch.distributions.Normal(poca, unc + 1e-7)
    inside = (norm.cdf(hi) - norm.cdf(lo)).prod(1)
    assert torch.allclose(sparse.sum(1), inside, atol=1e-12)
    # windowed: small sigmas lose nothing
    p3, i3 = voxel_pair_probs(poca, unc * 0.1, low_xyz=low, size=size, shp_zxy=shp, window=3)
    assert p3.shape == (n, 27)
    dense_small = dense_voxel_probs(poca, unc * 0.1, low_xyz=low, size=size, shp_zxy=shp).reshape(n, -1)
    assert torch.allclose(torch.zeros(n, 60, dtype=torch.float64).scatter_add(1, i3, p3), dense_small, atol=2e-3)


def test_muon_probs_per_voxel(sim):
    vol, sb = sim
    inf = PanelX0Inferrer(vol, window=None)
    inf.add_scatters(sb)
    probs = inf.muon_probs_per_voxel_zxy
    assert probs.shape == (inf.n_mu, 6, 10, 10)
    inside = torch.as_tensor(sb.get_scatter_mask()).float().mean()
    assert abs(float(probs.sum((1, 2, 3)).mean()) - float(inside)) < 0.1


# ---------------------------------------------------------------- exact X0 recovery
def fake_scatters(x0_zxy, *, per_voxel=8, log_term=False, mom=3.0, theta=0.2):
    """Noise-free stand-in ScatterBatch: muons with PoCA at every voxel centre and PDG scatters of that voxel."""
    n_z, n_x, n_y = x0_zxy.shape
    size, bottom = 0.1, 0.2
    iz, ix, iy = torch.meshgrid(torch.arange(n_z), torch.arange(n_x), torch.arange(n_y), indexing="ij")
    cent = torch.stack([(ix + 0.5) * size, (iy + 0.5) * size, bottom + (iz + 0.5) * size], -1).reshape(-1, 3)
    cent = cent.repeat_interleave(per_voxel, 0).double()
    x0 = x0_zxy.reshape(-1).repeat_interleave(per_voxel).double()
    n = len(cent)
    th = torch.full((n, 1), theta, dtype=torch.float64)
    x = size / math.cos(theta) / x0
    fac = (1 + 0.038 * torch.log(x)) ** 2 if log_term else 1.0
    theta0 = 0.0136 / mom * torch.sqrt(x * fac)
    ones = torch.ones(n, 1, dtype=torch.float64)
    return SimpleNamespace(
        n_mu=n,
        poca_xyz=cent,
        poca_xyz_unc=torch.full((n, 3), 1e-4, dtype=torch.float64),
        total_scatter=(math.sqrt(2) * theta0)[:, None],
        total_scatter_unc=1e-4 * ones,
        theta_in=th,
        theta_in_unc=1e-3 * ones,
        theta_out=th,
        theta_out_unc=1e-3 * ones,
        mom=torch.full((n,), mom, dtype=torch.float64),
        above_hit_effs=torch.ones(n, 4, 1, dtype=torch.float64),
        below_hit_effs=torch.ones(n, 4, 1, dtype=torch.float64),
    )


@pytest.mark.parametrize("log_term", [False, True])
def test_x0_exact_from_noise_free_scatters(log_term):
    vol = make_volume()
    gen = torch.Generator().manual_seed(0)
    truth = torch.exp(torch.empty(6, 10, 10).uniform_(math.log(0.003), math.log(0.5), generator=gen)).double()
    inf = PanelX0Inferrer(vol, log_term=log_term, tomopt_exact=True)  # the PoCA-voxel-only scatter model of TomOpt
    inf.add_scatters(fake_scatters(truth, log_term=log_term))
    pred, unc = inf.get_prediction_and_unc()
    assert ((pred - truth).abs() / truth).max() < 1e-4
    assert (unc / pred).max() < 1e-4  # identical muons: no statistical spread


def test_highland_inversion():
    x = torch.logspace(-4, 3, 50, dtype=torch.float64)
    y = x * (1 + 0.038 * torch.log(x)) ** 2
    assert torch.allclose(solve_highland_x(y), x, rtol=1e-9)
    ts, th, p = torch.tensor([0.01]), torch.tensor([0.0]), torch.tensor([5.0])
    assert torch.allclose(x0_from_scatters(0.1, ts, th, th, p), (0.0136 / 5) ** 2 * 0.1 / (ts**2 / 2))


# ---------------------------------------------------------------- path-based inferrer physics
def test_path_uniform_material_recovered():
    x0_true = X0["aluminium"]
    vol = make_volume(lambda *, z, lw, size: torch.full((10, 10), x0_true))
    with torch.no_grad():
        sb = ScatterBatch(propagate(vol, 6000, seed=4), vol)
        inf = PathX0Inferrer(vol)
        inf.add_scatters(sb)
        pred = inf.get_prediction()
    harmonic = 1 / (1 / pred).mean()
    assert abs(float(harmonic) / x0_true - 1) < 0.05
    assert abs(float(pred.median()) / x0_true - 1) < 0.2


def test_path_separates_lead_and_beryllium(sim):
    vol, sb = sim
    lead = torch.zeros(6, 10, 10, dtype=torch.bool)
    lead[1:3, :5, :5] = True
    with torch.no_grad():
        path, poca = PathX0Inferrer(vol), PanelX0Inferrer(vol)
        for inf in (path, poca):
            inf.add_scatters(sb)
        p = path.get_prediction()
    assert float(p[lead].median()) < 0.012 and float(p[~lead].median()) > 0.2
    assert float(p[lead].max()) < float(p[~lead].median())
    q = poca.get_prediction()
    assert float(q[lead].mean()) < float(q[~lead].mean())


# ---------------------------------------------------------------- classifiers
class SoftmaxInt(AbsIntClassifierFromX0):
    def x02probs(self, vox_preds):
        logits = torch.stack([-vox_preds.mean(), vox_preds.mean(), vox_preds.min()])
        return F.softmax(logits * 10, dim=-1)


def test_dense_block_classifier():
    vol = make_volume()
    mu = propagate(vol, 500, seed=5)
    sb = ScatterBatch(mu, vol)
    clf = DenseBlockClassifierFromX0s(50, PanelX0Inferrer, vol)
    assert clf.frac == pytest.approx(50 / 600)
    clf.add_scatters(sb)
    assert clf.n_mu == clf.x0_inferrer.n_mu > 0
    pred = clf.get_prediction()
    assert pred.shape == (1, 1) and pred.dtype == torch.float32 and 0 < float(pred) < 1
    pred.sum().backward()
    g = vol.get_detectors()[0].panels[0].xy.grad
    assert g is not None and torch.isfinite(g).all() and g.abs().sum() > 0
    clf2 = DenseBlockClassifierFromX0s(50, "path", vol, use_avgpool=False)
    clf2.add_scatters(sb)
    assert clf2.get_prediction().shape == (1, 1)
    for bad in (0, 600, 0.012, 2.5):
        with pytest.raises(ValueError, match="n_block_voxels"):
            DenseBlockClassifierFromX0s(bad, PanelX0Inferrer, vol)


def test_int_classifier():
    vol = make_volume()
    mu = propagate(vol, 500, seed=6)
    sb = ScatterBatch(mu, vol)
    clf = SoftmaxInt(PanelX0Inferrer, vol)
    clf.add_scatters(sb)
    probs = clf.get_prediction()
    assert probs.shape == (3,) and torch.allclose(probs.sum(), torch.tensor(1.0))
    probs[0].backward()
    assert vol.get_detectors()[1].panels[0].xy_span.grad is not None
    arg = SoftmaxInt(PanelX0Inferrer, vol, output_probs=False)
    arg.add_scatters(sb)
    assert arg.get_prediction().dtype == torch.long
    f = SoftmaxInt(PanelX0Inferrer, vol, output_probs=False, class2float=lambda c, v: c.float() * 0.5)
    f.add_scatters(sb)
    assert f.get_prediction().dtype == torch.float32
