"""Inversion tests: shift design, measurements, batched LM solver and the reference's modes (seeded, fast)."""

import warnings

import pytest
import torch

from lumi_lib import (
    IPConfig,
    apply_shifts,
    design_scan,
    invert,
    invert_measured,
    luminosity,
    measure,
    penalty_landscape,
    preset_design,
    solve_lm,
    solve_shifts,
)

NOM = 2.3e-6


def draws(gen: torch.Generator, b: int, k: int) -> torch.Tensor:
    """Uniform true emittances in 2.3e-6 +- 20 %."""
    return NOM * (0.8 + 0.4 * torch.rand(b, k, dtype=torch.float64, generator=gen))


@pytest.fixture(scope="module")
def designs():
    return {name: preset_design(name) for name in ("xy_1ip", "xy_2ip", "12_equal", "12", "xy12")}


def test_noise_free_xy_two_ips_recovers_truth(designs, gen):
    truth = draws(gen, 16, 2)
    res = invert("xy", truth, design=designs["xy_2ip"], rel_noise=0.0)
    assert bool(res.converged.all())
    assert res.rel_error.abs().max().item() <= 1e-12
    assert res.eps.shape == (16, 4) and torch.equal(res.eps[:, 0], res.eps[:, 2])


def test_noise_free_xy_one_ip_with_reference_bounds(designs, gen):
    res = invert("xy", draws(gen, 8, 2), design=designs["xy_1ip"], rel_noise=0.0, lower=1.5e-6, upper=3e-6)
    assert res.rel_error.abs().max().item() <= 1e-10  # cond ~ 1e4: one IP barely separates x and y


def test_noise_free_xy12_recovers_truth(designs, gen):
    res = invert("xy12", draws(gen, 8, 4), design=designs["xy12"], rel_noise=0.0)
    assert bool(res.converged.all())
    assert res.rel_error.abs().max().item() <= 1e-9


def test_noisy_two_ip_xy_errors_of_order_1e3(designs, gen):
    res = invert("xy", draws(gen, 64, 2), design=designs["xy_2ip"], rel_noise=1e-3, generator=gen)
    err = res.rel_error.abs()
    assert bool(res.converged.all())
    assert 2e-4 < err.mean().item() < 3e-3 and err.max().item() < 1e-2
    # the covariance describes the scatter: predicted relative std ~ observed rms error
    ratio = res.rel_error.pow(2).mean(0).sqrt() / (res.std / res.truth).mean(0)
    assert bool(((ratio > 0.6) & (ratio < 1.6)).all())


def test_degenerate_12_plan_is_flagged(designs, gen):
    with pytest.warns(UserWarning, match=r"only .*eps_1 \+ .*eps_2 is measurable"):
        res = invert("12", draws(gen, 4, 2), design=designs["12_equal"], rel_noise=0.0)
    assert bool((res.cond > 1e12).all())
    est_sum, true_sum = res.estimate.sum(1), res.truth.sum(1)
    torch.testing.assert_close(est_sum, true_sum, rtol=1e-10, atol=0.0)  # the measurable combination is right
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ok = invert("12", draws(gen, 4, 2), design=designs["12"], rel_noise=0.0)
    assert bool((ok.cond < 1e3).all()) and ok.rel_error.abs().max().item() < 1e-10


def test_batched_equals_one_by_one(designs, gen):
    truth = draws(gen, 6, 4)
    meas = measure(designs["xy12"].config, truth, rel_noise=1e-3, generator=gen)
    batched = invert_measured("xy12", meas, design=designs["xy12"], rel_noise=1e-3, chunk_size=6)
    for i in range(6):
        one = invert_measured("xy12", meas[i : i + 1], design=designs["xy12"], rel_noise=1e-3)
        torch.testing.assert_close(one.estimate[0], batched.estimate[i], rtol=1e-12, atol=0.0)
        torch.testing.assert_close(one.cov[0], batched.cov[i], rtol=1e-9, atol=0.0)
        assert int(one.iterations[0]) == int(batched.iterations[i])


def test_last_example_design_and_one_noise_free_inversion(gen):
    d = preset_design("xy12_last")
    assert d.n_configs == 4 * 7**4 == 9604
    assert d.config.batch_shape == (9604,) and len(d.labels) == 9604
    res = invert("xy12", draws(gen, 1, 4), design=d, rel_noise=0.0)
    assert res.rel_error.abs().max().item() <= 1e-9


@pytest.mark.parametrize("target", [-0.01, -0.05])
def test_solved_shift_changes_l_by_target_at_nominal(target):
    bx, by = IPConfig.lhc_default("x"), IPConfig.lhc_default("y")
    bases = [bx, by.replace(beta_x2=0.24, beta_y2=0.24)]
    params = ["sep_x", "sep_y", "cross_x", "cross_y", "beta_ratio_x", "beta_ratio_y"]
    shifts = solve_shifts(bases, params, target=target)
    eps = torch.full((4,), NOM, dtype=torch.float64)
    for i, base in enumerate(bases):
        for j, p in enumerate(params):
            change = luminosity(apply_shifts(base, [p], shifts[i, j : j + 1]), eps) / luminosity(base, eps) - 1
            assert abs(change.item() - target) <= 1e-12, (i, p)
    # reference value (solved on the truth, 1st seed-42 draw): sep_x 8.554e-6 m on the crossing-x IP
    if target == -0.01:
        assert shifts[0, 0].item() == pytest.approx(8.55e-6, rel=1e-2)


