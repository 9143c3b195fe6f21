"""Continuous energy loss in ``PassiveLayer``: momentum updates, stopped muons, eager == fused, TomOpt mode off."""

import math

import pytest
import torch

from tomopt_lib.core import X0
from tomopt_lib.muon import MuonBatch
from tomopt_lib.volume.energy_loss import csda_range, stopping_power
from tomopt_lib.volume.passive_layer import PassiveLayer
from tomopt_lib.volume.scatter_model import PDGScatterModel


class _EagerPDG(PDGScatterModel):
    """Same model, but not the exact class: the layer takes the eager torch path."""


def uniform(material):
    return lambda *, z, lw, size: torch.full((3, 3), X0[material])


def vertical_muons(n, mom, centre):
    return MuonBatch(torch.tensor([[centre, centre, mom, 0.0, 0.0]]).repeat(n, 1), init_z=1.0)


def run_layer(material, thickness, mom, *, model=None, energy_loss=True, n=2000, seed=0):
    layer = PassiveLayer(
        [3 * thickness] * 2,
        1.0,
        thickness,
        rad_length_func=uniform(material),
        step_sz=0.005,
        scatter_model=model or PDGScatterModel(),
        energy_loss=energy_loss,
    )
    mu = vertical_muons(n, mom, 1.5 * thickness)
    layer(mu, generator=torch.Generator().manual_seed(seed))
    return layer, mu


@pytest.mark.parametrize("material,mom", [("iron", 1.0), ("lead", 2.0), ("beryllium", 0.5)])
def test_momentum_follows_stopping_power(material, mom):
    """Mean exit momentum after 0.2 m: within 1 % of integrating -dE/dx along the (slightly longer) scattered path."""
    _, mu = run_layer(material, 0.2, mom)
    e_in = math.sqrt(mom**2 + 0.1056583755**2)
    de = float(stopping_power(torch.tensor(mom), material)) * 0.2
    p_exp = math.sqrt((e_in - de) ** 2 - 0.1056583755**2)  # first order in the loss
    assert float(mu.mom.mean()) == pytest.approx(p_exp, rel=0.01)
    assert torch.equal(mu.mom_in, torch.full_like(mu.mom_in, mom))  # the generated momentum is kept


def test_stopped_muons_removed():
    """0.5 GeV muons stop inside 0.5 m of lead (CSDA range 0.28 m); 5 GeV muons do not."""
    assert float(csda_range(torch.tensor(0.5), "lead")) < 0.5
    _, mu = run_layer("lead", 0.5, 0.5, n=200)
    assert len(mu) == 0 and len(mu.stopped_muons) + len(mu.upwards_muons) == 200  # near the end of their range
    assert len(mu.stopped_muons) > 100  # muons scatter through large angles: some turn upwards before stopping
    _, mu = run_layer("lead", 0.5, 5.0, n=200)
    assert len(mu) == 200 and len(mu.stopped_muons) == 0


def test_fused_equals_eager():
    torch.manual_seed(0)
    out = []
    for model in (PDGScatterModel(), _EagerPDG()):
        _, mu = run_layer("iron", 0.1, 0.8, model=model, n=3000, seed=4)
        out.append(mu.muons.clone())
    assert out[0].shape == out[1].shape
    assert torch.allclose(out[0], out[1], rtol=1e-4, atol=1e-5)


def test_energy_loss_off_keeps_momentum():
    _, mu = run_layer("lead", 0.2, 1.0, energy_loss=False)
    assert torch.equal(mu.mom, torch.full_like(mu.mom, 1.0))


def test_low_momentum_scatters_more_with_energy_loss():
    """Scattering uses the local momentum: with energy loss, 1 GeV muons through 0.3 m iron scatter ~20 % more."""
    _, lost = run_layer("iron", 0.3, 1.0, energy_loss=True, n=20000)
    _, kept = run_layer("iron", 0.3, 1.0, energy_loss=False, n=20000)
    ratio = float(lost.theta.square().mean().sqrt() / kept.theta.square().mean().sqrt())
    p_out = float(lost.mom.mean())
    assert ratio == pytest.approx(math.sqrt(1.0 / p_out), rel=0.05)  # theta0^2 ~ 1 / (p_in p_out)
    assert 1.1 < ratio < 1.4


def test_hits_above_keep_gradients_when_muons_stop_below() -> None:
    """Muons that stop in the passive block (energy loss) are dropped inside the no-grad passive step; the hits they
    and the surviving muons left in the detector above must still carry gradients to its panels."""
    from tomopt_lib.volume.builders import build_panel_volume

    torch.manual_seed(3)
    vol = build_panel_volume(passive_n_layers=6, energy_loss=True)
    vol.load_rad_length(lambda *, z, lw, size: torch.full((10, 10), X0["lead"]))
    xy_p_theta_phi = torch.stack(
        [torch.rand(200), torch.rand(200), torch.linspace(0.3, 5.0, 200), torch.full((200,), 0.1), torch.zeros(200)], 1
    )
    mu = MuonBatch(xy_p_theta_phi, init_z=vol.h)
    vol(mu)
    assert 0 < len(mu) < 200  # some muons stopped in 0.6 m of lead
    hits = mu.get_hits()
    above = hits["above"]["reco_xyz"]
    assert above.grad_fn is not None and hits["below"]["reco_xyz"].grad_fn is not None
    hits["above"]["unc_xyz"].sum().backward()
    first = vol.get_detectors()[0].panels[0]
    assert first.xy_span.grad is not None and bool(torch.isfinite(first.xy_span.grad).all())
