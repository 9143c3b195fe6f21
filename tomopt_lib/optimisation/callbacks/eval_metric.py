"""``EvalMetric``: base of the metrics reported by ``MetricLogger``."""

from __future__ import annotations

import logging
from abc import abstractmethod

from .callback import Callback

__all__ = ["EvalMetric"]

logger = logging.getLogger(__name__)


class EvalMetric(Callback):
    """Base metric: subclasses implement :meth:`get_metric`, called by the metric logger at the validation epoch end.

    Args:
        lower_metric_better: a lower value is better.
        name: display name (default: the class name).
        main_metric: whether this is the main metric (only one main metric per fit; extras are demoted).
    """

    def __init__(self, lower_metric_better: bool, name: str | None = None, main_metric: bool = True) -> None:
        super().__init__()
        self.lower_metric_better = bool(lower_metric_better)
        self.name = name if name is not None else type(self).__name__
        self.main_metric = bool(main_metric)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(lower_metric_better={self.lower_metric_better}, name={self.name!r})"

    def on_train_begin(self) -> None:
        """Ensure only one main metric: demote this one if an earlier metric is already main."""
        if not self.main_metric:
            return
        for cb in self.wrapper.fit_params.metric_cbs:
            if cb is self:
                return
            if getattr(cb, "main_metric", False):
                logger.info("%s: another main metric (%s) exists; demoted", self.name, cb.name)
                self.main_metric = False
                return

    @abstractmethod
    def get_metric(self) -> float:
        """Metric value for the latest validation epoch."""
