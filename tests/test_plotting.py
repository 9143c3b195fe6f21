"""Plot helpers: Agg-safe figures with and without data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib import image as plt_image
from matplotlib.figure import Figure

from tomopt_lib.plotting import (
    plot_detector_layout,
    plot_hit_density,
    plot_poca_density_per_layer,
    plot_pred_true_x0,
    plot_scatter_angle_hist,
    plot_scatter_density,
)
from tomopt_lib.volume.builders import build_panel_volume


@pytest.mark.slow  # six figures with constrained layouts, twice: ~5 s each
@pytest.mark.parametrize("n", [0, 200])
def test_plots(tmp_path: Path, n: int) -> None:
    rng = np.random.default_rng(0)
    poca = np.c_[rng.random((n, 2)), 0.2 + 0.6 * rng.random(n)]
    df = pd.DataFrame(
        {
            "poca_x": poca[:, 0],
            "poca_y": poca[:, 1],
            "poca_z": poca[:, 2],
            "x": poca[:, 0],
            "y": poca[:, 1],
            "panel": rng.integers(0, 3, n),
        }
    )
    cube = rng.random((6, 10, 10)) + 0.01
    figs = {
        "pred_true": plot_pred_true_x0(cube[:2], cube[:2] * 2),
        "scatter_density": plot_scatter_density(df),
        "hits": plot_hit_density(df),
        "poca": plot_poca_density_per_layer(poca, lw=(1.0, 1.0), z_bottom=0.2, size=0.1, n_layers=6),
        "angles": plot_scatter_angle_hist({"a": rng.random(n) * 0.05, "b": np.array([np.nan])}, max_angle=0.05),
        "layout": plot_detector_layout(build_panel_volume(), x0_cube=cube),
    }
    for name, fig in figs.items():
        assert isinstance(fig, Figure)
        fig.savefig(tmp_path / f"{name}.png")
        img = plt_image.imread(tmp_path / f"{name}.png")  # a valid PNG ...
        assert img.ndim == 3 and min(img.shape[:2]) > 100, name
        if name == "hits" and n == 0:  # plot_hit_density hides its only axes without hits: a blank (but valid) figure
            continue
        drawn = (img[..., :3] != img[0, 0, :3]).any(axis=-1).mean()  # pixels unlike the background corner
        assert drawn > 0.005, (name, drawn)  # ... with something drawn on it
    plot_scatter_angle_hist({}, savename=tmp_path / "sub" / "empty.png")
    assert (tmp_path / "sub" / "empty.png").exists()


def test_pred_true_shape_check() -> None:
    with pytest.raises(ValueError, match="shape"):
        plot_pred_true_x0(np.ones((2, 3, 3)), np.ones((2, 3, 4)))
