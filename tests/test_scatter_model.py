"""Scatter models: Highland formula, PDG sampling moments, tabulated quantile model and its HDF5 layout."""

import math

import h5py
import numpy as np
import pytest
import torch

from tomopt_lib.core import X0
from tomopt_lib.volume.scatter_model import AbsScatterModel, PDGScatterModel, beta_p, get_scatter_model, highland_theta0
from tomopt_lib.volume.scatter_table import TabulatedScatterModel, build_pdg_scatter_table, build_scatter_table

SQRT3_2 = math.sqrt(3) / 2


def _rms(t: torch.Tensor) -> float:
    return float(t.double().pow(2).mean().sqrt())


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(np.corrcoef(a.double().numpy(), b.double().numpy())[0, 1])


def _sample(model: AbsScatterModel, x0: float, length: float, mom: float, n: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return model.compute_scattering(
        x0=torch.full((n,), x0), step_length=torch.full((n,), length), mom=torch.full((n,), mom), generator=g
    )


def test_highland_values():
    x = torch.tensor([0.01 / X0["lead"]])
    expect = 0.0136 * math.sqrt(x.item()) * (1 + 0.038 * math.log(x.item()))
    assert highland_theta0(x, torch.tensor(1.0)).item() == pytest.approx(expect, rel=1e-5)
    assert highland_theta0(x, torch.tensor(2.0)).item() == pytest.approx(expect / 2, rel=1e-5)
    no_log = highland_theta0(x, torch.tensor(1.0), log_term=False).item()
    assert no_log == pytest.approx(0.0136 * math.sqrt(x.item()), rel=1e-5)
    # the log factor would be negative below x ~ 4e-12 and -inf at 0: clamped, theta0 >= 0 and finite
    tiny = highland_theta0(torch.tensor([0.0, 1e-14, 1e-11]), torch.tensor(1.0))
    assert torch.isfinite(tiny).all() and (tiny >= 0).all()
    assert tiny[0] == 0 and tiny[1] == 0 and tiny[2] > 0


@pytest.mark.parametrize(
    "material,length,mom", [("lead", 0.01, 1.0), ("iron", 0.001, 5.0), ("beryllium", 0.1, 2.0), ("water", 0.01, 0.5)]
)
def test_pdg_moments(material, length, mom):
    n = 200_000
    out = _sample(PDGScatterModel(), X0[material], length, mom, n)
    theta0 = highland_theta0(torch.tensor(length / X0[material]), beta_p(torch.tensor(mom))).item()
    for k in (1, 2):
        assert _rms(out[f"dtheta_{k}"]) == pytest.approx(theta0, rel=0.01)
        assert _rms(out[f"dx_{k}"]) == pytest.approx(length * theta0 / math.sqrt(3), rel=0.01)
        assert _corr(out[f"dtheta_{k}"], out[f"dx_{k}"]) == pytest.approx(SQRT3_2, abs=0.005)
    assert abs(_corr(out["dtheta_1"], out["dtheta_2"])) < 0.01  # the two transverse planes are independent
    assert abs(_corr(out["dx_1"], out["dtheta_2"])) < 0.01


def test_pdg_zero_and_shapes():
    model = PDGScatterModel()
    x0 = torch.tensor([float("inf"), X0["lead"], X0["lead"]])
    out = model.compute_scattering(x0=x0, step_length=torch.tensor([0.01, 0.0, 0.01]), mom=torch.full((3,), 3.0))
    for v in out.values():
        assert v.shape == (3,) and v.dtype == torch.float32
        assert v[0] == 0 and v[1] == 0 and v[2] != 0
    # scalars broadcast against (N,) inputs
    out = model.compute_scattering(x0=X0["iron"], step_length=0.01, mom=torch.full((5,), 3.0))
    assert out["dx_2"].shape == (5,)


def test_pdg_log_term_and_clamp():
    with_log = _rms(_sample(PDGScatterModel(), X0["lead"], 0.1, 1.0, 50_000)["dtheta_1"])
    without = _rms(_sample(PDGScatterModel(log_term=False), X0["lead"], 0.1, 1.0, 50_000)["dtheta_1"])
    assert with_log / without == pytest.approx(1 + 0.038 * math.log(0.1 / X0["lead"]), rel=1e-6)
    huge = _sample(PDGScatterModel(), X0["lead"], 1.0, 0.001, 1000)["dtheta_1"]
    assert huge.abs().max() <= math.pi / 2.2 + 1e-6


def test_reproducible_with_generator():
    a = _sample(PDGScatterModel(), 0.1, 0.01, 1.0, 100, seed=7)
    b = _sample(PDGScatterModel(), 0.1, 0.01, 1.0, 100, seed=7)
    c = _sample(PDGScatterModel(), 0.1, 0.01, 1.0, 100, seed=8)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["dtheta_1"], c["dtheta_1"])


