"""Speed/memory paths give the results of the plain computations: chunked voxel sums, fused passive-layer step."""

import pytest
import torch

from tomopt_lib.core import X0
from tomopt_lib.inference import ScatterBatch
from tomopt_lib.inference.volume import PanelX0Inferrer
from tomopt_lib.inference.voxel_probs import voxel_axis_probs, voxel_pair_probs
from tomopt_lib.inference.voxel_sums import separable_voxel_sums
from tomopt_lib.muon.generation import MuonGenerator2016
from tomopt_lib.muon.muon_batch import MuonBatch
from tomopt_lib.volume.builders import build_panel_volume
from tomopt_lib.volume.passive_layer import PassiveLayer
from tomopt_lib.volume.scatter_model import PDGScatterModel

pytestmark = pytest.mark.filterwarnings("ignore:Converting a tensor with requires_grad")


def _inputs(n, shp, seed=0):
    g = torch.Generator().manual_seed(seed)
    low = (0.0, 0.0, 0.2)
    ext = torch.tensor([shp[1], shp[2], shp[0]], dtype=torch.float32) * 0.1
    poca = (torch.rand(n, 3, generator=g) * ext * 1.2 - 0.1 * ext + torch.tensor(low)).requires_grad_()
    unc = (torch.rand(n, 3, generator=g) * 0.1 + 0.01).requires_grad_()
    a = torch.rand(n, 9, generator=g).requires_grad_()
    b = torch.rand(n, 1, generator=g).requires_grad_()
    return poca, unc, a, b, low


def _reference(poca, unc, a, b, low, shp, window):
    """Unchunked sums over the materialised (N, W) pairs (the former implementation)."""
    probs, idx = voxel_pair_probs(poca, unc, low_xyz=low, size=0.1, shp_zxy=shp, window=window)
    n_vox = shp[0] * shp[1] * shp[2]
    flat = idx.reshape(-1)
    s1 = a.new_zeros(n_vox, a.shape[1]).index_add(0, flat, (probs[:, :, None] * a[:, None, :]).reshape(-1, a.shape[1]))
    s2 = a.new_zeros(n_vox, 1).index_add(0, flat, (probs.square() * b).reshape(-1, 1))
    return s1, s2


@pytest.mark.parametrize("shp,window", [((6, 10, 10), 7), ((20, 30, 30), 3), ((6, 10, 10), None)])
@pytest.mark.parametrize("chunk", [1 << 22, 3000, 1])
def test_separable_voxel_sums_equal_unchunked(shp, window, chunk):
    """Dense (few voxels) and sparse (many voxels) paths, any chunking: same sums and same gradients."""
    poca, unc, a, b, low = _inputs(400, shp)
    n_vox = shp[0] * shp[1] * shp[2]
    g1, g2 = torch.randn(n_vox, 9), torch.randn(n_vox, 1)
    outs = []
    for new in (False, True):
        if new:
            axes = voxel_axis_probs(poca, unc, low_xyz=low, size=0.1, shp_zxy=shp, window=window)
            s1, s2 = separable_voxel_sums(axes, shp, a, b, chunk=chunk)
        else:
            s1, s2 = _reference(poca, unc, a, b, low, shp, window)
        grads = torch.autograd.grad((s1 * g1).sum() + (s2 * g2).sum(), [poca, unc, a, b])
        outs.append((s1, s2) + grads)
    for new, ref in zip(*outs):
        assert torch.allclose(new, ref, rtol=1e-5, atol=1e-6 * float(ref.abs().max()))


def test_inferrer_chunking_invariant():
    """PanelX0Inferrer (TomOpt-exact, the mode that uses the chunked voxel sums): predictions and detector gradients
    do not depend on the chunk size."""
    vol = build_panel_volume(res=1e4, eff=0.9)
    vol.load_rad_length(lambda *, z, lw, size: torch.full((10, 10), X0["iron"]))
    rng = torch.Generator().manual_seed(1)
    gen = MuonGenerator2016.from_volume(vol, fixed_mom=5.0, min_angle=0.0)
    mu = MuonBatch(gen(500, generator=rng), init_z=vol.h)
    vol(mu, generator=rng)
    sb = ScatterBatch(mu, vol)
    res = []
    for chunk in (1 << 22, 500):
        inf = PanelX0Inferrer(vol, chunk=chunk, tomopt_exact=True)
        inf.add_scatters(sb)
        pred, unc = inf.get_prediction_and_unc()
        params = [p.xy for det in vol.get_detectors() for p in det.panels]
        grads = torch.autograd.grad(pred.sum() + unc.sum(), params, retain_graph=True)
        res.append((pred.detach(), unc.detach(), torch.cat([g.flatten() for g in grads])))
    for x, y in zip(*res):  # float32 sums in another order: gradients agree to ~1e-5 of their scale
        assert torch.allclose(x, y, rtol=1e-4, atol=2e-5 * float(y.abs().max()))


