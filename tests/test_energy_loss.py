"""Muon energy loss: Bethe + radiative stopping power and CSDA range vs PDG-format tables, and the stepping table."""

import math

import pytest
import torch

from tomopt_lib.core import DENSITIES, MUON_MASS, X0
from tomopt_lib.volume.energy_loss import (
    CSDA_T_CUT,
    MATERIAL_LOSS,
    STOP_KINETIC_ENERGY,
    csda_range,
    density_effect,
    ionisation_loss,
    muon_critical_energy,
    radiative_loss,
    sternheimer_peierls,
    stopping_power,
)
from tomopt_lib.volume.energy_loss_table import EnergyLossTable

# (p [MeV/c], total -dE/dx [MeV cm^2/g], CSDA range [g/cm^2]); iron and lead: PDG-format tables made by PUMAS v1.00,
# copper: the PDG muE_copper_Cu table.
REFERENCE = {
    "iron": [
        (4.945e02, 1.467, 2.471e02),
        (1.000e03, 1.566, 5.765e02),
        (2.103e03, 1.697, 1.248e03),
        (5.105e03, 1.853, 2.929e03),
        (1.011e04, 1.974, 5.535e03),
        (2.011e04, 2.112, 1.042e04),
        (5.011e04, 2.387, 2.373e04),
        (1.001e05, 2.778, 4.312e04),
    ],
    "lead": [
        (4.945e02, 1.152, 3.223e02),
        (1.000e03, 1.256, 7.368e02),
        (2.103e03, 1.386, 1.566e03),
        (5.105e03, 1.547, 3.599e03),
        (1.011e04, 1.690, 6.681e03),
        (2.011e04, 1.888, 1.227e04),
        (5.011e04, 2.391, 2.633e04),
        (1.001e05, 3.218, 4.431e04),
    ],
    "copper": [
        (4.945e02, 1.419, 2.558e02),
        (1.000e03, 1.517, 5.961e02),
        (2.103e03, 1.647, 1.289e03),
        (5.105e03, 1.804, 3.017e03),
        (1.011e04, 1.926, 5.690e03),
        (2.011e04, 2.067, 1.069e04),
        (5.011e04, 2.353, 2.424e04),
        (1.001e05, 2.765, 4.381e04),
    ],
}
CASES = [(m, p, s, r) for m, rows in REFERENCE.items() for p, s, r in rows]
CASE_IDS = [f"{m}-p{p / 1e3:.3g}GeV" for m, p, _, _ in CASES]


def test_material_table_matches_core() -> None:
    assert list(MATERIAL_LOSS) == list(X0)
    for name, mat in MATERIAL_LOSS.items():
        assert mat.x0_m == X0[name] and mat.density_kg_m3 == DENSITIES[name]
        assert 0.38 < mat.z_over_a < 0.56 and 60 < mat.mean_excitation_ev < 900
    with pytest.raises(TypeError):
        MATERIAL_LOSS["lead"] = MATERIAL_LOSS["iron"]  # type: ignore[index]


@pytest.mark.parametrize("material,p_mev,dedx_ref,range_ref", CASES, ids=CASE_IDS)
def test_stopping_power_and_range_vs_reference(material: str, p_mev: float, dedx_ref: float, range_ref: float) -> None:
    p = torch.tensor([p_mev / 1e3])
    dedx = float(stopping_power(p, material, mass=True))
    rng = float(csda_range(p, material, mass=True))
    assert dedx == pytest.approx(dedx_ref, rel=0.05), f"{material} p={p_mev} MeV: dE/dx {dedx:.4f} vs {dedx_ref}"
    assert rng == pytest.approx(range_ref, rel=0.05), f"{material} p={p_mev} MeV: range {rng:.1f} vs {range_ref}"


def test_iron_ionisation_matches_pdg_column() -> None:
    """PDG iron 'ionization' column (incl. e-bremsstrahlung) at T = 1, 10, 100 GeV, within 1 %."""
    ion = ionisation_loss(torch.tensor([1.101, 10.11, 100.1]), "iron", mass=True)
    torch.testing.assert_close(ion, torch.tensor([1.581, 1.942, 2.207], dtype=torch.float64), rtol=0.01, atol=0.0)


