"""Training monitors: ``MetricLogger`` (losses, sub-loss fractions, metrics, plots and a GIF) and ``PanelMetricLogger``.

Plots are drawn on ``matplotlib.figure.Figure`` objects without pyplot (no window, Agg canvas). Frames are saved as
PNGs under ``cb_savepath`` at the start of every training epoch and at the end of training, then combined into a GIF
with Pillow (the reference's imageio GIF writer is broken) and deleted unless ``keep_frames``.
"""

from __future__ import annotations

import logging
import math
import shutil
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from matplotlib.figure import Figure

from ...io import atomic_path
from ...plotting import CAT_PALETTE, LBL_SZ, LEG_SZ, TK_SZ
from .callback import Callback
from .detector_callbacks import iter_sigmoid_panels
from .monitor_plots import draw_loss_axes, draw_metric_axes, draw_panel_axes, draw_sub_loss_axes

if TYPE_CHECKING:
    from matplotlib.gridspec import GridSpec

    from ...volume.layer import PanelDetectorLayer
    from .eval_metric import EvalMetric

__all__ = ["MetricLogger", "PanelMetricLogger", "write_gif"]

logger = logging.getLogger(__name__)


def write_gif(frames: list[Path], path: Path, length: float) -> Path:
    """Combine PNG ``frames`` into an animated, looping GIF at ``path`` lasting ``length`` seconds in total (atomic write)."""
    from PIL import Image

    if not frames:
        raise ValueError("frames: no frames to write")
    images = []
    for f in frames:
        with Image.open(f) as im:
            images.append(im.convert("RGB"))
    size = images[0].size
    images = [im if im.size == size else im.resize(size) for im in images]
    duration = max(int(round(1000 * length / len(images))), 20)
    with atomic_path(path) as tmp:
        images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], duration=duration, loop=0)
    return Path(path)


def _to_float(v: Any) -> float:
    try:
        return float(v.detach().reshape(-1)[0]) if hasattr(v, "detach") else float(v)
    except (TypeError, ValueError, IndexError):
        return math.nan