@pytest.fixture(scope="module")
def pdg_table(tmp_path_factory):
    path = tmp_path_factory.mktemp("tables") / "pdg.h5"
    build_pdg_scatter_table(
        path,
        x0s=[X0["lead"], X0["iron"], X0["beryllium"]],
        mom_bins=[0.5, 2.0, 8.0, 32.0],
        deltaz=0.01,
        n_samples=20_000,
        generator=torch.Generator().manual_seed(3),
    )
    return path


@pytest.mark.parametrize("material,mom", [("lead", 1.0), ("iron", 4.0), ("beryllium", 16.0), ("iron", 1.0)])
def test_tabulated_roundtrip_matches_pdg(pdg_table, material, mom):
    model = TabulatedScatterModel(pdg_table)
    out = _sample(model, X0[material], 0.01, mom, 100_000, seed=11)
    theta0 = highland_theta0(torch.tensor(0.01 / X0[material]), torch.tensor(mom)).item()
    for k in (1, 2):
        assert _rms(out[f"dtheta_{k}"]) == pytest.approx(theta0, rel=0.03)
        assert _rms(out[f"dx_{k}"]) == pytest.approx(0.01 * theta0 / math.sqrt(3), rel=0.03)
        assert _corr(out[f"dtheta_{k}"], out[f"dx_{k}"]) == pytest.approx(SQRT3_2, abs=0.02)
        assert abs(float(out[f"dtheta_{k}"].mean())) < 0.02 * theta0  # random sign
    # inverse-CDF with interpolation: many distinct values, not just the 20k table entries
    assert out["dtheta_1"].abs().unique().numel() > 50_000


def test_tabulated_step_scaling(pdg_table):
    model = TabulatedScatterModel(pdg_table)
    assert model.exp_disp_model == 1.5 and model.deltaz == pytest.approx(0.01)
    one = _sample(model, X0["iron"], 0.01, 4.0, 50_000, seed=1)
    four = _sample(model, X0["iron"], 0.04, 4.0, 50_000, seed=1)  # same draws, scaled
    assert torch.allclose(four["dtheta_1"], 2.0 * one["dtheta_1"], rtol=1e-5)
    assert torch.allclose(four["dx_2"], 8.0 * one["dx_2"], rtol=1e-5, atol=1e-12)
    zero = model.compute_scattering(
        x0=torch.tensor([float("inf"), 0.1]), step_length=torch.tensor([0.01, 0.0]), mom=torch.ones(2)
    )
    assert all(bool((v == 0).all()) for v in zero.values())


def test_tabulated_rescale_momentum(pdg_table):
    """Bin (2, 8) GeV has p_ref = 4 GeV: with rescaling, p = 3 and p = 6 GeV scale as 1/(beta p), without they are
    equal."""
    plain, scaled = TabulatedScatterModel(pdg_table), TabulatedScatterModel(pdg_table, rescale_momentum=True)
    a, b = _sample(plain, X0["iron"], 0.01, 3.0, 1000, seed=2), _sample(plain, X0["iron"], 0.01, 6.0, 1000, seed=2)
    assert torch.equal(a["dtheta_1"], b["dtheta_1"])
    a, b = _sample(scaled, X0["iron"], 0.01, 3.0, 1000, seed=2), _sample(scaled, X0["iron"], 0.01, 6.0, 1000, seed=2)
    ratio = float(beta_p(torch.tensor(6.0)) / beta_p(torch.tensor(3.0)))
    assert torch.allclose(a["dtheta_1"], ratio * b["dtheta_1"], rtol=1e-5)
    assert torch.allclose(a["dx_1"], ratio * b["dx_1"], rtol=1e-5)


