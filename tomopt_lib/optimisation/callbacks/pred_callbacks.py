"""Prediction handlers: collect (prediction, target) pairs during ``predict``."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .callback import Callback

__all__ = ["PredHandler", "VolumeTargetPredHandler", "x0_to_class_id"]

logger = logging.getLogger(__name__)


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