@pytest.mark.parametrize("material,ref", [("lead", 1.122), ("copper", 1.403)])
def test_minimum_ionisation(material: str, ref: float) -> None:
    p = torch.logspace(-1.5, 1.0, 2000)
    ion = ionisation_loss(p, material, mass=True)
    assert float(ion.min()) == pytest.approx(ref, rel=0.02)
    p_min = float(p[ion.argmin()])
    assert 2.5 < p_min / MUON_MASS < 4.5  # minimum ionisation at beta gamma ~ 3-3.5


@pytest.mark.parametrize("material,ref", [("iron", 347.0), ("lead", 141.0), ("copper", 317.0)])
def test_muon_critical_energy(material: str, ref: float) -> None:
    ec = muon_critical_energy(material)
    assert ec == pytest.approx(ref, rel=0.15)
    p = torch.tensor([math.sqrt(ec**2 - MUON_MASS**2)])
    assert float(ionisation_loss(p, material)) == pytest.approx(float(radiative_loss(p, material)), rel=1e-6)


def test_radiative_reproduces_copper_table_and_scales_with_x0() -> None:
    t_mev = torch.tensor([1e4, 1e5, 1e6])
    p = torch.sqrt((t_mev / 1e3) ** 2 + 2 * MUON_MASS * t_mev / 1e3)
    cu = radiative_loss(p, "copper", mass=True)
    table = torch.tensor([1.515e-02 + 1.585e-02 + 4.285e-03, 2.398e-01 + 3.320e-01 + 3.811e-02, 3.087 + 4.439 + 0.3823])
    torch.testing.assert_close(cu, table.double(), rtol=2e-3, atol=0.0)  # copper X0 12.867 vs reference 12.86 g/cm^2
    pb, al = radiative_loss(p, "lead", mass=True), radiative_loss(p, "aluminium", mass=True)
    assert bool((pb > 2 * cu).all()) and bool((al < 0.6 * cu).all())
    assert float(radiative_loss(torch.tensor([0.2]), "lead", mass=True)) < 1e-3  # negligible below 1 GeV


def test_units_linear_vs_mass() -> None:
    p = torch.tensor([0.5, 5.0, 500.0])
    for name in ("lead", "air", "water"):
        rho = DENSITIES[name]
        torch.testing.assert_close(stopping_power(p, name), stopping_power(p, name, mass=True) * rho * 1e-4)
        torch.testing.assert_close(csda_range(p, name), csda_range(p, name, mass=True) / (rho * 0.1))
    assert stopping_power(p, "lead").dtype == torch.float64 and stopping_power(p.reshape(3, 1), "lead").shape == (3, 1)
    assert float(csda_range(torch.tensor([0.0]), "iron")) == 0.0
    with pytest.raises(ValueError, match="unknown"):
        stopping_power(p, "unobtainium")


def test_sternheimer_peierls_recipe() -> None:
    """The recipe reproduces iron's tabulated Cbar from I and the plasma energy, and delta is continuous."""
    iron = MATERIAL_LOSS["iron"]
    params = sternheimer_peierls(iron.mean_excitation_ev, iron.z_over_a, iron.density_kg_m3)
    assert params.cbar == pytest.approx(4.2911, abs=2e-3)
    for x_edge in (params.x0, params.x1):
        x = torch.tensor([x_edge - 1e-9, x_edge + 1e-9], dtype=torch.float64)
        d = density_effect(x, params)
        assert abs(float(d[1] - d[0])) < 1e-6
    assert float(density_effect(torch.tensor([0.0], dtype=torch.float64), params)) == 0.0


def test_csda_range_is_integral_of_inverse_stopping_power() -> None:
    """dR/dT = 1/S: finite difference of the range vs the stopping power, and R(T_cut) = 0."""
    p = torch.tensor([3.0, 3.003], dtype=torch.float64)
    r = csda_range(p, "copper")
    e = torch.sqrt(p**2 + MUON_MASS**2)
    s_mid = stopping_power(torch.tensor([3.0015]), "copper")
    assert float((r[1] - r[0]) / (e[1] - e[0])) == pytest.approx(1.0 / float(s_mid), rel=1e-3)
    p_cut = math.sqrt(CSDA_T_CUT**2 + 2 * MUON_MASS * CSDA_T_CUT)
    assert float(csda_range(torch.tensor([p_cut * 0.999]), "copper")) == 0.0