class _EagerPDG(PDGScatterModel):
    """Same model; a subclass, so ``PassiveLayer`` takes its generic (eager torch) path."""


@pytest.mark.parametrize("log_term", [True, False])
def test_fused_passive_step_matches_eager(log_term):
    def rl(*, z, lw, size):
        return torch.rand(10, 10, generator=torch.Generator().manual_seed(3)) * 0.3 + 0.005

    outs = []
    for model in (_EagerPDG(log_term=log_term), PDGScatterModel(log_term=log_term)):
        g = torch.Generator().manual_seed(1)
        n = 3000
        init = torch.cat(
            [
                torch.rand(n, 2, generator=g) * 1.4 - 0.2,
                torch.rand(n, 1, generator=g) * 5 + 0.05,
                torch.rand(n, 1, generator=g) * 1.2,
                torch.rand(n, 1, generator=g) * 6.28,
            ],
            dim=1,
        )
        mu = MuonBatch(init, init_z=1.0)
        layer = PassiveLayer([1.0, 1.0], 0.8, 0.1, rad_length_func=rl, scatter_model=model)
        gen = torch.Generator().manual_seed(5)
        layer(mu, generator=gen)
        outs.append((mu.muons.clone(), mu.x0_traversed.clone(), len(mu._upwards_muons), gen.get_state()))
    (m_e, x_e, up_e, st_e), (m_f, x_f, up_f, st_f) = outs
    assert torch.equal(st_e, st_f)  # same random draws consumed
    assert m_e.shape == m_f.shape and up_e == up_f
    # positions of near-horizontal muons amplify last-bit differences by tan(theta): compare relative to scale
    d = (m_e - m_f).abs()
    assert float(d[:, [0, 1, 2]].max()) < 1e-3 and float(torch.quantile(d[:, 0], 0.99)) < 1e-5
    assert float(d[:, 4].max()) < 1e-4 and torch.allclose(x_e, x_f, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("cls_name", ["PanelX0Inferrer", "PathX0Inferrer"])
def test_merged_batches_equal_batch_by_batch(cls_name):
    """Merging the muon batches (one autograd graph) gives the batch-by-batch predictions and detector gradients."""
    import tomopt_lib.inference.volume as inf_mod

    cls = getattr(inf_mod, cls_name)
    vol = build_panel_volume(res=1e4, eff=0.9)
    vol.load_rad_length(lambda *, z, lw, size: torch.full((10, 10), X0["iron"]))
    rng = torch.Generator().manual_seed(2)
    gen = MuonGenerator2016.from_volume(vol, fixed_mom=5.0, min_angle=0.0)
    sbs = []
    for _ in range(4):
        mu = MuonBatch(gen(200, generator=rng), init_z=vol.h)
        vol(mu, generator=rng)
        sbs.append(ScatterBatch(mu, vol))
    res = []
    for merge in (False, True):
        inf = cls(vol)
        inf.merge_batches = merge
        for sb in sbs:
            inf.add_scatters(sb)
        pred, unc = inf.get_prediction_and_unc()
        params = [q for det in vol.get_detectors() for p in det.panels for q in (p.xy, p.z, p.xy_span)]
        grads = torch.autograd.grad(pred.sum() + unc.sum(), params, retain_graph=True, allow_unused=True)
        res.append((inf.n_mu, pred.detach(), unc.detach(), torch.cat([g.flatten() for g in grads if g is not None])))
    (n0, *a), (n1, *b) = res
    assert n0 == n1 <= sum(len(sb) for sb in sbs)  # the inferrers leave out near-horizontal tracks
    for x, y in zip(a, b):
        assert torch.allclose(x, y, rtol=1e-4, atol=1e-5 * float(y.abs().max()))


def test_merge_refuses_incompatible_batches():
    from tomopt_lib.inference.merged_batch import merge_scatter_batches

    class Custom(ScatterBatch):
        pass

    vol = build_panel_volume(res=1e4, eff=0.9)
    vol.load_rad_length(lambda *, z, lw, size: torch.full((10, 10), X0["iron"]))
    rng = torch.Generator().manual_seed(3)
    mu = MuonBatch(MuonGenerator2016.from_volume(vol)(100, generator=rng), init_z=vol.h)
    vol(mu, generator=rng)
    sb = ScatterBatch(mu, vol)
    assert merge_scatter_batches([sb, sb]).n_mu == 2 * sb.n_mu
    assert merge_scatter_batches([sb, Custom(mu, vol)]) is None
