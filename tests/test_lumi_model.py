"""Tests of the luminosity model: reference values, analytic limits, scipy-quad oracle, broadcasting, autograd, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lumi_lib import IPConfig, field_names, luminosity
from lumi_lib.constants import PROTON_MASS_GEV
from lumi_lib.reference_quad import (
    luminosity_head_on_no_hourglass,
    luminosity_no_hourglass,
    luminosity_quad,
    piwinski_factor,
)

F64 = torch.float64
EPS0 = 2.3e-6
L_NOMINAL = 8.7337879005844087e33
L_HEAD_ON = 3.5990655879277626e34
L0_HEAD_ON = 5.0402569626842565e34
TIGHT = dict(epsabs=0.0, epsrel=2e-14, limit=1000)


def eps4(*values: float) -> torch.Tensor:
    return torch.tensor(values if values else (EPS0,) * 4, dtype=F64)


def rel(a: float, b: float) -> float:
    return abs(a / b - 1.0)


def random_configs(n: int, seed: int):
    """Seeded configurations: beta*, alpha, crossing in x / y / both, offsets up to ~6 sigma, sigma_z, dispersion,
    unequal beams (n2, energy2), emittances +-50 % around 2.3e-6."""
    rng = np.random.default_rng(seed)
    base = IPConfig.lhc_default("x")
    configs, eps = [], []
    for i in range(n):
        theta = rng.uniform(0.0, 600e-6)
        cx, cy = [(theta, 0.0), (0.0, theta), tuple(theta * rng.uniform(-1, 1, 2)), (0.0, 0.0)][i % 4]
        u = lambda lo, hi: float(rng.uniform(lo, hi))  # noqa: E731
        cfg = base.replace(
            n1=u(0.7e11, 1.6e11),
            n2=u(0.7e11, 1.6e11),
            energy1=u(450.0, 7000.0),
            energy2=u(450.0, 7000.0),
            cross_x=float(cx),
            cross_y=float(cy),
            sep_x=u(-6e-5, 6e-5),
            sep_y=u(-6e-5, 6e-5),
            beta_x1=u(0.15, 2.0),
            beta_y1=u(0.15, 2.0),
            beta_x2=u(0.15, 2.0),
            beta_y2=u(0.15, 2.0),
            alpha_x1=u(-1, 1),
            alpha_y1=u(-1, 1),
            alpha_x2=u(-1, 1),
            alpha_y2=u(-1, 1),
            sigma_z1=u(0.05, 0.4),
            sigma_z2=u(0.05, 0.4),
            dpp1=u(0, 3e-4),
            dpp2=u(0, 3e-4),
            disp_x1=u(-0.3, 0.3),
            disp_y1=u(-0.3, 0.3),
            disp_x2=u(-0.3, 0.3),
            disp_y2=u(-0.3, 0.3),
            disp_px1=u(-0.03, 0.03),
            disp_py1=u(-0.03, 0.03),
            disp_px2=u(-0.03, 0.03),
            disp_py2=u(-0.03, 0.03),
        )
        configs.append(cfg)
        eps.append(EPS0 * rng.uniform(0.5, 1.5, 4))
    return configs, np.array(eps)


# ------------------------------------------------------------------------------------------------ reference values
@pytest.mark.parametrize("plane", ["x", "y"])
def test_reference_nominal_crossing(plane):
    assert rel(luminosity(IPConfig.lhc_default(plane), eps4()).item(), L_NOMINAL) < 1e-12


def test_reference_head_on_and_hourglass_factor():
    cfg = IPConfig.lhc_default("y", cross_y=0.0)
    assert rel(luminosity(cfg, eps4()).item(), L_HEAD_ON) < 1e-12
    assert rel(luminosity_head_on_no_hourglass(cfg, [EPS0] * 4), L0_HEAD_ON) < 1e-13
    assert abs(L_HEAD_ON / L0_HEAD_ON - 0.7140639088) < 1e-10


def test_scalar_quad_matches_reference_values():
    assert rel(luminosity_quad(IPConfig.lhc_default("y"), [EPS0] * 4), L_NOMINAL) < 1e-13
    assert rel(luminosity_quad(IPConfig.lhc_default("x", cross_x=0.0), [EPS0] * 4), L_HEAD_ON) < 1e-13


def test_lhc_default_fields():
    cfg = IPConfig.lhc_default("x")
    assert (cfg.f_rev, cfg.n_bunches, cfg.n1, cfg.n2, cfg.energy1) == (11245.0, 2736.0, 1.4e11, 1.4e11, 6800.0)
    assert (cfg.cross_x, cfg.cross_y, cfg.sigma_z1, cfg.beta_y2) == (320e-6, 0.0, 0.35, 0.30)
    assert IPConfig.lhc_default("y").cross_y == 320e-6
    assert len(field_names()) == 30 and IPConfig.field_names() == field_names()


# ------------------------------------------------------------------------------------------------ analytic limits
def test_head_on_huge_beta_is_L0_unequal_beams():
    big = dict(beta_x1=1e5, beta_y1=2e5, beta_x2=1.5e5, beta_y2=3e5)
    cfg = IPConfig.lhc_default("x", cross_x=0.0, n2=0.9e11, energy2=450.0, sigma_z2=0.2, **big)
    e = [2e-6, 3e-6, 2.5e-6, 1.5e-6]
    assert rel(luminosity(cfg, eps4(*e)).item(), luminosity_head_on_no_hourglass(cfg, e)) < 1e-10


@pytest.mark.parametrize("plane", ["x", "y"])
def test_crossing_huge_beta_is_piwinski(plane):
    cfg = IPConfig.lhc_default(plane, beta_x1=1e4, beta_y1=1e4, beta_x2=1e4, beta_y2=1e4, **{f"cross_{plane}": 0.02})
    l0 = luminosity_head_on_no_hourglass(cfg, [EPS0] * 4)
    phi = 0.01 * 0.35 / math.sqrt(1e4 * EPS0 / (6800.0 / PROTON_MASS_GEV * math.sqrt(1 - (PROTON_MASS_GEV / 6800.0) ** 2)))
    assert rel(piwinski_factor(cfg, [EPS0] * 4), 1 / math.sqrt(1 + phi**2)) < 1e-12
    assert 1.5 < phi < 3.0
    assert rel(luminosity(cfg, eps4()).item(), l0 * piwinski_factor(cfg, [EPS0] * 4)) < 1e-10


def test_offsets_and_crossing_huge_beta_closed_form():
    cfg = IPConfig.lhc_default(
        "x",
        beta_x1=1e4,
        beta_y1=1e4,
        beta_x2=1e4,
        beta_y2=1e4,
        cross_x=0.01,
        cross_y=-0.004,
        sep_x=2e-3,
        sep_y=1e-3,
        n2=1.1e11,
        energy2=5000.0,
    )
    assert rel(luminosity(cfg, eps4()).item(), luminosity_no_hourglass(cfg, [EPS0] * 4)) < 1e-10


# ------------------------------------------------------------------------------------------------ oracle: scipy quad
def test_random_configs_match_scipy_quad():
    configs, eps = random_configs(240, seed=20240611)
    ref = np.array([luminosity_quad(c, e, **TIGHT) for c, e in zip(configs, eps)])
    batched = luminosity(IPConfig.stack(configs), torch.from_numpy(eps)).numpy()
    err = np.abs(batched / ref - 1.0)
    assert err.max() <= 1e-10, (err.max(), int(err.argmax()))
    one = luminosity(configs[7], torch.from_numpy(eps[7])).item()
    assert rel(one, batched[7]) < 1e-13


def test_reference_quirks_flag_overrides_beam_two():
    cfg = IPConfig.lhc_default("y", n2=0.7e11, energy2=450.0)
    quirky = luminosity_quad(cfg, [EPS0] * 4, reference_quirks=True)
    assert rel(quirky, L_NOMINAL) < 1e-13
    assert rel(luminosity_quad(cfg, [EPS0] * 4, **TIGHT), luminosity(cfg, eps4()).item()) < 1e-12


# ------------------------------------------------------------------------------------------------ behaviour
def test_broadcast_eps_batch_times_config_batch():
    configs, eps = random_configs(3, seed=1)
    stacked = IPConfig.stack(configs)
    e = torch.from_numpy(eps[:, None, :] * np.array([0.8, 1.0, 1.2, 1.1, 0.9])[None, :, None].repeat(4, 2)).permute(1, 0, 2)
    e = e[:, None, :, :]  # (5, 1, 3, 4) against configs (3,) -> (5, 1, 3)
    out = luminosity(stacked, e)
    assert out.shape == (5, 1, 3)
    for i in range(5):
        for j in range(3):
            assert rel(out[i, 0, j].item(), luminosity(configs[j], e[i, 0, j]).item()) < 1e-13
    product = luminosity(stacked, e[:, 0, :1, :])  # (5, 1, 4) x (3,) -> (5, 3)
    assert product.shape == (5, 3)


def test_config_tensor_field_batch():
    seps = torch.linspace(-3e-5, 3e-5, 7, dtype=F64)
    out = luminosity(IPConfig.lhc_default("y", sep_x=seps), eps4())
    assert out.shape == (7,)
    ref = [luminosity(IPConfig.lhc_default("y", sep_x=float(s)), eps4()).item() for s in seps]
    assert np.allclose(out.numpy(), ref, rtol=1e-13, atol=0)
    assert torch.allclose(out, out.flip(0), rtol=1e-13)


def test_honours_n2_and_energy2():
    base = IPConfig.lhc_default("y")
    l_ref = luminosity(base, eps4()).item()
    assert rel(luminosity(base.replace(n2=0.7e11), eps4()).item(), 0.5 * l_ref) < 1e-14
    assert rel(luminosity(base.replace(n1=2.8e11, n2=0.7e11), eps4()).item(), l_ref) < 1e-14
    low_e2 = luminosity(base.replace(energy2=3400.0), eps4()).item()
    assert low_e2 < l_ref * 0.9  # beam 2 twice as large in normalised emittance terms -> lower L


def test_symmetric_optics_depends_only_on_emittance_sums():
    cfg = IPConfig.lhc_default("x", sep_y=5e-6, alpha_x1=0.3, alpha_x2=0.3)
    a = luminosity(cfg, eps4(2.0e-6, 2.5e-6, 2.6e-6, 2.1e-6)).item()
    b = luminosity(cfg, eps4(2.3e-6, 2.3e-6, 2.3e-6, 2.3e-6)).item()
    c = luminosity(cfg, eps4(1.2e-6, 3.4e-6, 3.4e-6, 1.2e-6)).item()
    assert rel(a, b) < 1e-13 and rel(c, b) < 1e-13
    asym = luminosity(cfg.replace(beta_x2=0.31), eps4(2.0e-6, 2.5e-6, 2.6e-6, 2.1e-6)).item()
    asym_b = luminosity(cfg.replace(beta_x2=0.31), eps4()).item()
    assert rel(asym, asym_b) > 1e-4


# ------------------------------------------------------------------------------------------------ autograd
def test_autograd_matches_finite_differences():
    cfg0 = IPConfig.lhc_default("x", sep_y=4e-6, beta_x2=0.33, disp_x1=0.1, dpp1=1e-4, alpha_y1=0.2)
    sep = torch.tensor(3e-6, dtype=F64, requires_grad=True)
    cross = torch.tensor(320e-6, dtype=F64, requires_grad=True)
    e = eps4(2.1e-6, 2.4e-6, 2.6e-6, 2.2e-6).requires_grad_(True)
    lum = luminosity(cfg0.replace(sep_x=sep, cross_x=cross), e)
    g_e, g_s, g_c = torch.autograd.grad(lum, (e, sep, cross))

    def f(eps_v, s, c):
        return luminosity(cfg0.replace(sep_x=s, cross_x=c), torch.tensor(eps_v, dtype=F64)).item()

    ev, sv, cv = e.detach().numpy(), 3e-6, 320e-6
    for k in range(4):
        h = ev[k] * 1e-5
        d = np.zeros(4)
        d[k] = h
        fd = (f(ev + d, sv, cv) - f(ev - d, sv, cv)) / (2 * h)
        assert rel(g_e[k].item(), fd) < 1e-7
    fd_s = (f(ev, sv + 1e-10, cv) - f(ev, sv - 1e-10, cv)) / 2e-10
    fd_c = (f(ev, sv, cv + 1e-9) - f(ev, sv, cv - 1e-9)) / 2e-9
    assert rel(g_s.item(), fd_s) < 1e-6 and rel(g_c.item(), fd_c) < 1e-6


def test_gradcheck_scaled_inputs():
    cfg = IPConfig.lhc_default("y", beta_x2=0.28, sep_x=2e-6)

    def fn(u_eps, u_sep, u_beta):
        c = cfg.replace(sep_y=u_sep * 1e-5, beta_y1=u_beta)
        return luminosity(c, u_eps * 1e-6) / 1e33

    u_eps = torch.tensor([[2.3, 2.0, 2.6, 2.4], [1.8, 2.9, 2.2, 2.0]], dtype=F64, requires_grad=True)
    u_sep = torch.tensor([0.3, -0.5], dtype=F64, requires_grad=True)
    u_beta = torch.tensor(0.3, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(fn, (u_eps, u_sep, u_beta), eps=1e-6, atol=1e-6, rtol=1e-5)


# ------------------------------------------------------------------------------------------------ bad input
POSITIVE = ["f_rev", "n_bunches", "n1", "n2", "beta_x1", "beta_y1", "beta_x2", "beta_y2", "sigma_z1", "sigma_z2"]


@pytest.mark.parametrize("name", POSITIVE + ["energy1", "energy2"])
@pytest.mark.parametrize("value", [0.0, -1.0])
def test_non_positive_fields_rejected(name, value):
    with pytest.raises(ValueError, match=name):
        IPConfig.lhc_default("x").replace(**{name: value})
    with pytest.raises(ValueError, match=rf"{name}.*(0, inf|above the proton mass)"):
        IPConfig.lhc_default("x").replace(**{name: torch.tensor([0.3, value], dtype=F64)})


@pytest.mark.parametrize("name", ["sep_x", "cross_y", "alpha_x2", "disp_py1", "energy1", "beta_y2", "dpp2"])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_fields_rejected(name, value):
    with pytest.raises(ValueError, match=name):
        IPConfig.lhc_default("x").replace(**{name: value})
    with pytest.raises(ValueError, match=name):
        IPConfig.lhc_default("x").replace(**{name: torch.tensor([1.0, value], dtype=F64)})


def test_energy_below_proton_mass_and_negative_dpp_rejected():
    with pytest.raises(ValueError, match=r"energy2.*proton mass"):
        IPConfig.lhc_default("x", energy2=0.9)
    with pytest.raises(ValueError, match="dpp1"):
        IPConfig.lhc_default("x", dpp1=-1e-4)


def test_unknown_field_lists_valid_names():
    with pytest.raises(ValueError, match=r"betax.*valid names: f_rev, n_bunches"):
        IPConfig.lhc_default("x").replace(betax=0.3)
    with pytest.raises(ValueError, match="crossing_plane"):
        IPConfig.lhc_default("z")
    with pytest.raises(TypeError):
        IPConfig(11245.0)  # keyword-only


@pytest.mark.parametrize("bad", [[0.0, 1e-6, 1e-6, 1e-6], [-1e-6, 1e-6, 1e-6, 1e-6], [math.nan, 1e-6, 1e-6, 1e-6]])
def test_bad_emittances_rejected(bad):
    with pytest.raises(ValueError, match="eps"):
        luminosity(IPConfig.lhc_default("x"), torch.tensor(bad, dtype=F64))


def test_bad_emittance_shape_rejected():
    with pytest.raises(ValueError, match=r"eps.*\(\.\.\., 4\)"):
        luminosity(IPConfig.lhc_default("x"), torch.ones(3, dtype=F64) * 1e-6)


def test_stack_and_replace_keep_types():
    cfgs = [IPConfig.lhc_default("x", sep_x=s) for s in (0.0, 1e-6, 2e-6)]
    st = IPConfig.stack(cfgs)
    assert st.batch_shape == (3,) and st.sep_x.dtype == F64 and st.f_rev.shape == (3,)
    assert IPConfig.lhc_default("x").batch_shape == ()
    assert IPConfig.lhc_default("x", n_bunches=torch.tensor([1, 2])).n_bunches.dtype == F64


# ------------------------------------------------------------------------------------------------ device
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_matches_cpu():
    configs, eps = random_configs(64, seed=3)
    stacked = IPConfig.stack(configs)
    cpu = luminosity(stacked, torch.from_numpy(eps))
    gpu = luminosity(stacked.to("cuda"), torch.from_numpy(eps).cuda())
    assert gpu.device.type == "cuda"
    assert torch.allclose(gpu.cpu(), cpu, rtol=1e-13, atol=0)
    e = torch.from_numpy(eps).cuda().requires_grad_(True)
    luminosity(stacked, e, device="cuda").sum().backward()
    assert e.grad is not None and torch.isfinite(e.grad).all()
