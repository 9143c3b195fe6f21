"""Detector losses: an inference-error term plus an optional, smoothly rising cost/budget term."""

from __future__ import annotations

import logging
from abc import ABCMeta, abstractmethod
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ...checks import check_number
from .sub_losses import integer_class_loss

if TYPE_CHECKING:
    from ...volume.volume import Volume

__all__ = [
    "AbsDetectorLoss",
    "AbsMaterialClassLoss",
    "VoxelX0Loss",
    "VoxelLogX0Loss",
    "VoxelClassLoss",
    "VolumeClassLoss",
    "VolumeIntClassLoss",
    "VolumeMSELoss",
]

logger = logging.getLogger(__name__)

CostCoef = Tensor | float | None


def _pred_tensor(pred: Tensor | tuple[Tensor, ...] | list[Tensor]) -> Tensor:
    """Inferrers may return ``(prediction, uncertainty/weight)``; the loss uses the prediction."""
    return pred[0] if isinstance(pred, (tuple, list)) else pred


class AbsDetectorLoss(nn.Module, metaclass=ABCMeta):
    """Base loss = inference error + ``cost_coef`` x budget coefficient(cost).

    With d = ``budget_smoothing`` (cost - target_budget) / target_budget the budget coefficient is
    2 sigmoid(d) for d <= 0 and 1 + d / 2 above (``steep_budget``), else
    2 sigmoid(d) + relu(cost - target_budget) / target_budget. No cost term when ``target_budget`` is None.
    If ``cost_coef`` is None it is set (and logged) from the first error value; :meth:`reset_cost_coef` undoes that.
    ``sub_losses`` holds the last {"error", "cost"} values (detached).

    Args:
        target_budget: budget in the detector's cost units (> 0) or None.
        budget_smoothing: how fast the budget term rises with cost.
        cost_coef: balancing coefficient of the cost term (``cost_coeff`` is accepted as an alias).
        steep_budget: linear rise above budget (True) or the flatter form (False).
        debug: log the loss components at DEBUG level on every evaluation.
    """

    def __init__(
        self,
        *,
        target_budget: float | None,
        budget_smoothing: float = 10,
        cost_coef: CostCoef = None,
        steep_budget: bool = True,
        debug: bool = False,
        cost_coeff: CostCoef = None,
    ) -> None:
        super().__init__()
        if target_budget is not None:
            tb = float(target_budget)
            if not (tb > 0 and torch.isfinite(torch.tensor(tb))):
                raise ValueError(f"target_budget must be None or a finite value > 0, got {target_budget!r}")
            target_budget = tb
        if cost_coef is not None and cost_coeff is not None:
            raise ValueError("give at most one of cost_coef and cost_coeff")
        check_number("budget_smoothing", budget_smoothing, low=0, low_open=True)
        self.target_budget = target_budget
        self.budget_smoothing = float(budget_smoothing)
        self.cost_coef: CostCoef = cost_coef if cost_coef is not None else cost_coeff
        self._auto_cost_coef = self.cost_coef is None
        self.steep_budget = bool(steep_budget)
        self.debug = bool(debug)
        self.sub_losses: dict[str, Tensor] = {}

    @property
    def cost_coeff(self) -> CostCoef:
        """TomOpt spelling alias of ``cost_coef``."""
        return self.cost_coef

    @cost_coeff.setter
    def cost_coeff(self, value: CostCoef) -> None:
        self.cost_coef = value

    def reset_cost_coef(self) -> None:
        """Forget an automatically set ``cost_coef`` so that the next error value sets it again."""
        if self._auto_cost_coef:
            self.cost_coef = None

    @abstractmethod
    def _get_inference_loss(self, pred: Tensor, volume: Volume) -> Tensor:
        """Error component for the prediction of one volume (0-d tensor)."""

    def _set_cost_coef(self, error: Tensor) -> None:
        if self.cost_coef is None:
            self.cost_coef = error.detach().clone()
            logger.info(
                "%s: cost_coef set automatically to the first error value, %.6g", type(self).__name__, float(error.detach())
            )

    def _get_budget_coef(self, cost: Tensor) -> Tensor:
        """Budget coefficient of ``cost`` (0-d tensor, differentiable)."""
        b = self.target_budget
        assert b is not None  # only called with a target budget
        d = self.budget_smoothing * (cost - b) / b
        if self.steep_budget:
            return torch.where(d <= 0, 2 * torch.sigmoid(d), 1 + d / 2)
        return 2 * torch.sigmoid(d) + F.relu(cost - b) / b

    def _get_cost_loss(self, volume: Volume) -> Tensor:
        cost = volume.get_cost()
        if self.target_budget is None:
            return cost.new_zeros(())
        coef = torch.as_tensor(self.cost_coef, dtype=cost.dtype, device=cost.device)
        return (self._get_budget_coef(cost) * coef).reshape(())

    def forward(self, pred: Tensor, volume: Volume) -> Tensor:
        """Total loss of the prediction ``pred`` of one volume with the current detector of ``volume``."""
        error = self._get_inference_loss(_pred_tensor(pred), volume).reshape(())
        self._set_cost_coef(error)
        cost = self._get_cost_loss(volume)
        self.sub_losses = {"error": error.detach(), "cost": cost.detach()}
        if self.debug:
            logger.debug("%s: error %.6g, cost term %.6g", type(self).__name__, float(error.detach()), float(cost.detach()))
        return error + cost

    def extra_repr(self) -> str:
        return (
            f"target_budget={self.target_budget}, budget_smoothing={self.budget_smoothing}, "
            f"cost_coef={self.cost_coef}, steep_budget={self.steep_budget}"
        )


class VoxelX0Loss(AbsDetectorLoss):
    """Error = MSE between the (z, x, y) X0 predictions and ``volume.get_rad_cube()``."""

    def _get_inference_loss(self, pred: Tensor, volume: Volume) -> Tensor:
        true_x0 = volume.get_rad_cube().to(pred.device, pred.dtype)
        return F.mse_loss(pred.reshape(true_x0.shape), true_x0)


class VoxelLogX0Loss(AbsDetectorLoss):
    """Error = MSE between log(X0 predicted) and log(X0 true) per voxel (X0 in m).

    Unlike ``VoxelX0Loss``, every material counts on the same relative scale: a factor-2 error on lead (X0 ~ 6 mm)
    weighs as much as one on beryllium (X0 ~ 0.35 m), and single wild predictions of low-density voxels do not
    dominate. Predictions are floored at ``min_x0`` [m] before the log.
    """

    def __init__(self, *, target_budget: float | None, min_x0: float = 1e-4, **kwargs: Any) -> None:
        super().__init__(target_budget=target_budget, **kwargs)
        check_number("min_x0", min_x0, low=0, low_open=True, unit="m")
        self.min_x0 = float(min_x0)

    def _get_inference_loss(self, pred: Tensor, volume: Volume) -> Tensor:
        true_x0 = volume.get_rad_cube().to(pred.device, pred.dtype)
        log_pred = torch.log(pred.reshape(true_x0.shape).clamp_min(self.min_x0))
        return F.mse_loss(log_pred, torch.log(true_x0))


def _x0_to_id(x0: Tensor, x02id: dict[float, int]) -> Tensor:
    """Class id of the nearest key of ``x02id`` for every element of ``x0`` (long tensor, same shape)."""
    keys = torch.tensor(list(x02id.keys()), dtype=torch.float64, device=x0.device)
    ids = torch.tensor(list(x02id.values()), dtype=torch.long, device=x0.device)
    nearest = (x0.detach().to(torch.float64).unsqueeze(-1) - keys).abs().argmin(-1)
    return ids[nearest]


class AbsMaterialClassLoss(AbsDetectorLoss):
    """Base of losses whose float X0 targets are mapped to class ids via ``x02id`` (nearest key)."""

    def __init__(self, *, x02id: dict[float, int], target_budget: float | None, **kwargs: Any) -> None:
        super().__init__(target_budget=target_budget, **kwargs)
        if not x02id:
            raise ValueError("x02id must be a non-empty dict of X0 -> class id")
        self.x02id = dict(x02id)


class VoxelClassLoss(AbsMaterialClassLoss):
    """Error = NLL of (1, classes, voxels) log-probabilities vs the voxel class ids of ``volume.get_rad_cube()``."""

    def _get_inference_loss(self, pred: Tensor, volume: Volume) -> Tensor:
        targ = _x0_to_id(volume.get_rad_cube(), self.x02id).to(pred.device).reshape(1, -1)
        return F.nll_loss(pred.reshape(pred.shape[0], pred.shape[1], -1), targ)


class VolumeClassLoss(AbsMaterialClassLoss):
    """Error vs ``volume.target`` (X0 mapped to a class id): NLL of (1, classes) log-probabilities, or BCE of a
    (1, 1) probability (binary)."""

    def _get_inference_loss(self, pred: Tensor, volume: Volume) -> Tensor:
        if volume.target is None:
            raise ValueError("volume.target is None: load the passive with a target for VolumeClassLoss")
        targ = _x0_to_id(torch.as_tensor(volume.target), self.x02id).to(pred.device).reshape(-1)
        if pred.shape[1] == 1:
            return F.binary_cross_entropy(pred.reshape(-1), targ.to(pred.dtype).reshape(-1)[: pred.numel()])
        return F.nll_loss(pred.reshape(pred.shape[0], pred.shape[1], -1), targ.reshape(pred.shape[0], -1))


class VolumeIntClassLoss(AbsDetectorLoss):
    """Error = :func:`integer_class_loss` of the predicted integer probabilities vs ``targ2int(volume.target, volume)``.

    Args:
        targ2int: maps the volume target to an integer (tensor).
        pred_int_start: integer of the zeroth probability column.
        use_mse: squared instead of absolute integer errors.
    """

    def __init__(
        self,
        *,
        targ2int: Callable[[Tensor, Volume], Tensor],
        pred_int_start: int,
        use_mse: bool,
        target_budget: float | None,
        **kwargs: Any,
    ) -> None:
        super().__init__(target_budget=target_budget, **kwargs)
        self.targ2int, self.pred_int_start, self.use_mse = targ2int, int(pred_int_start), bool(use_mse)

    def _get_inference_loss(self, pred: Tensor, volume: Volume) -> Tensor:
        if volume.target is None:
            raise ValueError("volume.target is None: load the passive with a target for VolumeIntClassLoss")
        int_targ = self.targ2int(volume.target, volume)
        return integer_class_loss(pred, int_targ, pred_start_int=self.pred_int_start, use_mse=self.use_mse, reduction="mean")


class VolumeMSELoss(AbsDetectorLoss):
    """Error = MSE between the prediction and the float ``volume.target``."""

    def _get_inference_loss(self, pred: Tensor, volume: Volume) -> Tensor:
        if volume.target is None:
            raise ValueError("volume.target is None: load the passive with a target for VolumeMSELoss")
        targ = torch.as_tensor(volume.target, device=pred.device, dtype=pred.dtype)
        return F.mse_loss(pred.reshape(-1), targ.reshape(-1).expand(pred.numel()) if targ.numel() == 1 else targ.reshape(-1))
