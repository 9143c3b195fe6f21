"""Data and detector callbacks: MuonResampler (all muons hit the passive volume, seeded, bounded rounds),
SigmoidPanelSmoothnessSchedule and PanelCentring. Helpers: tests/callback_helpers.py."""

import logging
from types import SimpleNamespace

import pytest
import torch
from callback_helpers import LW, attach, make_volume, make_wrapper

from tomopt_lib.muon.generation import MuonGenerator2016
from tomopt_lib.muon.muon_batch import MuonBatch
from tomopt_lib.optimisation.callbacks.data_callbacks import MuonResampler
from tomopt_lib.optimisation.callbacks.detector_callbacks import PanelCentring, SigmoidPanelSmoothnessSchedule


# ---------------------------------------------------------------------------------------------------- resampler
def test_muon_resampler_all_hit_and_seeded():
    vol = make_volume()
    w = make_wrapper(vol, state="train")
    gen = torch.Generator().manual_seed(0)
    mus = w.mu_generator.generate_set(2000, generator=gen)
    w.fit_params.mu = MuonBatch(mus, init_z=vol.h)
    miss = ~MuonResampler.check_mu_batch(w.fit_params.mu, vol)
    assert miss.sum() > 100  # the generator's footprint is wider than the volume
    outs = []
    for _ in range(2):
        w.fit_params.mu = MuonBatch(mus, init_z=vol.h)
        cb = attach(MuonResampler(seed=7), w)
        cb.on_train_begin()
        cb.on_mu_batch_begin()
        mu = w.fit_params.mu
        assert len(mu) == 2000 and MuonResampler.check_mu_batch(mu, vol).all() and cb.n_unreplaced == 0
        assert torch.allclose(mu.z, vol.h.expand(2000))
        outs.append(mu.muons.clone())
    assert torch.equal(outs[0], outs[1])  # same seed, same batch
    assert torch.equal(outs[0][~miss, :2], mus[~miss, :2])  # hitting muons are kept in place
    # propagated: every resampled muon really enters the passive block
    mu = MuonBatch(outs[0][:, [0, 1, 3, 4, 5]], init_z=vol.h)
    vol(mu)
    z_hist = torch.stack(mu.xyz_hist, 1)  # positions after each layer
    inside = ((z_hist[..., :2] >= -1e-5) & (z_hist[..., :2] <= LW + 1e-5)).all(-1)
    assert inside[:, :4].any(1).float().mean() > 0.95  # at z = 0.5, 0.4, 0.3 or 0.2 m (passive planes)


def test_muon_resampler_slab_test_matches_brute_force():
    vol = make_volume()
    g = MuonGenerator2016.from_volume(vol, fixed_mom=5.0)
    mu = MuonBatch(g.generate_set(5000, generator=torch.Generator().manual_seed(1)), init_z=vol.h)
    hit = MuonResampler.check_mu_batch(mu, vol)
    zs = torch.linspace(0.2, 0.5, 2001)
    d = mu.direction
    s = (mu.z[:, None] - zs[None]) / (-d[:, 2:3])
    x, y = mu.x[:, None] + s * d[:, :1], mu.y[:, None] + s * d[:, 1:2]
    brute = ((x >= 0) & (x <= LW) & (y >= 0) & (y <= LW)).any(1)
    assert (hit == brute).float().mean() > 0.999


def test_muon_resampler_bounded_rounds_logs(caplog):
    vol = make_volume()
    w = make_wrapper(vol, state="train")
    w.mu_generator = SimpleNamespace(
        generate_set=lambda n, generator=None: torch.tensor([[-5.0, -5.0, 5.0, 0.0, 0.0]]).repeat(n, 1)
    )
    w.fit_params.mu = MuonBatch(torch.tensor([[-5.0, -5.0, 5.0, 0.0, 0.0], [0.2, 0.2, 5.0, 0.0, 0.0]]), init_z=vol.h)
    cb = attach(MuonResampler(max_rounds=3), w)
    cb.on_train_begin()
    with caplog.at_level(logging.WARNING):
        cb.on_mu_batch_begin()
    assert cb.n_unreplaced == 1 and "still miss" in caplog.text and len(w.fit_params.mu) == 2
    with pytest.raises(ValueError, match="max_rounds"):
        MuonResampler(max_rounds=0)


# ---------------------------------------------------------------------------------------------------- detector
def test_sigmoid_panel_smoothness_schedule():
    vol = make_volume(sigmoid_smooth=0.5)
    w = make_wrapper(vol)
    w.fit_params.n_epochs = 5
    w.fit_params.warmup_cbs = [SimpleNamespace(n_warmup=1)]
    cb = attach(SigmoidPanelSmoothnessSchedule((1.0, 0.01)), w)
    cb.on_train_begin()
    panels = [p for d in vol.get_detectors() for p in d.panels]

    def smooths():
        return {round(float(p.smooth), 6) for p in panels}

    assert smooths() == {1.0}
    seen = []
    for epoch in range(5):
        w.fit_params.warmup_done = epoch >= 1
        for state in ("train", "valid"):
            w.fit_params.state = state
            cb.on_epoch_begin()
            seen.append(smooths())
    assert [s for s in seen[::2]] == [{1.0}, {1.0}, {round(10 ** (-2 / 3), 6)}, {round(10 ** (-4 / 3), 6)}, {0.01}]
    assert seen[1::2] == seen[::2]  # validation epochs do not advance the schedule
    with pytest.raises(ValueError, match="smooth_range"):
        SigmoidPanelSmoothnessSchedule((1.0, 0.0))


def test_panel_centring():
    vol = make_volume()
    w = make_wrapper(vol)
    with torch.no_grad():
        for d in vol.get_detectors():
            for i, p in enumerate(d.panels):
                p.xy.copy_(torch.tensor([0.1 + 0.2 * i, 0.4 - 0.1 * i]))
                p.z.sub_(0.01 * i)
    z_before = [float(p.z.detach()) for d in vol.get_detectors() for p in d.panels]
    attach(PanelCentring(), w).on_step_end()
    for d in vol.get_detectors():
        for p in d.panels:
            assert p.xy.detach().tolist() == pytest.approx([0.2, 0.35])
    assert [float(p.z.detach()) for d in vol.get_detectors() for p in d.panels] == z_before