@pytest.fixture(scope="module")
def table() -> EnergyLossTable:
    x0 = torch.tensor([X0["lead"], X0["iron"], math.inf, X0["air"], X0["lead"], 0.01, X0["water"]])
    return EnergyLossTable.from_x0(x0)


def test_table_rows_exact_materials_and_vacuum(table: EnergyLossTable) -> None:
    rows = table.rows_for(torch.tensor([[X0["iron"], math.inf], [X0["lead"] * (1 + 5e-4), X0["water"]]]))
    assert rows.dtype == torch.long and rows.shape == (2, 2)
    assert [table.labels[int(r)] for r in rows.reshape(-1)] == ["iron", "vacuum", "lead", "water"]
    p = torch.tensor([0.3, 3.0, 300.0], dtype=torch.float64)
    for name in ("iron", "lead", "air", "water"):
        row = table.rows_for(torch.tensor([X0[name]]))
        torch.testing.assert_close(table.dedx(p, row), stopping_power(p, name), rtol=1e-3, atol=0.0)
    assert bool((table.dedx(p, torch.zeros(3, dtype=torch.long)) == 0).all())
    with pytest.raises(ValueError, match="not in the table"):
        table.rows_for(torch.tensor([X0["copper"]]))


def test_table_interpolates_between_bracketing_materials(table: EnergyLossTable) -> None:
    row = table.rows_for(torch.tensor([0.01]))  # between lead (5.6 mm) and copper (14.4 mm)
    assert table.labels[int(row)] == "interp:lead|copper"
    p = torch.logspace(-1, 3, 9, dtype=torch.float64)
    s = table.dedx(p, row.expand(9))
    pb, cu = stopping_power(p, "lead"), stopping_power(p, "copper")
    lo, hi = torch.minimum(pb, cu), torch.maximum(pb, cu)
    assert bool((lo < hi).all())
    assert bool(((s >= lo * (1 - 1e-3)) & (s <= hi * (1 + 1e-3))).all())


def test_table_dedx_matches_analytic_at_random_momenta() -> None:
    gen = torch.Generator().manual_seed(7)
    tab = EnergyLossTable.from_x0(torch.tensor([X0["uranium"]]))
    p = torch.exp(torch.empty(500, dtype=torch.float64).uniform_(math.log(0.02), math.log(5e3), generator=gen))
    rows = torch.ones(500, dtype=torch.long)
    torch.testing.assert_close(tab.dedx(p, rows), stopping_power(p, "uranium"), rtol=2e-3, atol=0.0)


def test_table_with_densities_scales_mass_stopping_power() -> None:
    x0 = torch.tensor([X0["lead"], X0["iron"], 0.01])
    plain = EnergyLossTable.from_x0(x0)
    dense = EnergyLossTable.from_x0(x0, densities=torch.tensor([DENSITIES["lead"], 2 * DENSITIES["iron"], 9000.0]))
    p = torch.tensor([1.0, 50.0], dtype=torch.float64)
    r_pb, r_fe, r_mix = (dense.rows_for(torch.tensor([v])) for v in x0.tolist())
    torch.testing.assert_close(dense.dedx(p, r_pb), plain.dedx(p, plain.rows_for(torch.tensor([X0["lead"]]))))
    torch.testing.assert_close(dense.dedx(p, r_fe), 2 * stopping_power(p, "iron"), rtol=1e-3, atol=0.0)
    mass_mix = dense.dedx(p, r_mix) / (9000.0 * 1e-4)  # X0 rho = 9 g/cm^2: between lead (6.4) and copper (12.9)
    pb, cu = stopping_power(p, "lead", mass=True), stopping_power(p, "copper", mass=True)
    assert bool(((mass_mix > torch.minimum(pb, cu)) & (mass_mix < torch.maximum(pb, cu))).all())
    with pytest.raises(ValueError, match="different densities"):
        EnergyLossTable.from_x0(torch.tensor([0.01, 0.01]), densities=torch.tensor([1000.0, 2000.0]))


