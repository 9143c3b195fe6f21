"""``tomopt_lib.checks.check_number``: the one scalar check of the cores' constructors (issue 10, item 2)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tomopt_lib.checks import check_number


@pytest.mark.parametrize(
    ("value", "kwargs", "expected"),
    [
        (1.5, {"low": 0, "low_open": True}, 1.5),
        (0, {"low": 0}, 0.0),
        (3, {"low": 0, "low_open": True, "high": 3}, 3.0),
        (torch.tensor([2.0]), {"low": 0}, 2.0),
        (np.int64(4), {"low": 1, "integer": True}, 4.0),
        (-1e300, {}, -1e300),
    ],
)
def test_accepted(value: object, kwargs: dict, expected: float) -> None:
    assert check_number("x", value, **kwargs) == expected


@pytest.mark.parametrize(
    ("value", "kwargs", "message"),
    [
        (0.0, {"low": 0, "low_open": True, "unit": "m"}, "x must be a finite number > 0 m, got 0.0"),
        (-0.1, {"low": 0}, "x must be a finite number >= 0, got -0.1"),
        (math.nan, {"low": 0}, "x must be a finite number >= 0, got nan"),
        (math.inf, {}, "x must be a finite number, got inf"),
        (3.5, {"low": 0, "low_open": True, "high": 3}, "x must be a finite number > 0 and <= 3, got 3.5"),
        (3, {"high": 3, "high_open": True}, "x must be a finite number < 3, got 3"),
        (2.0, {"low": 1, "integer": True}, "x must be an integer >= 1, got 2.0"),
        (0, {"low": 1, "integer": True}, "x must be an integer >= 1, got 0"),
        (True, {"low": 0}, "x must be a finite number >= 0, got True"),
        ("1", {}, "x must be a finite number, got '1'"),
        (torch.ones(2), {}, "x must be a finite number, got tensor([1., 1.])"),
        (None, {}, "x must be a finite number, got None"),
    ],
)
def test_refused_with_one_message(value: object, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError) as err:
        check_number("x", value, **kwargs)
    assert str(err.value) == message


def test_the_cores_use_it() -> None:
    """Constructors of panels, volumes, losses and the wrapper's counts report through it (same wording)."""
    from tomopt_lib.optimisation.loss.loss import VoxelLogX0Loss
    from tomopt_lib.optimisation.wrapper.utils import check_int
    from tomopt_lib.runtime import set_threads

    with pytest.raises(ValueError, match=r"^min_x0 must be a finite number > 0 m, got -1$"):
        VoxelLogX0Loss(target_budget=None, min_x0=-1)
    with pytest.raises(ValueError, match=r"^mu_bs must be an integer >= 1, got 2.5$"):
        check_int("mu_bs", 2.5)
    with pytest.raises(ValueError, match=r"^n_threads must be an integer >= 1, got 0$"):
        set_threads(0)
