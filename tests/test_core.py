"""Material tables, mixture rule, class <-> X0 mappings and runtime helpers."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from tomopt_lib import core
from tomopt_lib.core import (
    DENSITIES,
    MUON_MASS,
    MUON_MASS2,
    X0,
    class_to_x0preds,
    material_x0,
    x0_from_mixture,
    x0targs_to_classtargs,
)
from tomopt_lib.runtime import DEFAULT_DTYPE, make_generator, resolve_device, seed_everything, set_threads

WALL = ["SiO2", "Al2O3", "Fe2O3", "MgO", "CaO", "Na2O", "K2O"]
WALL_FRACS = [56, 17, 11.2, 4.0, 4.2, 3.0, 4.6]
SOIL = ["SiO2", "soft tissue", "water", "air"]
SOIL_FRACS = [0.44, 0.6, 0.25, 0.25]


# ---------------------------------------------------------------- tables and constants
def test_material_tables():
    assert len(X0) == 23 and list(X0) == list(DENSITIES)
    # order matters: generators index list(X0)
    assert list(X0)[:9] == ["beryllium", "graphite", "silicon", "aluminium", "iron", "copper", "lead", "uranium", "air"]
    assert list(X0)[-3:] == ["steel", "hot liquid steel", "slag"]
    assert X0["lead"] == 0.005612 and X0["uranium"] == 3.166e-3 and X0["air"] == 303.9 and X0["beryllium"] == 0.3528
    assert DENSITIES["water"] == 1000.0 and DENSITIES["air"] == 1.205 and DENSITIES["steel"] == 7818.0
    assert all(v > 0 for v in X0.values()) and all(v > 0 for v in DENSITIES.values())
    # physics sanity: the mass radiation length X0*rho [kg/m^2] decreases with Z for the pure elements
    mass_x0 = [X0[m] * DENSITIES[m] for m in ["beryllium", "graphite", "aluminium", "iron", "copper", "lead", "uranium"]]
    assert all(a > b for a, b in zip(mass_x0, mass_x0[1:]))
    # water: 36.08 g/cm^2 (PDG)
    assert X0["water"] * DENSITIES["water"] == pytest.approx(360.8)


def test_constants():
    assert core.SCATTER_COEF_A == 0.0136 and core.SCATTER_COEF_B == 0.038
    assert MUON_MASS == pytest.approx(0.1056583755)
    assert MUON_MASS2 == pytest.approx(0.011163692313299002, rel=1e-12)


def test_material_x0():
    assert material_x0("iron") == 0.01757
    with pytest.raises(ValueError, match="allowed"):
        material_x0("unobtainium")


# ---------------------------------------------------------------- mixtures
def test_mixture_by_weight_hand_computation():
    # 30% lead, 70% water by mass
    rho = 1 / (0.3 / 11350 + 0.7 / 1000)
    x0rho = 1 / (0.3 / (0.005612 * 11350) + 0.7 / (0.3608 * 1000))
    out = x0_from_mixture([X0["lead"], X0["water"]], [DENSITIES["lead"], DENSITIES["water"]], weight_fracs=[0.3, 0.7])
    assert out["density"] == pytest.approx(rho, rel=1e-12)
    assert out["X0"] == pytest.approx(x0rho / rho, rel=1e-12)
    # unnormalised fractions are normalised
    out2 = x0_from_mixture([X0["lead"], X0["water"]], [DENSITIES["lead"], DENSITIES["water"]], weight_fracs=[3, 7])
    assert out2["X0"] == pytest.approx(out["X0"], rel=1e-12)


def test_mixture_by_volume_hand_computation():
    # 50/50 by volume iron/aluminium: mass fractions w_i = v_i rho_i / sum v rho
    m_fe, m_al = 0.5 * 7874.0, 0.5 * 2699.0
    w_fe, w_al = m_fe / (m_fe + m_al), m_al / (m_fe + m_al)
    out = x0_from_mixture([X0["iron"], X0["aluminium"]], [DENSITIES["iron"], DENSITIES["aluminium"]], volume_fracs=[0.5, 0.5])
    assert out["density"] == pytest.approx(0.5 * 7874.0 + 0.5 * 2699.0, rel=1e-12)  # volume-weighted density
    x0rho = 1 / (w_fe / (0.01757 * 7874.0) + w_al / (0.08897 * 2699.0))
    assert out["X0"] == pytest.approx(x0rho / out["density"], rel=1e-12)
    # the X0 of a mixture lies between its components'
    assert X0["iron"] < out["X0"] < X0["aluminium"]


def test_mixture_single_material_is_identity():
    out = x0_from_mixture([X0["lead"]], [DENSITIES["lead"]], weight_fracs=[1.0])
    assert out == pytest.approx({"X0": X0["lead"], "density": DENSITIES["lead"]})


def test_small_walls_values_are_volume_fractions():
    """The reference's wall X0 0.08022522418503258 m (and soil 0.2624... m) come out only with *volume* fractions."""
    x0s, rhos = [X0[m] for m in WALL], [DENSITIES[m] for m in WALL]
    by_vol = x0_from_mixture(x0s, rhos, volume_fracs=WALL_FRACS)
    assert by_vol["X0"] == pytest.approx(0.08022522418503258, rel=1e-12)
    by_weight = x0_from_mixture(x0s, rhos, weight_fracs=WALL_FRACS)
    assert by_weight["X0"] == pytest.approx(0.0927139, rel=1e-5)  # the oxide percentages read as mass fractions
    soil = x0_from_mixture([X0[m] for m in SOIL], [DENSITIES[m] for m in SOIL], volume_fracs=SOIL_FRACS)
    assert soil["X0"] == pytest.approx(0.2624248696430881, rel=1e-12)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(x0s=[0.1, 0.2], densities=[1.0], weight_fracs=[1, 1]),
        dict(x0s=[0.1], densities=[1.0]),
        dict(x0s=[0.1], densities=[1.0], weight_fracs=[1.0], volume_fracs=[1.0]),
        dict(x0s=[0.1, 0.2], densities=[1.0, 2.0], weight_fracs=[1.0, -1.0]),
        dict(x0s=[-0.1], densities=[1.0], weight_fracs=[1.0]),
        dict(x0s=[0.1, 0.2], densities=[1.0, 2.0], volume_fracs=[0.0, 0.0]),
    ],
)
def test_mixture_bad_inputs(kwargs):
    x0s, rhos = kwargs.pop("x0s"), kwargs.pop("densities")
    with pytest.raises(ValueError):
        x0_from_mixture(x0s, rhos, **kwargs)


