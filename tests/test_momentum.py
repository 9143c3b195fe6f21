"""Momentum models of the X0 inference: true, smeared (seeded curvature resolution) and unknown (flux spectrum)."""

import math

import pytest
import torch

from tomopt_lib.core import MUON_MASS
from tomopt_lib.inference.momentum import (
    MomentumModel,
    SpectrumMomentum,
    inv_beta_p2,
    muon_momentum_factor,
)
from tomopt_lib.muon.generation import MuonGenerator2015, MuonGenerator2016


def test_model_validation():
    assert MomentumModel.coerce(None).kind == "true"
    assert MomentumModel.coerce("unknown").kind == "unknown"
    with pytest.raises(ValueError, match="kind='guess'.*allowed"):
        MomentumModel(kind="guess")
    for bad in (0.0, -0.1, 2.0, float("nan")):
        with pytest.raises(ValueError, match="resolution"):
            MomentumModel(kind="smeared", resolution=bad)
    with pytest.raises(ValueError, match="momentum must be"):
        MomentumModel.coerce(3)


def test_inv_beta_p2():
    p = torch.tensor([0.2, 1.0, 10.0], dtype=torch.float64)
    beta = p / torch.sqrt(p**2 + MUON_MASS**2)
    assert torch.allclose(inv_beta_p2(p), 1 / (beta * p) ** 2)


def test_true_model_uses_entry_and_exit_momenta():
    """u is the path average of 1/(beta p)^2 over the slowing-down crossing: 1/(beta p)^2 without energy loss,
    ~1/(p_in p_out) for a small constant-S loss, and below it near the end of the range where S rises."""
    p_in = torch.tensor([1.0, 2.0, 0.5], dtype=torch.float64)
    p_out = torch.tensor([1.0, 1.8, 0.1], dtype=torch.float64)
    u, var, pi, po = muon_momentum_factor(MomentumModel("true"), mom_in=p_in, mom_out=p_out, theta_in=torch.zeros(3))
    plain = torch.sqrt(inv_beta_p2(p_in) * inv_beta_p2(p_out))
    assert float(u[0]) == pytest.approx(float(inv_beta_p2(p_in[:1])), rel=1e-6)
    assert float(u[1]) == pytest.approx(float(plain[1]), rel=0.01)
    assert float(u[2]) < 0.9 * float(plain[2])
    assert torch.equal(var, torch.ones(3)) and torch.equal(pi, p_in) and torch.equal(po, p_out)


def test_crossing_profile_monotone():
    from tomopt_lib.inference.momentum import crossing_momentum

    p = crossing_momentum().momentum_at(torch.tensor([2.0, 1.0]), torch.tensor([1.0, 1.0]), torch.linspace(0, 1, 5))
    assert torch.allclose(p[:, 0], torch.tensor([2.0, 1.0]), rtol=1e-3) and torch.allclose(p[:, -1], torch.ones(2), rtol=1e-3)
    assert bool((p[0, 1:] <= p[0, :-1]).all())


def test_smeared_model_unbiased_and_seeded():
    n = 200_000
    p = torch.full((n,), 3.0, dtype=torch.float64)
    model = MomentumModel("smeared", resolution=0.1, seed=7)
    u, var, _, _ = muon_momentum_factor(model, mom_in=p, mom_out=p, theta_in=torch.zeros(n))
    truth = float(inv_beta_p2(p[:1]))
    assert float(u.mean()) == pytest.approx(truth, rel=3e-3)  # E[q_in q_out] = 1 / (beta p)^2
    assert float(u.std() / u.mean()) == pytest.approx(math.sqrt((1 + 0.01) ** 2 - 1), rel=0.02)
    assert float(var[0]) == pytest.approx(1.01**2)
    u2, *_ = muon_momentum_factor(model, mom_in=p, mom_out=p, theta_in=torch.zeros(n))
    assert torch.equal(u, u2)  # same seed, same measurement errors