def test_design_layouts():
    by = IPConfig.lhc_default("y")
    one = design_scan([by], ["sep_x"])
    assert one.n_configs == 2 and one.offsets[0].item() == 0.0
    prod = design_scan([by, IPConfig.lhc_default("x")], ["sep_x", "cross_y"], n_shifts=2, product=True)
    assert prod.n_configs == 2 * 3**2 and prod.base_index.tolist() == [0] * 9 + [1] * 9
    odd = design_scan([by], ["sep_x"], n_shifts=3)  # linspace(-d, d, 3) already holds 0
    assert odd.n_configs == 3


def test_measurements_seeded_and_noise_level(designs):
    cfg, eps = designs["12"].config, torch.full((200, 4), NOM, dtype=torch.float64)
    a = measure(cfg, eps, generator=torch.Generator().manual_seed(7))
    b = measure(cfg, eps, generator=torch.Generator().manual_seed(7))
    clean = measure(cfg, eps, rel_noise=0.0)
    assert torch.equal(a, b)
    assert (a / clean - 1).std().item() == pytest.approx(1e-3, rel=0.05)


def test_penalty_landscape_minimum_at_truth(designs):
    truth = torch.tensor([[2.1e-6, 2.5e-6]], dtype=torch.float64)
    d = designs["xy_2ip"]
    meas = measure(d.config, truth[:, [0, 1, 0, 1]], rel_noise=0.0)
    grid_a = torch.linspace(1.9e-6, 2.3e-6, 5, dtype=torch.float64)  # holds 2.1e-6
    grid_b = torch.linspace(2.3e-6, 2.7e-6, 5, dtype=torch.float64)  # holds 2.5e-6
    pen = penalty_landscape("xy", meas[0], design=d, grid_a=grid_a, grid_b=grid_b, rel_noise=0.0)
    assert pen.shape == (5, 5) and pen[2, 2].item() < 1e-9 and pen.argmin().item() == 12


def test_solver_path_and_bounds(designs, gen):
    res = invert("xy", draws(gen, 3, 2), design=designs["xy_2ip"], rel_noise=1e-3, generator=gen, record_path=True)
    assert res.path.shape[1:] == (3, 2) and torch.equal(res.path[-1], res.estimate)
    assert bool((res.path[0] == NOM).all())
    tight = invert(
        "xy",
        torch.tensor([[2.7e-6, 2.3e-6]], dtype=torch.float64),
        design=designs["xy_2ip"],
        rel_noise=0.0,
        lower=2.0e-6,
        upper=2.5e-6,
    )
    assert tight.estimate[0, 0].item() == 2.5e-6  # stops on the active bound


def test_bad_input_errors(designs, gen):
    d = designs["xy_2ip"]
    with pytest.raises(ValueError, match="true_eps"):
        invert("xy", torch.tensor([[2e-6, 0.0]], dtype=torch.float64), design=d)
    with pytest.raises(ValueError, match="true_eps"):
        invert("xy", torch.tensor([[2e-6, -1e-6]], dtype=torch.float64), design=d)
    with pytest.raises(ValueError, match="bounds do not contain the start"):
        invert("xy", draws(gen, 2, 2), design=d, rel_noise=0.0, lower=2.4e-6)
    with pytest.raises(ValueError, match="x0"):
        invert("xy", draws(gen, 2, 2), design=d, rel_noise=0.0, x0=-1.0)
    with pytest.raises(ValueError, match=r"unknown shift parameter.*'mu0x'.*valid names: sep_x, sep_y, cross_x"):
        design_scan([IPConfig.lhc_default("y")], ["mu0x"])
    meas = measure(d.config, torch.full((2, 4), NOM, dtype=torch.float64), rel_noise=0.0)
    meas[1, 2] = float("nan")
    with pytest.raises(ValueError, match="measured: 1 NaN"):
        invert_measured("xy", meas, design=d)
    with pytest.raises(ValueError, match="mode"):
        invert("xz", draws(gen, 1, 2), design=d)
    with pytest.raises(ValueError, match="preset"):
        preset_design("nope")
    with pytest.raises(ValueError, match="target"):
        solve_shifts([IPConfig.lhc_default("y")], ["sep_x"], target=+0.01)  # an offset can only lower L
    with pytest.raises(ValueError, match="sigma"):
        solve_lm(
            lambda x, rows: x[..., 0].expand(-1, 2),
            torch.ones(1, 1, dtype=torch.float64),
            target=torch.ones(1, 2, dtype=torch.float64),
            sigma=torch.zeros(1, 2, dtype=torch.float64),
        )


def test_design_labels_are_formatted_on_access() -> None:
    from lumi_lib.design import ScanLabels

    d = preset_design("xy12_last")
    labels = d.labels
    assert isinstance(labels, ScanLabels) and len(labels) == d.n_configs == 9604
    assert labels[0] == "ip0:sep_x=+0,sep_y=+0,cross_x=+0,cross_y=+0"
    assert labels[-1] == labels[9603] and labels[-1].startswith("ip3:")
    off = d.offsets[1].tolist()
    assert labels[1] == "ip0:" + ",".join(f"{n}={v:+.4g}" for n, v in zip(d.parameters, off))
    assert labels[:2] == (labels[0], labels[1]) and list(labels)[5] == labels[5]
    with pytest.raises(IndexError):
        labels[9604]


def test_broadcast_shapes_matches_torch() -> None:
    import torch

    from lumi_lib.config import broadcast_shapes

    for shapes in [((3, 1), (1, 4)), ((5,), (2, 1, 5), ()), ((),)]:
        assert broadcast_shapes(*shapes) == torch.broadcast_shapes(*shapes)
    with pytest.raises(ValueError):
        broadcast_shapes((3,), (4,))
