"""Matplotlib figures of the luminosity report: penalty landscape with the optimiser's path, relative-error
histograms, estimate vs truth. Pure functions returning figures built without pyplot (no global figure state) and
without mathtext labels (its parser is not thread-safe), so they can render in concurrent task threads; the caller
saves them. Emittances are shown in 1e-6 m rad."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import LogFormatter, NullFormatter

__all__ = ["plot_penalty_landscape", "plot_rel_err_hist", "plot_est_vs_truth"]

_U = 1e6  # m rad -> 1e-6 m rad


def _trim_path(path: np.ndarray) -> np.ndarray:
    """Drop repeated points (rejected steps and padding after convergence)."""
    keep = np.ones(len(path), dtype=bool)
    keep[1:] = np.any(np.diff(path, axis=0) != 0, axis=1)
    return path[keep]


def plot_penalty_landscape(
    grid_a: np.ndarray,
    grid_b: np.ndarray,
    penalty: np.ndarray,
    path: np.ndarray,
    truth: np.ndarray,
    names: Sequence[str],
    title: str,
) -> Figure:
    """log-coloured penalty sqrt(sum r^2) on (grid_b, grid_a) with the iterates ``path`` (n, 2) coloured by step,
    the start (red), the final estimate (white star) and the truth (black cross)."""
    fig = Figure(figsize=(6.4, 5.2))
    ax = fig.subplots()
    z = np.asarray(penalty, dtype=float)
    pos = z[np.isfinite(z) & (z > 0)]
    floor = max(pos.min() if pos.size else 1e-300, 1e-12 * (pos.max() if pos.size else 1.0))
    mesh = ax.pcolormesh(
        grid_a * _U,
        grid_b * _U,
        np.clip(z, floor, None),
        norm=LogNorm(vmin=floor, vmax=max(z.max(), floor * 10)),
        shading="auto",
        cmap="viridis",
    )
    cbar = fig.colorbar(mesh, ax=ax, label="penalty  sqrt(sum_k ((L_k - C_k) / sigma_k)^2)")
    # plain-text tick labels: matplotlib's mathtext parser (the default "10^n" labels) is not thread-safe
    cbar.ax.yaxis.set_major_formatter(LogFormatter(labelOnlyBase=True))
    cbar.ax.yaxis.set_minor_formatter(NullFormatter())
    p = _trim_path(np.asarray(path, dtype=float)) * _U
    ax.plot(p[:, 0], p[:, 1], "-", color="white", lw=0.8, alpha=0.8)
    sc = ax.scatter(p[:, 0], p[:, 1], c=np.arange(len(p)), cmap="autumn", s=18, zorder=3, edgecolors="k", linewidths=0.3)
    fig.colorbar(sc, ax=ax, label="iteration", pad=0.01)
    ax.plot(*p[0], "o", color="red", ms=8, mfc="none", mew=2, label="start", zorder=4)
    ax.plot(*p[-1], "*", color="white", ms=12, mec="k", label="estimate", zorder=5)
    ax.plot(*(np.asarray(truth, dtype=float) * _U), "x", color="black", ms=10, mew=2, label="truth", zorder=6)
    ax.set_xlabel(f"{names[0]} [1e-6 m rad]")
    ax.set_ylabel(f"{names[1]} [1e-6 m rad]")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="upper right", fontsize=7)
    fig.tight_layout()
    return fig


def plot_rel_err_hist(rel_err: Mapping[str, np.ndarray], bins: int, title: str | None = None) -> Figure:
    """Step histograms of the relative errors (estimate - truth) / truth, one per component."""
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.subplots()
    vals = [np.asarray(v, dtype=float)[np.isfinite(v)] for v in rel_err.values()]
    lim = max((np.abs(v).max() for v in vals if v.size), default=1.0) or 1.0
    edges = np.linspace(-lim, lim, bins + 1)
    for (name, _), v in zip(rel_err.items(), vals):
        ax.hist(
            v,
            bins=edges,  # type: ignore[arg-type]  # matplotlib's stubs leave out ndarray bin edges
            histtype="step",
            lw=1.5,
            label=f"{name} (rms {np.sqrt(np.mean(v**2)) if v.size else np.nan:.2g})",
        )
    ax.set_xlabel("relative error (estimate - truth) / truth")
    ax.set_ylabel("inversions")
    ax.set_title(title or "Relative errors of the estimated emittances", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_est_vs_truth(
    truth: Mapping[str, np.ndarray],
    est: Mapping[str, np.ndarray],
    sigma: Mapping[str, np.ndarray],
    bounds: Sequence[float] | None = None,
) -> Figure:
    """Estimate vs truth per component (error bars: sigma from the covariance), with the identity line and bounds."""
    names = list(truth)
    fig = Figure(figsize=(3.2 * len(names), 3.4))
    axes = fig.subplots(1, len(names), squeeze=False)
    for ax, name in zip(axes[0], names):
        t, e, s = (np.asarray(d[name], dtype=float) * _U for d in (truth, est, sigma))
        ax.errorbar(t, e, yerr=np.where(np.isfinite(s), s, 0.0), fmt="o", ms=3, lw=0.6, alpha=0.8)
        lo = np.nanmin(np.concatenate([t, e])) if t.size else 0.0
        hi = np.nanmax(np.concatenate([t, e])) if t.size else 1.0
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        if bounds is not None:
            for b in bounds:
                ax.axhline(b * _U, color="grey", lw=0.6, ls=":")
        ax.set_xlabel(f"true {name} [1e-6 m rad]")
        ax.set_ylabel(f"estimated {name}")
    fig.suptitle("Estimate vs truth", fontsize=9)
    fig.tight_layout()
    return fig
