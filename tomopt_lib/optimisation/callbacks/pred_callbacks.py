"""Prediction handlers: collect (prediction, target) pairs during ``predict``, or write them to an HDF5 file."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from torch import Tensor

from .callback import Callback

__all__ = ["PredHandler", "VolumeTargetPredHandler", "Save2HDF5PredHandler", "x0_to_class_id"]

logger = logging.getLogger(__name__)

PRED_KEY = "preds"
"""HDF5 dataset of the predictions written by :class:`Save2HDF5PredHandler`."""
TARG_KEY = "targs"
"""HDF5 dataset of the targets written by :class:`Save2HDF5PredHandler`."""


def x0_to_class_id(x0: Tensor, x02id: dict[float, int]) -> Tensor:
    """Class id of the nearest key of ``x02id`` for each element of ``x0`` (long tensor, same shape)."""
    keys = torch.tensor(list(x02id.keys()), dtype=torch.float64, device=x0.device)
    ids = torch.tensor(list(x02id.values()), dtype=torch.long, device=x0.device)
    return ids[(x0.detach().to(torch.float64).unsqueeze(-1) - keys).abs().argmin(-1)]


def _to_numpy(x: Any) -> np.ndarray:
    if isinstance(x, (tuple, list)):
        x = x[0]
    return x.detach().cpu().numpy() if isinstance(x, Tensor) else np.asarray(x)


class PredHandler(Callback):
    """Default prediction callback: collects (prediction, true voxel X0 cube) numpy pairs, one per volume."""

    def __init__(self) -> None:
        super().__init__()
        self.preds: list[tuple[np.ndarray, np.ndarray]] = []

    def on_pred_begin(self) -> None:
        """Start a new record."""
        self.preds = []

    def _get_target(self) -> np.ndarray:
        return _to_numpy(self.wrapper.volume.get_rad_cube())

    def on_x0_pred_end(self) -> None:
        """Record the latest volume's prediction and target (prediction mode only)."""
        fp = self.wrapper.fit_params
        if fp.state != "test":
            return
        if fp.pred is None:
            logger.warning("%s: volume %s has no prediction; not recorded", type(self).__name__, fp.volume_id)
            return
        self.preds.append((_to_numpy(fp.pred), self._get_target()))

    def get_preds(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """List of (prediction, target) pairs."""
        return self.preds


class VolumeTargetPredHandler(PredHandler):
    """Like :class:`PredHandler` but the target is ``volume.target``, mapped to a class id if ``x02id`` is given."""

    def __init__(self, x02id: dict[float, int] | None = None) -> None:
        super().__init__()
        self.x02id = x02id

    def _get_target(self) -> np.ndarray:
        targ = self.wrapper.volume.target
        if targ is None:
            raise ValueError("VolumeTargetPredHandler: the loaded passive has no target (volume.target is None)")
        targ = torch.as_tensor(targ)
        if self.x02id is not None:
            targ = x0_to_class_id(targ, self.x02id)
        return _to_numpy(targ)


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
