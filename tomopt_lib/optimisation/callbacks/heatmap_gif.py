"""``HeatMapGif``: an animated GIF of the first heat map of the first heat-map layer over the training.

One frame (``DetectorHeatMap.plot_map`` over the layer's footprint, so all frames share their axes) is saved at the
start of every training epoch and one at the end of training; the frames are then combined into a looping GIF under
``cb_savepath`` (Pillow, through ``monitors.write_gif``) and deleted unless ``keep_frames``.
"""

from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path

from ...volume.heatmap import DetectorHeatMap
from ...volume.heatmap_layer import HeatMapDetectorLayer, heatmap_layers
from .callback import Callback
from .monitors import write_gif

__all__ = ["HeatMapGif"]

logger = logging.getLogger(__name__)


class HeatMapGif(Callback):
    """Records a GIF of the first heat map in the first heat-map detector layer during training.

    Args:
        gif_filename: name of the GIF, saved under the fit's ``cb_savepath``.
        gif_length: total duration of the GIF [s].
        keep_frames: keep the PNG frames (folder ``<gif stem>_frames`` next to the GIF).
        dpi: resolution of the frames.
    """

    def __init__(
        self, gif_filename: str = "heatmap.gif", *, gif_length: float = 10.0, keep_frames: bool = False, dpi: int = 72
    ) -> None:
        super().__init__()
        if not isinstance(gif_filename, (str, Path)) or not str(gif_filename):
            raise ValueError(f"gif_filename must be a non-empty file name, got {gif_filename!r}")
        if not (math.isfinite(float(gif_length)) and gif_length > 0):
            raise ValueError(f"gif_length must be a finite duration > 0 s, got {gif_length!r}")
        self.gif_filename = str(gif_filename)
        self.gif_length = float(gif_length)
        self.keep_frames = bool(keep_frames)
        self.dpi = int(dpi)
        self.frames: list[Path] = []
        self.gif_path: Path | None = None

    def __repr__(self) -> str:
        return f"HeatMapGif(gif_filename={self.gif_filename!r}, gif_length={self.gif_length})"

    def _savepath(self) -> Path:
        sp = getattr(self.wrapper.fit_params, "cb_savepath", None)
        return Path(sp) if sp is not None else Path(".")

    def _frame_dir(self) -> Path:
        return self._savepath() / f"{Path(self.gif_filename).stem}_frames"

    def _target(self) -> tuple[HeatMapDetectorLayer, DetectorHeatMap]:
        layers = heatmap_layers(self.wrapper.volume.get_detectors())
        if not layers:
            raise ValueError("HeatMapGif: the volume has no heat-map detector layer")
        return layers[0], layers[0].panels[0]

    def _plot(self) -> None:
        layer, hm = self._target()
        lx, ly = (float(v) for v in layer.lw.tolist())
        n = len(self.frames)
        fd = self._frame_dir()
        fd.mkdir(parents=True, exist_ok=True)
        path = fd / f"frame_{n:04d}.png"
        fig = hm.plot_map(
            xlim=(0.0, lx), ylim=(0.0, ly), title=f"{layer.pos}: heat map 0, frame {n}, z = {float(hm.z.detach()):.3f} m"
        )
        fig.savefig(path, dpi=self.dpi)
        self.frames.append(path)

    def on_train_begin(self) -> None:
        """Prepare a new GIF: clear the frames (and the frame folder)."""
        self._target()  # fail early on a volume without heat maps
        self.frames, self.gif_path = [], None
        fd = self._frame_dir()
        if fd.exists():
            shutil.rmtree(fd)

    def on_epoch_begin(self) -> None:
        """At the start of a training epoch, save an image of the current heat map."""
        if self.wrapper.fit_params.state == "train":
            self._plot()

    def on_train_end(self) -> None:
        """Save a final image and combine all images into the GIF."""
        self._plot()
        try:
            self.gif_path = write_gif(self.frames, self._savepath() / self.gif_filename, self.gif_length)
            logger.info("HeatMapGif: wrote %s (%d frames)", self.gif_path, len(self.frames))
        except (OSError, ValueError) as err:
            logger.warning("HeatMapGif: could not write the GIF: %s", err)
        if not self.keep_frames:
            shutil.rmtree(self._frame_dir(), ignore_errors=True)