def test_tabulated_correlation_option(pdg_table):
    out = _sample(TabulatedScatterModel(pdg_table, correlation=0.0), X0["lead"], 0.01, 1.0, 50_000)
    assert abs(_corr(out["dtheta_1"], out["dx_1"])) < 0.02


def test_tabulated_file_layout_and_lookup(tmp_path):
    """Hand-written file: rows are constant tables, so the selected (material, momentum) row is visible."""
    n_mat, n_mom, n = 3, 2, 16
    dtheta = np.zeros((n_mat, n_mom, n), dtype=np.float32)
    for m in range(n_mat):
        for b in range(n_mom):
            dtheta[m, b] = 10 * (m + 1) + (b + 1)  # unsorted/constant rows are fine
    path = tmp_path / "hand.h5"
    with h5py.File(path, "w") as f:
        f["model/dtheta"] = dtheta
        f["model/dxy"] = -dtheta * 1e-3  # signs in the file are ignored
        f["meta_data/deltaz"] = 0.02
        f["meta_data/mom_bins"] = np.array([1.0, 10.0, 100.0])
        f["meta_data/x02id"] = np.array([[0.3, 2], [0.005, 0], [0.02, 1]])  # (X0, row), any key order
        f["meta_data/exp_disp_model"] = 1.85
    model = get_scatter_model(f"tabulated:{path}")
    assert isinstance(model, TabulatedScatterModel)
    assert model.x0_keys == pytest.approx([0.005, 0.02, 0.3]) and model.deltaz == pytest.approx(0.02)
    x0 = torch.tensor([0.0056, 0.0056, 0.018, 0.36, 0.36, 0.009, 0.011])
    mom = torch.tensor([0.5, 50.0, 5.0, 5.0, 1000.0, 5.0, 5.0])  # below / above the edges use the end bins
    out = model.compute_scattering(x0=x0, step_length=torch.full((7,), 0.02), mom=mom, generator=torch.Generator().manual_seed(0))
    # nearest X0 in log space: 0.009 -> 0.005 (ratio 1.8 < 2.22), 0.011 -> 0.02 (ratio 1.82 < 2.2)
    assert out["dtheta_1"].abs().tolist() == [11, 12, 21, 31, 32, 11, 21]
    assert torch.allclose(out["dx_2"].abs(), out["dtheta_2"].abs() * 1e-3)
    half = model.compute_scattering(x0=x0, step_length=torch.full((7,), 0.01), mom=mom)
    assert torch.allclose(half["dx_1"].abs(), out["dtheta_1"].abs() * 1e-3 * 0.5**1.85, rtol=1e-5)


def test_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match="scatter_model.*allowed"):
        get_scatter_model("geant")
    with pytest.raises(ValueError, match="scatter_model"):
        get_scatter_model("tabulated:")
    with pytest.raises(ValueError, match="path"):
        TabulatedScatterModel(tmp_path / "missing.h5")
    bad = tmp_path / "bad.h5"
    with h5py.File(bad, "w") as f:
        f["model/dtheta"] = np.ones((1, 1, 4), dtype=np.float32)
    with pytest.raises(ValueError, match="path"):
        TabulatedScatterModel(bad)
    s = np.ones((1, 2, 4))
    with pytest.raises(ValueError, match="mom_bins"):
        build_scatter_table(tmp_path / "t.h5", x0s=[0.1], mom_bins=[1, 2], samples_dtheta=s, samples_dxy=s, deltaz=0.01)
    with pytest.raises(ValueError, match="x0s"):
        build_scatter_table(tmp_path / "t.h5", x0s=[0.1, 0.2], mom_bins=[1, 2, 3], samples_dtheta=s, samples_dxy=s, deltaz=0.01)
    with pytest.raises(ValueError, match="deltaz"):
        build_scatter_table(tmp_path / "t.h5", x0s=[0.1], mom_bins=[1, 2, 3], samples_dtheta=s, samples_dxy=s, deltaz=0.0)


def test_get_scatter_model_resolution(pdg_table):
    assert isinstance(get_scatter_model("pdg"), PDGScatterModel)
    assert isinstance(get_scatter_model("PDG"), PDGScatterModel)
    inst = PDGScatterModel(log_term=False)
    assert get_scatter_model(inst) is inst
    tab = get_scatter_model(f"tabulated:{pdg_table}", device="cpu")
    assert isinstance(tab, TabulatedScatterModel) and tab.n_mat == 3 and tab.n_mom == 3


def test_highland_uses_the_muon_beta():
    """theta0 scales with 1 / (beta p): 6 % above the beta = 1 value at 0.3 GeV, equal to it with use_beta=False."""
    x0, length, mom, n = X0["iron"], 0.01, 0.3, 200_000
    with_beta = _rms(_sample(PDGScatterModel(), x0, length, mom, n)["dtheta_1"])
    no_beta = _rms(_sample(PDGScatterModel(use_beta=False), x0, length, mom, n)["dtheta_1"])
    beta = mom / math.sqrt(mom**2 + 0.1056583755**2)
    assert with_beta / no_beta == pytest.approx(1 / beta, rel=0.01)
    assert no_beta == pytest.approx(highland_theta0(torch.tensor(length / x0), torch.tensor(mom)).item(), rel=0.01)


def _tomopt_layout_table(path, *, json_in="attr"):
    """A table in TomOpt's layout: lower momentum edges only (n_mom values) and the material map as a JSON string."""
    import json

    n_mat, n_mom, n = 2, 3, 50
    rows = np.sort(np.abs(np.random.default_rng(0).normal(size=(n_mat, n_mom, n))), axis=-1).astype(np.float32)
    rows *= np.arange(1, n_mom + 1, dtype=np.float32)[None, :, None] * 1e-3  # bin k has width (k + 1) mrad
    mapping = json.dumps({str(X0["lead"]): 0, str(X0["iron"]): 1})
    with h5py.File(path, "w") as f:
        f.create_dataset("model/dtheta", data=rows)
        f.create_dataset("model/dxy", data=rows * 1e-3)
        md = f.create_group("meta_data")
        md.create_dataset("deltaz", data=0.01)
        md.create_dataset("mom_bins", data=np.array([1.0, 2.0, 4.0]))
        md.create_dataset("exp_disp_model", data=1.85)
        if json_in == "attr":
            md.attrs["x02id"] = mapping
        else:
            md.create_dataset("x02id", data=mapping)
    return path


@pytest.mark.parametrize("json_in", ["attr", "dataset"])
def test_tabulated_tomopt_layout_and_edges(tmp_path, json_in):
    """Lower-edge bins [1, 2), [2, 4), [4, inf); a momentum exactly on an edge uses the bin that starts there; the
    material map may be a JSON string (attribute or dataset)."""
    model = TabulatedScatterModel(_tomopt_layout_table(tmp_path / "t.h5", json_in=json_in))
    assert model.n_mom == 3 and sorted(model.x0_keys) == sorted([X0["lead"], X0["iron"]])
    rows = model.table_rows(torch.full((5,), X0["iron"]), torch.tensor([1.0, 1.999, 2.0, 4.0, 100.0]))
    assert rows.tolist() == [3, 3, 4, 5, 5]  # iron is row 1: flat index 1 * n_mom + bin


def test_pgeant_name_needs_a_table(tmp_path):
    with pytest.raises(ValueError, match="pgeant.*needs its table file"):
        get_scatter_model("pgeant")
    model = get_scatter_model(f"pgeant:{_tomopt_layout_table(tmp_path / 'p.h5')}")
    assert isinstance(model, TabulatedScatterModel)