def test_unknown_model_matches_generator_samples():
    """E[1/(beta p)^2 | theta] from the flux tables equals the Monte Carlo average of generated muons near theta."""
    gen = MuonGenerator2016(x_range=(0, 1), y_range=(0, 1))
    spec = SpectrumMomentum(gen)
    s = gen(400_000, generator=torch.Generator().manual_seed(3)).double()
    theta, p = s[:, 3], s[:, 2]
    for lo, hi in ((0.1, 0.2), (0.8, 0.9)):
        sel = (theta >= lo) & (theta < hi)
        mc = float(inv_beta_p2(p[sel]).mean())
        mean, var = spec.lookup(torch.tensor([0.5 * (lo + hi)], dtype=torch.float64))
        assert float(mean) == pytest.approx(mc, rel=0.05)
        assert float(var) > 1.5  # the spectrum's spread of 1/p^2 is large
    with pytest.raises(ValueError, match="spectrum"):
        muon_momentum_factor(MomentumModel("unknown"), mom_in=p[:3], mom_out=p[:3], theta_in=theta[:3])
    # Shukla-Sankrith's spectrum shape does not depend on theta; Guan et al.'s hardens at large zenith angles
    m_lo, _ = spec.lookup(torch.tensor([0.1]))
    m_hi, _ = spec.lookup(torch.tensor([1.1]))
    assert float(m_hi) == pytest.approx(float(m_lo), rel=1e-6)
    guan = SpectrumMomentum(MuonGenerator2015(x_range=(0, 1), y_range=(0, 1)))
    assert float(guan.lookup(torch.tensor([1.1]))[0]) < 0.8 * float(guan.lookup(torch.tensor([0.1]))[0])


def test_unknown_model_fixed_momentum_generator():
    gen = MuonGenerator2016(x_range=(0, 1), y_range=(0, 1), fixed_mom=5.0)
    mean, var = SpectrumMomentum(gen).lookup(torch.tensor([0.3]))
    assert float(mean) == pytest.approx(float(inv_beta_p2(torch.tensor(5.0))), rel=1e-6)
    assert float(var) == pytest.approx(1.0, abs=1e-6)


def test_prior_nodes_keep_the_spectrum_moments():
    """The node representation of the unknown-momentum prior is normalised and keeps E[u] exactly, with and without an
    energy loss (muons that would stop are left out, which lowers the mean of the survivors' path-averaged u)."""
    spec = SpectrumMomentum(MuonGenerator2016(x_range=(0, 1), y_range=(0, 1)))
    theta = torch.tensor([0.05, 0.5, 1.0], dtype=torch.float64)
    for delta_e in (None, torch.tensor([0.0, 0.3, 1.5], dtype=torch.float64)):
        u_k, p_k = spec.nodes(theta, delta_e)
        assert u_k.shape == p_k.shape == (3, 24)
        assert torch.allclose(p_k.sum(1), torch.ones(3, dtype=torch.float64))
        mean = spec.lookup_after_loss(theta, delta_e)[0] if delta_e is not None else spec.lookup(theta)[0]
        if delta_e is None:  # lookup() interpolates in theta, nodes() take the nearest bin: compare to bin means
            mean = spec.lookup_after_loss(theta, torch.zeros(3, dtype=torch.float64))[0]
        assert torch.allclose((p_k * u_k).sum(1), mean, rtol=1e-9)
        assert bool((u_k > 0).all())


def test_exit_momentum_follows_the_stopping_power():
    """``CrossingMomentum.after_loss``: through 0.5 m of iron (a 1 GeV muon would lose S(1 GeV) x 0.5 m) the exit
    momentum matches a fine explicit integration of dE/dx = -S(E) (0.5 mm steps) within 1 %, and a muon whose CSDA
    range is shorter than the column does not come out. A constant loss E_out = E_in - S(1 GeV) L ignores how S varies
    along the slowing down: the 0.75 GeV muon comes out at 0.09 GeV with it instead of 0.13 GeV."""
    from tomopt_lib.inference.momentum import crossing_momentum
    from tomopt_lib.volume.energy_loss import csda_range, stopping_power

    length = 0.5
    loss_1gev = float(stopping_power(torch.tensor([1.0], dtype=torch.float64), "iron")[0]) * length  # GeV
    p_in = torch.tensor([0.75, 1.0, 2.0, 10.0, 100.0], dtype=torch.float64)
    p_out, alive = crossing_momentum().after_loss(p_in, torch.full_like(p_in, loss_1gev))
    e = torch.sqrt(p_in**2 + MUON_MASS**2)
    step = 5e-4
    for _ in range(int(length / step)):
        p = torch.sqrt((e**2 - MUON_MASS**2).clamp_min(1e-12))
        e = torch.where(e > MUON_MASS * 1.0001, e - stopping_power(p, "iron") * step, e)
    p_ref = torch.sqrt((e**2 - MUON_MASS**2).clamp_min(0.0))
    assert bool(alive.all())
    assert torch.allclose(p_out, p_ref, rtol=0.01)
    e_const = torch.sqrt(p_in[0] ** 2 + MUON_MASS**2) - loss_1gev
    assert abs(math.sqrt(e_const**2 - MUON_MASS**2) / float(p_ref[0]) - 1) > 0.2
    # a muon that stops inside the column
    p_short = torch.tensor([0.3], dtype=torch.float64)
    assert float(csda_range(p_short, "iron")[0]) < length
    _, alive_short = crossing_momentum().after_loss(p_short, torch.tensor([loss_1gev], dtype=torch.float64))
    assert not bool(alive_short[0])
