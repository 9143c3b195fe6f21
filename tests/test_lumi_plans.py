"""Issue 13, item 3: every shift parameter, several target fractions, named presets in params.yaml, optional residuals
and Jacobians, the relative luminosity error per iteration."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch

from lumi_lib import SHIFT_PARAMETERS, IPConfig, apply_shifts, design_scan, invert, luminosity, preset_design, solve_shifts
from lumi_lib.design import n_scan_configs
from lumi_lib.inversion import PRESET_PLANS, PRESETS

NOM = 2.3e-6
F64 = torch.float64


def test_every_shift_parameter_reaches_its_target():
    """With dispersion and momentum spread in the base every parameter moves L; each solved shift changes L by exactly
    the target at the nominal emittances, for a decrease and an increase of 1 %."""
    base = IPConfig.lhc_default(
        "x", dpp1=1e-4, dpp2=1e-4, disp_x1=0.1, disp_x2=-0.1, disp_y1=0.05, disp_y2=0.02,
        alpha_x1=1.0, alpha_x2=1.0, alpha_y1=-1.0, alpha_y2=-1.0,
    )  # fmt: skip
    eps = torch.full((4,), NOM, dtype=F64)
    l0 = luminosity(base, eps)
    assert len(SHIFT_PARAMETERS) == 20
    for target in (-0.01, 0.01):
        for p in SHIFT_PARAMETERS:
            try:
                d = solve_shifts([base], [p], target=target)
            except ValueError as err:  # offsets and L-only parameters cannot raise L above the aligned, head-on value
                assert target > 0 and "not reachable" in str(err), (p, err)
                continue
            change = (luminosity(apply_shifts(base, [p], d[0]), eps) / l0 - 1.0).item()
            assert abs(change - target) <= 1e-12, (p, target, change, d)
            assert abs(float(d)) < 1.0, (p, target, d)  # moderate shifts: alpha* of order 1, beta* changes < 100 %


def test_shift_semantics():
    base = IPConfig.lhc_default("y", dpp1=1e-4, dpp2=2e-4)
    d = torch.tensor([0.1], dtype=F64)
    assert apply_shifts(base, ["beta_x"], d).beta_x2 == pytest.approx(0.33) and apply_shifts(base, ["beta_x"], d).beta_y1 == 0.30
    assert apply_shifts(base, ["beta_y2"], d).beta_y1 == 0.30 and apply_shifts(base, ["beta_y2"], d).beta_y2 == pytest.approx(
        0.33
    )
    assert apply_shifts(base, ["sigma_z"], d).sigma_z1 == pytest.approx(0.385)
    assert apply_shifts(base, ["intensity"], d).n2 == pytest.approx(1.54e11)
    assert apply_shifts(base, ["alpha_x"], d).alpha_x2 == pytest.approx(0.1)
    assert apply_shifts(base, ["dpp"], torch.tensor([-1e-4], dtype=F64)).dpp1 == 0.0  # the bracket keeps dpp >= 0
    with pytest.raises(ValueError, match=r"unknown shift parameter.*'betax'"):
        apply_shifts(base, ["betax"], d)


def test_several_targets_per_parameter():
    bases = [IPConfig.lhc_default("x"), IPConfig.lhc_default("y")]
    d = design_scan(bases, ["sep_x", "sep_y"], target=[-0.01, -0.03], n_shifts=2, product=True)
    assert d.n_configs == n_scan_configs(2, 2, 2, True, 2) == 2 * 5**2
    assert d.shifts.shape == (2, 2, 2) and d.targets == (-0.01, -0.03) and d.target == -0.01
    one = design_scan(bases, ["sep_x", "sep_y"], target=-0.03)
    torch.testing.assert_close(d.shifts[..., 1], one.shifts, rtol=0, atol=0)
    single = design_scan(bases, ["sep_x"], target=[-0.01, -0.02, -0.05])
    assert single.n_configs == 2 * (1 + 3)
    with pytest.raises(ValueError, match="duplicate"):
        design_scan(bases, ["sep_x"], target=[-0.01, -0.01])
    with pytest.raises(ValueError, match="n_shifts: the scan point beta_ratio_x"):
        design_scan(bases, ["beta_ratio_x"], target=-0.03, n_shifts=2)  # mirror -delta of a > 100 % beta change: invalid


def test_reference_xy12_preset_is_the_near_degenerate_design():
    d = preset_design("xy12_ref")
    assert d.n_configs == 5 and float(d.config.beta_x2[0]) == 0.3001
    assert set(PRESETS) == set(PRESET_PLANS)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        res = invert("xy12", torch.tensor([[2.0e-6, 2.5e-6, 2.6e-6, 2.1e-6]], dtype=F64), design=d, rel_noise=0.0)
    assert bool(res.converged[0]) and res.rel_error.abs().max().item() < 1e-6


def test_presets_are_selectable_in_params(tmp_path: Path) -> None:
    import yaml

    from config import ParamsError, load_params, parse_params
    from tasks.lumi import build_design

    root = Path(__file__).resolve().parents[1]
    raw = yaml.safe_load((root / "params.yaml").read_text())
    assert raw["lumi_scan"]["preset"] is None
    for name in PRESET_PLANS:
        raw["lumi_scan"]["preset"] = name
        raw["lumi_scan"]["plan"]["target"] = [-0.01, -0.02] if name == "xy_2ip" else -0.01
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
        scan = load_params(tmp_path / "params.yaml").lumi_scan
        assert scan.mode == PRESET_PLANS[name]["mode"]
        mine = build_design(scan.plan, eps_nominal=scan.eps_nominal)
        ref = preset_design(name, target=scan.plan.target)
        assert mine.n_configs == ref.n_configs == scan.plan.n_configs, name
        torch.testing.assert_close(mine.offsets, ref.offsets, rtol=1e-9, atol=0.0)
    with pytest.raises(ParamsError, match=r"lumi_scan\.preset = 'xy13'.*valid names: xy_1ip"):
        parse_params({"lumi_scan": {"preset": "xy13"}})
    with pytest.raises(ParamsError, match=r"lumi_scan\.plan\.target = \[-0.01, 0.0\]"):
        parse_params({"lumi_scan": {"plan": {"target": [-0.01, 0.0]}}})


def test_optional_residuals_and_jacobian_match_finite_differences():
    d = preset_design("xy_2ip")
    truth = torch.tensor([[2.1e-6, 2.5e-6], [2.4e-6, 2.2e-6]], dtype=F64)
    res = invert("xy", truth, design=d, rel_noise=1e-3, generator=torch.Generator().manual_seed(5), keep_jacobian=True)
    plain = invert("xy", truth, design=d, rel_noise=1e-3, generator=torch.Generator().manual_seed(5))
    assert plain.residual is None and plain.jacobian is None
    assert res.residual.shape == (2, 4) and res.jacobian.shape == (2, 4, 2)
    sigma = 1e-3 * res.measured
    pmat = torch.tensor([[1.0, 0, 1, 0], [0, 1, 0, 1]], dtype=F64)

    def r(x: torch.Tensor) -> torch.Tensor:
        return (luminosity(d.config, x[:, None, :] @ pmat) - res.measured) / sigma

    torch.testing.assert_close(res.residual, r(res.estimate), rtol=1e-9, atol=1e-9)
    h = 1e-12
    for k in range(2):
        e = torch.zeros(2, dtype=F64)
        e[k] = h
        fd = (r(res.estimate + e) - r(res.estimate - e)) / (2 * h)
        torch.testing.assert_close(res.jacobian[..., k], fd, rtol=1e-5, atol=1e-3)


def test_landscape_reports_the_relative_luminosity_error_per_iteration(tmp_path: Path) -> None:
    from config import LumiReportParams
    from tasks.lumi_report import landscape_case, render_iteration_plot

    rep = LumiReportParams(landscape_grid=8)
    m = landscape_case.fn("xy", str(tmp_path / "pen.png"), rep)
    h = m["rel_lumi_error"]
    assert len(h) == m["n_path_points"] and h[0] > 1e-4 and h[-1] < 1e-12  # noise-free: down to round-off
    out = render_iteration_plot.fn({"xy": m}, str(tmp_path / "it.png"))
    assert Path(out).read_bytes()[:4] == b"\x89PNG"