def test_step_small_step_matches_analytic(table: EnergyLossTable) -> None:
    p = torch.tensor([0.5, 5.0, 50.0, 500.0], dtype=torch.float64)
    rows = table.rows_for(torch.full((4,), X0["iron"]))
    length = torch.full((4,), 1e-3)
    p_new, stopped = table.step(p, rows, length)
    e, e_new = torch.sqrt(p**2 + MUON_MASS**2), torch.sqrt(p_new**2 + MUON_MASS**2)
    torch.testing.assert_close(e - e_new, stopping_power(p, "iron") * 1e-3, rtol=2e-3, atol=0.0)
    assert not bool(stopped.any())
    p_vac, stopped_vac = table.step(p, torch.zeros(4, dtype=torch.long), torch.full((4,), 10.0))
    torch.testing.assert_close(p_vac, p)
    assert not bool(stopped_vac.any())


def test_step_long_path_stops_slow_and_spares_fast_muons(table: EnergyLossTable) -> None:
    rows = table.rows_for(torch.full((2,), X0["lead"]))
    p_new, stopped = table.step(torch.tensor([0.3, 100.0], dtype=torch.float64), rows, torch.ones(2))
    assert stopped.tolist() == [True, False] and float(p_new[0]) == 0.0
    expected = 100.0 - float(stopping_power(torch.tensor([98.0]), "lead"))  # ~3.6 GeV lost in 1 m of lead
    assert float(p_new[1]) == pytest.approx(expected, rel=2e-3)
    assert 0.95 < float(p_new[1]) / 100.0 < 0.97


def test_many_steps_reproduce_csda_range() -> None:
    """A 2 GeV muon in iron, stepped in 5 mm (and 2 cm) steps, stops after csda_range within 2 %."""
    tab = EnergyLossTable.from_x0(torch.tensor([X0["iron"]]))
    expected = float(csda_range(torch.tensor([2.0]), "iron"))
    lengths = torch.tensor([5e-3, 2e-2], dtype=torch.float64)
    p = torch.full((2,), 2.0, dtype=torch.float64)
    rows = torch.ones(2, dtype=torch.long)
    travelled = torch.zeros(2, dtype=torch.float64)
    alive = torch.ones(2, dtype=torch.bool)
    for _ in range(1000):
        p, stopped = tab.step(p, rows, lengths)
        travelled += torch.where(alive, lengths, torch.zeros_like(lengths))
        alive &= ~stopped
        if not bool(alive.any()):
            break
    assert not bool(alive.any())
    # the muon stops somewhere inside its last step, i.e. between travelled - l and travelled
    for dist, length in zip(travelled.tolist(), lengths.tolist()):
        assert abs(dist - 0.5 * length - expected) <= 0.02 * expected + 0.5 * length, (dist, length, expected)


def test_step_float32_inputs(table: EnergyLossTable) -> None:
    x0_map = torch.tensor([X0["lead"], X0["iron"], math.inf], dtype=torch.float32)
    rows = table.rows_for(x0_map)
    assert [table.labels[int(r)] for r in rows] == ["lead", "iron", "vacuum"]
    p = torch.tensor([10.0, 10.0, 10.0], dtype=torch.float32)
    p_new, stopped = table.step(p, rows, torch.tensor(0.1, dtype=torch.float32))
    assert p_new.dtype == torch.float32 and not bool(stopped.any())
    assert float(p_new[0]) < float(p_new[1]) < float(p_new[2]) == pytest.approx(10.0)
    p_zero, stopped_zero = table.step(torch.tensor([STOP_KINETIC_ENERGY / 10]), rows[:1], torch.tensor([1e-3]))
    assert bool(stopped_zero.all()) and float(p_zero) == 0.0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA unavailable")
def test_table_on_cuda() -> None:
    tab = EnergyLossTable.from_x0(torch.tensor([X0["lead"], math.inf]), device="cuda")
    x0_map = torch.tensor([X0["lead"], math.inf, X0["lead"]], device="cuda")
    rows = tab.rows_for(x0_map)
    p = torch.tensor([0.3, 5.0, 100.0], device="cuda", dtype=torch.float32)
    p_new, stopped = tab.step(p, rows, torch.ones(3, device="cuda"))
    assert p_new.device.type == "cuda" and stopped.tolist() == [True, False, False]
    cpu = EnergyLossTable.from_x0(torch.tensor([X0["lead"], math.inf]))
    p_cpu, _ = cpu.step(p.cpu(), cpu.rows_for(x0_map.cpu()), torch.ones(3))
    torch.testing.assert_close(p_new.cpu(), p_cpu)
    torch.testing.assert_close(stopping_power(p, "lead").cpu(), stopping_power(p.cpu(), "lead"))