# ---------------------------------------------------------------- class mappings
def test_class_to_x0preds():
    id2x0 = {0: X0["beryllium"], 1: X0["lead"], 2: X0["air"]}
    arr = np.array([[0, 1], [2, 1]])
    out = class_to_x0preds(arr, id2x0)
    np.testing.assert_array_equal(out, [[X0["beryllium"], X0["lead"]], [X0["air"], X0["lead"]]])


def test_x0targs_to_classtargs_nearest_in_log_space():
    x02id = {X0["lead"]: 0, X0["iron"]: 1, X0["beryllium"]: 2, X0["air"]: 3}
    targs = np.array([X0["lead"], 0.006, X0["iron"], 0.3, 100.0, X0["air"]])
    np.testing.assert_array_equal(x0targs_to_classtargs(targs, x02id), [0, 0, 1, 2, 3, 3])
    # round trip
    ids = np.array([[3, 2], [1, 0]])
    id2x0 = {v: k for k, v in x02id.items()}
    np.testing.assert_array_equal(x0targs_to_classtargs(class_to_x0preds(ids, id2x0), x02id), ids)


# ---------------------------------------------------------------- runtime helpers
def test_resolve_device():
    assert resolve_device(None) == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            resolve_device("cuda")
    assert DEFAULT_DTYPE == torch.float32


def test_make_generator_is_seedable():
    a = torch.rand(5, generator=make_generator(3))
    b = torch.rand(5, generator=make_generator(3))
    c = torch.rand(5, generator=make_generator(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert make_generator(None).device == torch.device("cpu")


def test_seed_everything():
    seed_everything(9)
    a = (random.random(), float(np.random.rand()), float(torch.rand(1)))
    seed_everything(9)
    assert a == (random.random(), float(np.random.rand()), float(torch.rand(1)))


def test_set_threads():
    old = torch.get_num_threads()
    try:
        assert set_threads(1) == 1 and torch.get_num_threads() == 1
        with pytest.raises(ValueError):
            set_threads(0)
    finally:
        torch.set_num_threads(old)
