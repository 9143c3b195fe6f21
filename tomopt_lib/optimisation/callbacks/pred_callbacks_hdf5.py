"""``Save2HDF5PredHandler``: write predictions and targets incrementally to an HDF5 file instead of caching them."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import h5py
import numpy as np
import torch

from .pred_callbacks import VolumeTargetPredHandler, _to_numpy, x0_to_class_id

__all__ = ["Save2HDF5PredHandler"]

logger = logging.getLogger(__name__)

PRED_KEY = "preds"
TARG_KEY = "targs"


class Save2HDF5PredHandler(VolumeTargetPredHandler):
    """Appends each volume's prediction and target to the resizable datasets ``preds`` and ``targs`` of an HDF5 file.

    Row ``i`` of both datasets belongs to the ``i``-th predicted volume; further ``predict`` calls (or an existing
    file) append rows. The target is the voxel X0 cube (``volume.get_rad_cube()``, (n_z, n_x, n_y) [m]) or, with
    ``use_volume_target``, ``volume.target``; with ``x02id`` either is mapped to class ids (nearest X0 key).
    ``get_preds()`` returns an empty list: read the file (e.g. with ``h5py``) instead.

    Args:
        path: HDF5 file to write (parent folders are created).
        use_volume_target: save ``volume.target`` instead of the voxel X0 cube.
        overwrite: delete an existing file at the start of the first prediction (otherwise append to it).
        x02id: optional map from X0 [m] to class id applied to the target.
        compression: h5py compression of the datasets (``"lzf"``, ``"gzip"`` or ``None``).
    """

    def __init__(
        self,
        path: str | os.PathLike,
        use_volume_target: bool = False,
        overwrite: bool = False,
        x02id: dict[float, int] | None = None,
        compression: str | None = "lzf",
    ) -> None:
        super().__init__(x02id=x02id)
        if compression not in (None, "lzf", "gzip", "szip"):
            raise ValueError(f"compression must be None, 'lzf', 'gzip' or 'szip', got {compression!r}")
        self.path = Path(path)
        self.use_volume_target = bool(use_volume_target)
        self.overwrite = bool(overwrite)
        self.compression = compression
        self._overwrite_pending = self.overwrite
        self.n_written = 0

    def __repr__(self) -> str:
        return (
            f"Save2HDF5PredHandler(path={str(self.path)!r}, use_volume_target={self.use_volume_target}, "
            f"overwrite={self.overwrite}, compression={self.compression!r})"
        )

    def on_pred_begin(self) -> None:
        """On the first prediction with ``overwrite``, delete an existing file; count the rows written in this run."""
        super().on_pred_begin()
        self.n_written = 0
        if self._overwrite_pending:
            if self.path.exists():
                self.path.unlink()
                logger.info("Save2HDF5PredHandler: overwriting %s", self.path)
            self._overwrite_pending = False

    def _get_target(self) -> np.ndarray:
        if self.use_volume_target:
            return super()._get_target()
        cube = self.wrapper.volume.get_rad_cube()
        if self.x02id is not None:
            cube = x0_to_class_id(torch.as_tensor(cube), self.x02id)
        return _to_numpy(cube)

    def _check(self, f: h5py.File, key: str, arr: np.ndarray) -> None:
        if key in f and f[key].shape[1:] != arr.shape:
            raise ValueError(
                f"path: {self.path} dataset {key!r} holds rows of shape {f[key].shape[1:]}, cannot append {arr.shape}"
            )

    def _append(self, f: h5py.File, key: str, arr: np.ndarray) -> None:
        if key not in f:
            f.create_dataset(
                key,
                data=arr[None],
                maxshape=(None, *arr.shape),
                chunks=(1, *arr.shape) if arr.ndim else True,
                compression=self.compression,
            )
            return
        ds = f[key]
        ds.resize(ds.shape[0] + 1, axis=0)
        ds[-1] = arr

    def on_x0_pred_end(self) -> None:
        """Append the latest volume's prediction and target to the file (prediction mode only)."""
        fp = self.wrapper.fit_params
        if fp.state != "test":
            return
        if fp.pred is None:
            logger.warning("Save2HDF5PredHandler: volume %s has no prediction; not written", fp.volume_id)
            return
        pred = np.asarray(_to_numpy(fp.pred))
        targ = np.asarray(self._get_target())
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with h5py.File(self.path, "a") as f:
            self._check(f, PRED_KEY, pred)
            self._check(f, TARG_KEY, targ)
            self._append(f, PRED_KEY, pred)
            self._append(f, TARG_KEY, targ)
        self.n_written += 1