class MetricLogger(Callback):
    """Records losses and metrics during ``fit`` and draws them.

    Records: the training loss of every volume batch (one per update), the validation loss per epoch (mean over the
    validation volume batches), the fractions of the validation sub-losses (``loss_func.sub_losses``, e.g. error and
    cost) per epoch, the values of the ``EvalMetric`` callbacks (``fit_params.metric_cbs``) per epoch and the best
    validation loss. Without ``show_plots`` the losses of each epoch are logged (``logging.INFO``).

    Args:
        gif_filename: name of the GIF of the optimisation history, saved under ``cb_savepath`` (``None``: no GIF).
        gif_length: total duration of the GIF [s].
        show_plots: display the plots live (in a notebook, via IPython) after each validation epoch.
        keep_frames: keep the PNG frames (folder ``<gif stem>_frames`` next to the GIF) after writing the GIF.
        dpi: resolution of the frames.
    """

    tk_sz, lbl_sz, leg_sz, cat_palette = TK_SZ, LBL_SZ, LEG_SZ, CAT_PALETTE
    fig_size: tuple[float, float] = (12.0, 4.0)

    def __init__(
        self,
        gif_filename: str | None = "optimisation_history.gif",
        gif_length: float = 10.0,
        show_plots: bool = False,
        keep_frames: bool = False,
        dpi: int = 50,
    ) -> None:
        super().__init__()
        if not (math.isfinite(float(gif_length)) and gif_length > 0):
            raise ValueError(f"gif_length must be a finite duration > 0 s, got {gif_length!r}")
        self.gif_filename = gif_filename
        self.gif_length = float(gif_length)
        self.show_plots = bool(show_plots)
        self.keep_frames = bool(keep_frames)
        self.dpi = int(dpi)
        self.gif_path: Path | None = None
        self._reset()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(gif_filename={self.gif_filename!r}, gif_length={self.gif_length}, show_plots={self.show_plots})"

    # ------------------------------------------------------------------ state
    def _reset(self) -> None:
        self.loss_vals: dict[str, list[float]] = {"Training": [], "Validation": []}
        self.val_epoch_updates: list[int] = []  # number of training updates recorded when each validation ended
        self.sub_loss_vals: dict[str, list[float]] = {}
        self.metric_vals: dict[str, list[float]] = {}
        self.metric_cbs: list[EvalMetric] = []
        self.main_metric_idx: int | None = None
        self.best_loss = math.inf
        self.best_epoch: int | None = None
        self.n_trn_batches = 0
        self._epoch_start_update = 0
        self.frames: list[Path] = []
        self._tmp_loss = 0.0
        self._tmp_n = 0
        self._tmp_sub: dict[str, float] = {}

    def _savepath(self) -> Path:
        sp = getattr(self.wrapper.fit_params, "cb_savepath", None)
        return Path(sp) if sp is not None else Path(".")

    def _frame_dir(self) -> Path:
        return self._savepath() / f"{Path(str(self.gif_filename)).stem}_frames"

    def on_train_begin(self) -> None:
        """Start new histories; find the metric callbacks; prepare the frame folder."""
        self._reset()
        fp = self.wrapper.fit_params
        self.metric_cbs = list(getattr(fp, "metric_cbs", []) or [])
        for i, cb in enumerate(self.metric_cbs):
            self.metric_vals[self._metric_name(cb, i)] = []
            if getattr(cb, "main_metric", False) and self.main_metric_idx is None:
                self.main_metric_idx = i
        self.gif_path = None
        if self.gif_filename is not None:
            fd = self._frame_dir()
            if fd.exists():
                shutil.rmtree(fd)
            fd.mkdir(parents=True, exist_ok=True)

    @staticmethod
    def _metric_name(cb: EvalMetric, i: int) -> str:
        return str(getattr(cb, "name", None) or f"{type(cb).__name__}_{i}")

    def on_epoch_begin(self) -> None:
        """Reset the per-epoch accumulators; at a training epoch start, save a frame for the GIF."""
        self._tmp_loss, self._tmp_n, self._tmp_sub = 0.0, 0, {}
        if self.wrapper.fit_params.state == "train":
            self._epoch_start_update = self.n_trn_batches
            if self.gif_filename is not None:
                self._save_frame()

    def on_volume_end(self) -> None:
        """In validation, accumulate the sub-losses (``loss_func.sub_losses``) of the latest volume."""
        if self.wrapper.fit_params.state != "valid":
            return
        subs = getattr(getattr(self.wrapper, "loss_func", None), "sub_losses", None) or {}
        for k, v in subs.items():
            self._tmp_sub[k] = self._tmp_sub.get(k, 0.0) + _to_float(v)

    def on_volume_batch_end(self) -> None:
        """Record the training loss of the volume batch, or accumulate the validation loss."""
        fp = self.wrapper.fit_params
        loss = fp.mean_loss if fp.mean_loss is not None else fp.loss_val
        if loss is None:
            return
        val = _to_float(loss)
        if fp.state == "train":
            self.loss_vals["Training"].append(val)
            self.n_trn_batches += 1
        elif fp.state == "valid" and math.isfinite(val):
            w = max(int(getattr(fp, "n_volumes_in_batch", 0) or 1), 1)
            self._tmp_loss += w * val
            self._tmp_n += w

    def on_epoch_end(self) -> None:
        """After a validation epoch: record the validation loss, sub-loss fractions and metrics, update best and plots."""
        fp = self.wrapper.fit_params
        if fp.state != "valid":
            if fp.state == "train" and getattr(fp, "val_passives", None) is None:
                self._log_epoch()
            return
        val = self._tmp_loss / self._tmp_n if self._tmp_n else math.nan
        self.loss_vals["Validation"].append(val)
        self.val_epoch_updates.append(self.n_trn_batches)
        total = sum(self._tmp_sub.values())
        for k in set(self.sub_loss_vals) | set(self._tmp_sub):
            hist = self.sub_loss_vals.setdefault(k, [math.nan] * (len(self.loss_vals["Validation"]) - 1))
            hist.append(self._tmp_sub.get(k, math.nan) / total if total else math.nan)
        for i, cb in enumerate(self.metric_cbs):
            self.metric_vals[self._metric_name(cb, i)].append(_to_float(cb.get_metric()))
        if math.isfinite(val) and val < self.best_loss:
            self.best_loss, self.best_epoch = val, len(self.loss_vals["Validation"]) - 1
        self._log_epoch()
        if self.show_plots:
            self._display()

    def on_train_end(self) -> None:
        """Save a final frame and write the GIF of the optimisation history."""
        if self.gif_filename is None:
            return
        self._save_frame()
        try:
            self.gif_path = write_gif(self.frames, self._savepath() / str(self.gif_filename), self.gif_length)
            logger.info("MetricLogger: wrote %s (%d frames)", self.gif_path, len(self.frames))
        except (OSError, ValueError) as err:
            logger.warning("MetricLogger: could not write the GIF: %s", err)
        if not self.keep_frames:
            shutil.rmtree(self._frame_dir(), ignore_errors=True)

    # ------------------------------------------------------------------ outputs
    def print_losses(self) -> None:
        """Log the training (mean of the last epoch) and validation losses of the last epoch."""
        self._log_epoch()

    def _log_epoch(self) -> None:
        epoch = getattr(self.wrapper.fit_params, "epoch", None)
        trn = self._last_epoch_train()
        msg = f"epoch {epoch}: train loss {np.mean(trn) if trn else math.nan:.4g}"
        if self.loss_vals["Validation"]:
            msg += f", valid loss {self.loss_vals['Validation'][-1]:.4g} (best {self.best_loss:.4g})"
        for name, vals in self.metric_vals.items():
            if vals:
                msg += f", {name} {vals[-1]:.4g}"
        logger.info(msg)

    def _last_epoch_train(self) -> list[float]:
        return self.loss_vals["Training"][self._epoch_start_update :]

    def get_loss_history(self) -> tuple[OrderedDict[str, list[float]], OrderedDict[str, list[float]]]:
        """``(losses, metrics)``: ordered dicts of ``Training`` (per update) / ``Validation`` (per epoch) losses and of
        the metric values per epoch."""
        return OrderedDict((k, list(v)) for k, v in self.loss_vals.items()), OrderedDict(
            (k, list(v)) for k, v in self.metric_vals.items()
        )

    def get_results(self, loaded_best: bool = False) -> dict[str, float]:
        """Validation ``loss`` and metric values of the last epoch, or of the best epoch if ``loaded_best`` (best by the
        main metric if there is one, else by the validation loss). Without validation: the mean training loss of the
        last epoch."""
        val = self.loss_vals["Validation"]
        if not val:
            trn = self._last_epoch_train()
            return {"loss": float(np.mean(trn)) if trn else math.nan}
        idx = len(val) - 1
        if loaded_best:
            if self.main_metric_idx is not None:
                cb = self.metric_cbs[self.main_metric_idx]
                vals = np.asarray(self.metric_vals[self._metric_name(cb, self.main_metric_idx)], dtype=float)
                vals = np.where(np.isfinite(vals), vals, np.inf if getattr(cb, "lower_metric_better", True) else -np.inf)
                idx = int(np.argmin(vals) if getattr(cb, "lower_metric_better", True) else np.argmax(vals))
            elif self.best_epoch is not None:
                idx = self.best_epoch
        out = {"loss": float(val[idx])}
        for name, metric in self.metric_vals.items():
            out[name] = float(metric[idx]) if idx < len(metric) else math.nan
        return out

    # ------------------------------------------------------------------ plotting
    def _n_rows(self) -> int:
        return 1

    def _n_cols(self) -> int:
        return 3 if self.metric_cbs else 2

    def build_figure(self) -> Figure:
        """Figure of the current histories (loss, sub-loss fractions, main metric if any)."""
        fig = Figure(figsize=(self.fig_size[0], self.fig_size[1] * self._n_rows()))
        gs = fig.add_gridspec(self._n_rows(), self._n_cols())
        draw_loss_axes(fig.add_subplot(gs[0, 0]), self.loss_vals, self.val_epoch_updates)
        draw_sub_loss_axes(fig.add_subplot(gs[0, 1]), self.sub_loss_vals)
        if self.metric_cbs:
            idx = self.main_metric_idx if self.main_metric_idx is not None else 0
            name = self._metric_name(self.metric_cbs[idx], idx)
            draw_metric_axes(fig.add_subplot(gs[0, 2]), name, self.metric_vals[name])
        self._extra_axes(fig, gs)
        fig.subplots_adjust(left=0.07, right=0.98, bottom=0.1, top=0.92, wspace=0.35, hspace=0.45)
        return fig

    def _extra_axes(self, fig: Figure, gs: GridSpec) -> None:
        """Hook for subclasses to draw below the loss row."""

    def update_plot(self) -> Figure:
        """Build the current figure (and display it when ``show_plots``); returns it."""
        fig = self.build_figure()
        if self.show_plots:
            self._display(fig)
        return fig

    def _display(self, fig: Figure | None = None) -> None:
        fig = fig if fig is not None else self.build_figure()
        try:
            from IPython.display import clear_output, display
        except ImportError:
            return
        clear_output(wait=True)
        display(fig)

    def _save_frame(self) -> None:
        fd = self._frame_dir()
        fd.mkdir(parents=True, exist_ok=True)
        path = fd / f"frame_{len(self.frames):04d}.png"
        fig = self.build_figure()
        fig.savefig(path, dpi=self.dpi)
        self.frames.append(path)


class PanelMetricLogger(MetricLogger):
    """``MetricLogger`` that also draws, per ``PanelDetectorLayer``, the panels' xy and spans (top view), their z and,
    for sigmoid panels, their smoothness."""

    def _panel_layers(self) -> list[PanelDetectorLayer]:
        # duck-typed on purpose: any detector layer with ``panels`` is drawn
        return cast("list[PanelDetectorLayer]", [d for d in self.wrapper.volume.get_detectors() if hasattr(d, "panels")])

    def _n_rows(self) -> int:
        return 1 + max(1, len(self._panel_layers()))

    def _has_sigmoid(self) -> bool:
        return any(True for _ in iter_sigmoid_panels(self.wrapper.volume))

    def _n_cols(self) -> int:
        return 4 if self._has_sigmoid() else 3

    def _extra_axes(self, fig: Figure, gs: GridSpec) -> None:
        n_col = self._n_cols()
        for row, det in enumerate(self._panel_layers(), start=1):
            axes = [fig.add_subplot(gs[row, c]) for c in range(n_col)]
            draw_panel_axes(axes, det)
