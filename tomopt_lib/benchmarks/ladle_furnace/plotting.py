"""Ladle-furnace comparison plots: predicted vs true fill height for several detectors.

Every data frame has one row per layout with columns ``pred`` (predicted fill height [m]) and ``gen_target`` (true fill
height [m]). Unless stated otherwise the predictions are first de-biased linearly (least squares of the target on the
prediction, :func:`~.inference.fit_linear_correction`, fitted on the frame itself), as in the published study. Each
panel shows the mean +- standard deviation of the predictions per true height and the de-biased MSE [m^2] in the
legend. The functions return the ``Figure`` (no pyplot state) and save it to ``NAME`` (``.png`` appended when it has no
suffix; ``None``: not saved); the title is the file stem.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ...plotting.appearance import LEG_SZ, _colour, _finish, _style
from .inference import fit_linear_correction

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "debiased_mse",
    "compare_raw_init_to_bias_corrected_init",
    "compare_init_to_optimised",
    "compare_init_optimised_2",
    "compare_optimised_to_baselines",
]


def _xy(df: pd.DataFrame, correct: bool) -> tuple[np.ndarray, np.ndarray]:
    for col in ("pred", "gen_target"):
        if col not in df.columns:
            raise ValueError(f"the data frame needs columns 'pred' and 'gen_target', it lacks {col!r}")
    pred = np.asarray(df["pred"], dtype=float)
    true = np.asarray(df["gen_target"], dtype=float)
    if correct:
        w, b = fit_linear_correction(torch.tensor(pred), torch.tensor(true))
        pred = float(w) * pred + float(b)
    return pred, true


def debiased_mse(df: pd.DataFrame) -> float:
    """MSE [m^2] of the linearly de-biased predictions of ``df`` (columns ``pred``, ``gen_target``)."""
    pred, true = _xy(df, True)
    return float(np.mean((pred - true) ** 2))


def _draw(ax: Axes, df: pd.DataFrame, label: str, i: int, *, correct: bool = True) -> None:
    pred, true = _xy(df, correct)
    heights = np.unique(true)
    means = np.array([pred[true == h].mean() for h in heights])
    stds = np.array([pred[true == h].std() for h in heights])
    mse = float(np.mean((pred - true) ** 2))
    off = (i - 1) * 0.004  # small x offset so that error bars do not overlap
    ax.errorbar(heights + off, means, yerr=stds, fmt="o", color=_colour(i), capsize=4, label=f"{label}: MSE {mse:.2e} m$^2$")


def _figure(frames: list[tuple[pd.DataFrame, str, bool]], NAME: str | Path | None) -> Figure:
    fig = Figure(figsize=(8, 7), layout="constrained")
    ax = fig.subplots()
    lo, hi = np.inf, -np.inf
    for i, (df, label, correct) in enumerate(frames):
        _draw(ax, df, label, i, correct=correct)
        true = np.asarray(df["gen_target"], dtype=float)
        lo, hi = min(lo, float(true.min())), max(hi, float(true.max()))
    ax.plot([lo, hi], [lo, hi], color="0.5", ls="--", lw=1, label="truth")
    title = Path(str(NAME)).stem if NAME is not None else ""
    _style(ax, "true fill height [m]", "predicted fill height [m]", title)
    ax.legend(fontsize=LEG_SZ * 0.75)
    savename = None
    if NAME is not None:
        path = Path(str(NAME))
        savename = path if path.suffix else path.with_suffix(".png")
    return _finish(fig, savename)


def compare_raw_init_to_bias_corrected_init(df_start: pd.DataFrame, NAME: str | Path | None) -> Figure:
    """Initial detector: raw predictions beside their linearly de-biased values."""
    return _figure([(df_start, "initial, raw", False), (df_start, "initial, de-biased", True)], NAME)


def compare_init_to_optimised(df_start: pd.DataFrame, df_opt: pd.DataFrame, NAME: str | Path | None) -> Figure:
    """Initial vs optimised detector (first optimisation stage), both de-biased."""
    return _figure([(df_start, "initial", True), (df_opt, "optimised", True)], NAME)


def compare_init_optimised_2(df_start: pd.DataFrame, df_opt_2: pd.DataFrame, NAME: str | Path | None) -> Figure:
    """Initial vs the detector after the second (z-only) optimisation stage, both de-biased."""
    return _figure([(df_start, "initial", True), (df_opt_2, "optimised (stage 2)", True)], NAME)


def compare_optimised_to_baselines(
    df_bl_1: pd.DataFrame, df_bl_2: pd.DataFrame, df_opt_2: pd.DataFrame, NAME: str | Path | None
) -> Figure:
    """The two hand-designed baselines vs the optimised detector, all de-biased."""
    return _figure([(df_bl_1, "baseline 1", True), (df_bl_2, "baseline 2", True), (df_opt_2, "optimised", True)], NAME)
