"""Matplotlib figures of the luminosity report: penalty landscape with the optimiser's path, relative-error and pull
histograms, estimate vs truth. Pure functions returning figures built without pyplot (no global figure state) and
without mathtext labels (its parser is not thread-safe), so they can render in concurrent task threads; the caller
saves them. Emittances are shown in 1e-6 m rad; histogram bins follow the sample size (:func:`sample_bins`)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import LogFormatter, MaxNLocator, NullFormatter

__all__ = [
    "sample_bins",
    "plot_penalty_landscape",
    "plot_rel_err_hist",
    "plot_pull_hist",
    "plot_est_vs_truth",
    "plot_rel_lumi_error",
]

_U = 1e6  # m rad -> 1e-6 m rad


def sample_bins(n: int, max_bins: int) -> int:
    """Histogram bins for ``n`` values: ceil(2 sqrt(n)), at least 5, at most ``max_bins``."""
    return int(min(max_bins, max(5, math.ceil(2.0 * math.sqrt(max(n, 0))))))


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
    it_bar = fig.colorbar(sc, ax=ax, label="iteration", pad=0.01)
    it_bar.ax.yaxis.set_major_locator(MaxNLocator(integer=True))  # iterations are whole numbers
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
    """Step histograms of the relative errors (estimate - truth) / truth, one per component; at most ``bins`` bins,
    fewer for small samples (:func:`sample_bins` of the largest component sample)."""
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.subplots()
    vals = [np.asarray(v, dtype=float)[np.isfinite(v)] for v in rel_err.values()]
    lim = max((np.abs(v).max() for v in vals if v.size), default=1.0) or 1.0
    edges = np.linspace(-lim, lim, sample_bins(max((v.size for v in vals), default=0), bins) + 1)
    for (name, _), v in zip(rel_err.items(), vals):
        ax.hist(
            v,
            bins=edges,  # type: ignore[arg-type]  # matplotlib's stubs leave out ndarray bin edges
            histtype="step",
            lw=1.5,
            label=f"{name} (rms {np.sqrt(np.mean(v**2)) if v.size else np.nan:.2g})",
        )
    ax.set_xlabel("relative error (estimate - truth) / truth [1]")
    ax.set_ylabel("inversions [count]")
    ax.set_title(title or "Relative errors of the estimated emittances", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_pull_hist(pulls: Mapping[str, np.ndarray], bins: int, title: str | None = None) -> Figure:
    """Step histograms of the pulls (estimate - truth) / sigma (sigma from the covariance), one per component, with
    the unit normal density they should follow (scaled to the sample) and each component's standard deviation."""
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.subplots()
    vals = [np.asarray(v, dtype=float)[np.isfinite(v)] for v in pulls.values()]
    n = max((v.size for v in vals), default=0)
    lim = max(4.0, max((float(np.abs(v).max()) for v in vals if v.size), default=4.0))
    edges = np.linspace(-lim, lim, sample_bins(n, bins) + 1)
    for name, v in zip(pulls, vals):
        ax.hist(
            v,
            bins=edges,  # type: ignore[arg-type]  # matplotlib's stubs leave out ndarray bin edges
            histtype="step",
            lw=1.5,
            label=f"{name} (std {np.std(v) if v.size else np.nan:.2f})",
        )
    x = np.linspace(-lim, lim, 400)
    width = edges[1] - edges[0]
    ax.plot(x, n * width * np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi), "k--", lw=1.0, label="unit normal")
    ax.set_xlabel("pull (estimate - truth) / sigma [1]")
    ax.set_ylabel("inversions [count]")
    ax.set_title(title or "Pulls of the estimated emittances (sigma from the covariance)", fontsize=9)
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
        ax.set_ylabel(f"estimated {name} [1e-6 m rad]")
    fig.suptitle("Estimate vs truth", fontsize=9)
    fig.tight_layout()
    return fig


def plot_rel_lumi_error(histories: Mapping[str, Sequence[float]], title: str | None = None) -> Figure:
    """Largest relative luminosity error max_m |L_m(x_k) / C_m - 1| of the iterates x_k per iteration, one line per
    inversion (log scale, whole-number iteration ticks), as the reference's rel_err_L plots."""
    fig = Figure(figsize=(6.4, 4.2))
    ax = fig.subplots()
    for name, h in histories.items():
        v = np.maximum(np.abs(np.asarray(h, dtype=float)), 1e-17)
        ax.semilogy(np.arange(len(v)), v, "o-", ms=3, lw=1.0, label=name)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("iteration [count]")
    ax.set_ylabel("max relative luminosity error |L / C - 1| [1]")
    ax.set_title(title or "Relative luminosity error per iteration", fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig
