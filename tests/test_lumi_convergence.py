"""Honest convergence of the batched solver (issue 13, item 1), noise-aware identifiability warnings (item 2):
seeded, small problems checked against ``scipy.optimize.least_squares`` and analytic optima."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from scipy.optimize import least_squares

from lumi_lib import STATUS, IPConfig, design_scan, invert, invert_measured, luminosity, measure, preset_design, solve_lm

NOM = 2.3e-6
F64 = torch.float64


def draws(gen: torch.Generator, b: int, k: int) -> torch.Tensor:
    return NOM * (0.8 + 0.4 * torch.rand(b, k, dtype=F64, generator=gen))


@pytest.fixture(scope="module")
def near_degenerate():
    """The reference README's xy12 setup: 1 IP (crossing x), beam-2 beta* = beta1* + 0.1 mm, the base plus one
    shift of each of sep_x, sep_y, cross_x, cross_y: 5 configurations for 4 unknowns (cond(J) ~ 6e6)."""
    base = IPConfig.lhc_default("x", beta_x2=0.3001, beta_y2=0.3001)
    return design_scan([base], ["sep_x", "sep_y", "cross_x", "cross_y"])


def _quiet(fn, *args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return fn(*args, **kw)


# ------------------------------------------------------------------------------------------------ convergence means the optimum
@pytest.mark.parametrize("bounds", [(1.5e-6, 3e-6), (1.84e-6, 2.76e-6)])
def test_near_degenerate_noise_free_recovers_truth_and_never_lies(near_degenerate, bounds):
    g = torch.Generator().manual_seed(11)
    truth = draws(g, 240, 4)
    res = _quiet(invert, "xy12", truth, design=near_degenerate, rel_noise=0.0, lower=bounds[0], upper=bounds[1])
    err = res.rel_error.abs().amax(dim=1)
    pull = ((res.estimate - res.truth) / res.std).abs().amax(dim=1)
    assert not bool(((err > 1e-6) & res.converged).any()), "a wrong answer was flagged converged"
    assert not bool(((pull > 5) & res.converged).any())
    assert (err <= 1e-6).double().mean().item() >= 0.995
    assert bool((res.converged == (res.status >= 0)).all()) and set(res.status.tolist()) <= set(STATUS)
    assert not bool((res.converged & res.at_bound).any()), "an optimum on a bound is never 'converged'"


def test_first_solve_alone_never_calls_a_wrong_answer_converged(near_degenerate):
    g = torch.Generator().manual_seed(12)
    truth = draws(g, 240, 4)
    res = _quiet(
        invert, "xy12", truth, design=near_degenerate, rel_noise=0.0, lower=1.84e-6, upper=2.76e-6, restarts=False, polish=False
    )
    err = res.rel_error.abs().amax(dim=1)
    assert bool((~res.converged).any()), "this design has hard cases (they exercise the recovery below)"
    assert not bool(((err > 1e-6) & res.converged).any())
    assert not bool(res.recovered.any())


def test_scipy_polish_alone_recovers_the_hard_cases(near_degenerate):
    g = torch.Generator().manual_seed(12)
    truth = draws(g, 240, 4)
    kw = dict(design=near_degenerate, rel_noise=0.0, lower=1.84e-6, upper=2.76e-6, restarts=False)
    first = _quiet(invert, "xy12", truth, polish=False, **kw)
    hard = (~first.converged).nonzero().squeeze(1)[:6]
    assert hard.numel() >= 3
    res = _quiet(invert, "xy12", truth[hard], polish=True, **kw)
    assert bool(res.converged.all()) and bool(res.recovered.all())
    assert res.rel_error.abs().max().item() <= 1e-6


def test_iteration_limit_is_never_converged(near_degenerate):
    g = torch.Generator().manual_seed(13)
    res = _quiet(invert, "xy12", draws(g, 32, 4), design=near_degenerate, rel_noise=0.0, max_iter=2, restarts=False, polish=False)
    assert bool((res.status == -1).any())
    assert not bool(res.converged[res.status == -1].any())
    err = res.rel_error.abs().amax(dim=1)
    assert not bool(((err > 1e-6) & res.converged).any())


def test_curved_valley_analytic_optimum():
    """Rosenbrock as least squares, r = (10 (x2 - x1^2), 1 - x1): the optimum (1, 1) from (-1.2, 1)."""

    def predict(x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        x1, x2 = x[..., 0], x[..., 1]
        f = torch.stack([10.0 * (x2 - x1 * x1), -x1], dim=-1)
        return torch.diagonal(f, dim1=-2, dim2=-1) if x.shape[-2] == 2 else f[..., 0, :]

    x0 = torch.tensor([[-1.2, 1.0]], dtype=F64)
    target = torch.tensor([[0.0, -1.0]], dtype=F64)
    sigma = torch.ones(1, 2, dtype=F64)
    res = solve_lm(predict, x0, target=target, sigma=sigma, scale=1.0, max_iter=200)
    assert bool(res.converged[0]) and not bool(res.at_bound[0])
    torch.testing.assert_close(res.x[0], torch.ones(2, dtype=F64), rtol=0, atol=1e-10)
    short = solve_lm(predict, x0, target=target, sigma=sigma, scale=1.0, max_iter=3, restarts=False, polish=False)
    assert not bool(short.converged[0]) and int(short.status[0]) == -1


def test_optimum_on_a_bound_is_flagged():
    d = preset_design("xy_2ip")
    truth = torch.tensor([[2.7e-6, 2.3e-6]], dtype=F64)
    res = _quiet(invert, "xy", truth, design=d, rel_noise=0.0, lower=2.0e-6, upper=2.5e-6)
    assert res.estimate[0, 0].item() == 2.5e-6
    assert bool(res.at_bound[0]) and not bool(res.converged[0]) and int(res.status[0]) == -5


def test_easy_problems_pay_nothing_for_the_recovery(gen):
    d = preset_design("xy_2ip")
    truth = draws(gen, 16, 2)
    meas = measure(d.config, truth[:, [0, 1, 0, 1]], rel_noise=1e-3, generator=gen)
    on = invert_measured("xy", meas, design=d, rel_noise=1e-3, truth=truth)
    off = invert_measured("xy", meas, design=d, rel_noise=1e-3, truth=truth, restarts=False, polish=False)
    assert bool(on.converged.all()) and not bool(on.recovered.any())
    assert torch.equal(on.estimate, off.estimate) and torch.equal(on.iterations, off.iterations)
    assert int(on.iterations.max()) <= 8


# ------------------------------------------------------------------------------------------------ against scipy
def _scipy_fit(cfg: IPConfig, pmat: torch.Tensor, meas: torch.Tensor, rel: float, lo: float, hi: float) -> np.ndarray:
    """scipy.optimize.least_squares (trf, tight tolerances) on the same weighted, scaled problem, Jacobian by autograd."""
    sigma = rel * meas

    def fun_t(u: torch.Tensor) -> torch.Tensor:
        return (luminosity(cfg, (u * NOM)[None] @ pmat) - meas) / sigma

    def fun(u: np.ndarray) -> np.ndarray:
        return fun_t(torch.from_numpy(u)).numpy()

    def jac(u: np.ndarray) -> np.ndarray:
        return torch.autograd.functional.jacobian(fun_t, torch.from_numpy(u)).numpy()

    k = pmat.shape[0]
    sol = least_squares(
        fun, np.ones(k), jac=jac, bounds=(lo / NOM, hi / NOM), method="trf", xtol=1e-15, ftol=1e-15, gtol=1e-15, max_nfev=400
    )
    return sol.x * NOM


@pytest.mark.parametrize(
    "case",
    [
        ("noisy_xy_2ip", "xy", 1e-3, 1e-7),
        ("noisy_xy12", "xy12", 1e-3, 1e-6),
        ("near_degenerate_noise_free", "xy12", 0.0, 1e-7),
    ],
)
def test_matches_scipy_least_squares(case, near_degenerate):
    name, mode, noise, tol = case
    from lumi_lib import mode_matrix

    d = near_degenerate if name.startswith("near") else preset_design("xy_2ip" if mode == "xy" else "xy12")
    _, pmat = mode_matrix(mode)
    g = torch.Generator().manual_seed(2024)
    truth = draws(g, 6, pmat.shape[0])
    meas = measure(d.config, truth @ pmat, rel_noise=noise, generator=g)
    lo, hi = 1.5e-6, 3e-6
    ours = _quiet(invert_measured, mode, meas, design=d, rel_noise=noise, truth=truth, lower=lo, upper=hi)
    rel = noise if noise > 0 else 1e-3
    for i in range(truth.shape[0]):
        ref = _scipy_fit(d.config, pmat, meas[i], rel, lo, hi)
        if ours.converged[i]:
            np.testing.assert_allclose(ours.estimate[i].numpy(), ref, rtol=tol, atol=0)
        else:  # only an optimum on a bound may end unconverged here, and scipy must agree with it
            assert bool(ours.at_bound[i]), (name, i, int(ours.status[i]))
            np.testing.assert_allclose(ours.estimate[i].numpy(), ref, rtol=1e-6, atol=0)


# ------------------------------------------------------------------------------------------------ item 2: identifiability
def test_noise_limited_plan_warns_from_the_covariance(gen):
    """xy with one IP at 0.1 % noise: the Jacobian is fine (cond ~ 1e4 < 1e8) but one emittance is undetermined."""
    d = preset_design("xy_1ip")
    with pytest.warns(UserWarning, match=r"does not determine the unknowns \(eps_x, eps_y\) to 10 % at 0.1 % noise") as rec:
        res = invert("xy", draws(gen, 8, 2), design=d, rel_noise=1e-3, generator=gen, lower=1.5e-6, upper=3e-6)
    assert bool((res.cond < 1e8).all())
    assert res.relative_uncertainty.amax().item() > 1.0
    assert "least-determined combination" in str(rec[0].message)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        invert(
            "xy",
            draws(gen, 8, 2),
            design=d,
            rel_noise=1e-3,
            generator=gen,
            lower=1.5e-6,
            upper=3e-6,
            rel_uncertainty_warn=math.inf,
        )
        invert("xy", draws(gen, 8, 2), design=preset_design("xy_2ip"), rel_noise=1e-3, generator=gen)  # 2 IPs: ~0.1 %


def test_near_degenerate_design_warns_and_names_the_combination(near_degenerate, gen):
    with pytest.warns(UserWarning, match="eps_x1") as rec:
        res = invert("xy12", draws(gen, 4, 4), design=near_degenerate, rel_noise=0.0)
    msg = str(rec[0].message)
    assert "nominal 0.1 % weighting of noise-free data" in msg and "least-determined combination is" in msg
    assert res.relative_uncertainty.amax().item() > 100.0
    assert res.identifiability_warning(1e8) is None  # the condition number alone (~6e6) says nothing
    assert res.identifiability_warning(1e8, 0.1) == msg


def test_exactly_degenerate_plan_names_the_undetermined_combination(gen):
    with pytest.warns(UserWarning, match=r"cannot separate.*only .*eps_1 \+ .*eps_2 is measurable"):
        res = invert("12", draws(gen, 3, 2), design=preset_design("12_equal"), rel_noise=0.0)
    assert not bool(res.converged.any()) and bool((res.status == -3).all())  # no unique optimum: never "converged"


def test_scan_tables_carry_the_full_warning(tmp_path):
    from conftest import tiny_params

    from config import parse_params
    from tasks.lumi import chunk_plan, merge_scan, run_scan_chunk, scan_shifts

    raw = tiny_params()
    plan = {**raw["lumi_scan"]["plan"], "bases": [{"crossing_plane": "y"}]}
    cfg = parse_params(tiny_params(lumi_scan={"mode": "12", "rel_noise": 0.0, "plan": plan, "n_inversions": 6})).lumi_scan
    shifts = scan_shifts(cfg.plan, eps_nominal=cfg.eps_nominal)
    parts = [
        run_scan_chunk.fn(cfg, c, s, n, str(tmp_path / f"p{c}.parquet"), shifts=shifts)
        for c, s, n in chunk_plan(6, cfg.chunk_size)
    ]
    summary = merge_scan.fn(parts, str(tmp_path / "scan.parquet"), cfg)
    for text in [summary["warning"], *(p["warning"] for p in parts)]:
        assert "cannot separate" in text and "eps_1" in text and "is not determined" in text


def test_rel_uncertainty_threshold_is_a_checked_config_key():
    from config import ParamsError, parse_params

    assert parse_params({}).lumi_scan.rel_uncertainty_warn == 0.10
    for bad in (0.0, -1.0, "x"):
        with pytest.raises(ParamsError, match=r"lumi_scan\.rel_uncertainty_warn"):
            parse_params({"lumi_scan": {"rel_uncertainty_warn": bad}})
