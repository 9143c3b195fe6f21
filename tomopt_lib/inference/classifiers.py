"""Volume-level classifiers built on a voxelwise X0 inferrer: dense-block presence and integer classes."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from .neighbourhood import neighbourhood_mean
from .x0_base import AbsVolumeInferrer, AbsX0Inferrer

if TYPE_CHECKING:
    from ..volume.volume import Volume
    from .scattering import ScatterBatch

__all__ = ["DenseBlockClassifierFromX0s", "AbsIntClassifierFromX0", "make_x0_inferrer"]

X0InferrerLike = str | Callable[..., AbsX0Inferrer]


def make_x0_inferrer(partial_x0_inferrer: X0InferrerLike, volume: Volume) -> AbsX0Inferrer:
    """Instantiate ``partial_x0_inferrer(volume=volume)`` (a class or ``functools.partial``) or a registry name."""
    if isinstance(partial_x0_inferrer, str):
        from .volume import get_volume_inferrer  # registry lives in the facade module

        partial_x0_inferrer = get_volume_inferrer(partial_x0_inferrer)
    inf = partial_x0_inferrer(volume=volume)
    if not isinstance(inf, AbsX0Inferrer):
        raise ValueError(f"partial_x0_inferrer must build an AbsX0Inferrer, got {type(inf).__name__}")
    return inf


class _FromX0(AbsVolumeInferrer):
    """Shared plumbing: scatters and efficiencies go to the wrapped X0 inferrer."""

    def __init__(self, partial_x0_inferrer: X0InferrerLike, volume: Volume) -> None:
        self.x0_inferrer = make_x0_inferrer(partial_x0_inferrer, volume)
        super().__init__(volume)

    def add_scatters(self, scatters: ScatterBatch) -> None:
        """Hand the batch to the X0 inferrer (predictions use every batch added so far)."""
        super().add_scatters(scatters)
        self.x0_inferrer.add_scatters(scatters)

    def compute_efficiency(self, scatters: ScatterBatch) -> Tensor:
        """(N,) muon efficiencies as computed by the X0 inferrer."""
        return self.x0_inferrer.compute_efficiency(scatters)

    @property
    def n_mu(self) -> int:
        """Number of muons used by the X0 inferrer."""
        return self.x0_inferrer.n_mu


class DenseBlockClassifierFromX0s(_FromX0):
    """Probability that a small dense block is present, from voxelwise X0 predictions.

    With X (optionally 3x3x3 average-pooled, stride 1, edge voxels averaged over existing neighbours) flattened,
    the block fraction f = n_block_voxels / n_voxels and k = max(1, round(f n_voxels)) the cut is the midpoint of the
    k-th and (k+1)-th smallest X0; block weights w = sigmoid(cut_coef (cut - X)) (1 - w for the background);
    r = 2 (mean_bkg - mean_blk) / (mean_bkg + mean_blk) with weighted means, and the output is
    sigmoid(ratio_coef (r + ratio_offset)) of shape (1, 1).

    With ``statistic="block_log"`` (ours, for cluttered backgrounds) the voxels are read as ln X0 (X0 clamped at
    1e-4 m; the pooling then averages logs) and r = -(weighted mean of ln X0 over the block voxels), in e-folds: the
    background's own mixture (e.g. air and iron cargo) no longer enters, so the score ranks layouts by how dense their
    densest k voxels are; choose ``ratio_offset`` ~ ln of the X0 at the decision point (e.g. -3.6 for ~0.027 m).

    Args:
        n_block_voxels: expected number of voxels of the dense block, 1 <= n < number of voxels.
        partial_x0_inferrer: X0 inferrer class / partial (called with ``volume=``) or registry name.
        statistic: ``"ratio"`` (TomOpt's) or ``"block_log"``.
    """

    def __init__(
        self,
        n_block_voxels: int,
        partial_x0_inferrer: X0InferrerLike,
        volume: Volume,
        use_avgpool: bool = True,
        cut_coef: float = 1e4,
        ratio_offset: float = -1.0,
        ratio_coef: float = 1.0,
        statistic: str = "ratio",
    ) -> None:
        super().__init__(partial_x0_inferrer, volume)
        if statistic not in ("ratio", "block_log"):
            raise ValueError(f"statistic must be 'ratio' or 'block_log', got {statistic!r}")
        self.statistic = statistic
        n = self.n_vox
        if isinstance(n_block_voxels, bool) or not (1 <= float(n_block_voxels) < n) or int(n_block_voxels) != n_block_voxels:
            raise ValueError(f"n_block_voxels must be an integer number of voxels in [1, {n - 1}], got {n_block_voxels!r}")
        self.n_block_voxels = int(n_block_voxels)
        self.frac = self.n_block_voxels / n
        self.use_avgpool, self.cut_coef = bool(use_avgpool), float(cut_coef)
        self.ratio_offset, self.ratio_coef = float(ratio_offset), float(ratio_coef)

    def get_prediction(self) -> Tensor:
        """(1, 1) probability that a dense block is present."""
        vox = self.x0_inferrer.get_prediction()
        if self.statistic == "block_log":
            vox = torch.log(vox.clamp_min(1e-4))
        if self.use_avgpool:
            vox = neighbourhood_mean(vox)
        flat = vox.reshape(-1)
        k = min(max(1, round(self.frac * flat.numel())), flat.numel() - 1)
        low = torch.topk(flat, k + 1, largest=False).values  # sorted ascending
        cut = (low[k - 1] + low[k]) / 2
        w_blk = torch.sigmoid(self.cut_coef * (cut - flat))
        w_bkg = 1.0 - w_blk
        blk = (w_blk * flat).sum() / w_blk.sum().clamp_min(1e-12)
        bkg = (w_bkg * flat).sum() / w_bkg.sum().clamp_min(1e-12)
        r = -blk if self.statistic == "block_log" else 2 * (bkg - blk) / (bkg + blk)
        return torch.sigmoid(self.ratio_coef * (r + self.ratio_offset)).reshape(1, 1)


class AbsIntClassifierFromX0(_FromX0):
    """Integer-class inference from voxelwise X0s: subclasses implement ``x02probs(vox_preds)``.

    Args:
        partial_x0_inferrer: X0 inferrer class / partial (called with ``volume=``) or registry name.
        output_probs: return the class probabilities (differentiable), else their argmax over the last dimension.
        class2float: optional ``f(class_index, volume) -> Tensor`` applied to the argmax.
    """

    def __init__(
        self,
        partial_x0_inferrer: X0InferrerLike,
        volume: Volume,
        output_probs: bool = True,
        class2float: Callable[[Tensor, Volume], Tensor] | None = None,
    ) -> None:
        super().__init__(partial_x0_inferrer, volume)
        self.output_probs = bool(output_probs)
        self.class2float = class2float

    @abstractmethod
    def x02probs(self, vox_preds: Tensor) -> Tensor:
        """Class probabilities (..., n_classes) from (n_z, n_x, n_y) X0 predictions [m]."""

    def get_prediction(self) -> Tensor:
        """Class probabilities, or the most probable class (optionally mapped by ``class2float``; not differentiable)."""
        probs = self.x02probs(self.x0_inferrer.get_prediction())
        if self.output_probs:
            return probs
        pred = probs.argmax(-1)
        return pred if self.class2float is None else self.class2float(pred, self.volume)
