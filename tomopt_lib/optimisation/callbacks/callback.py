"""Base classes of the callbacks that interject in the fit / predict loop of the volume wrappers.

A callback reads and writes the shared, typed fit state ``self.wrapper.fit_params`` (a
:class:`~tomopt_lib.optimisation.wrapper.fit_state.FitParams`) instead of returning values.
The order in which the hooks are called is documented on
:class:`~tomopt_lib.optimisation.wrapper.volume_wrapper.AbsVolumeWrapper`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from ..wrapper.volume_wrapper import AbsVolumeWrapper

__all__ = ["Callback", "CyclicCallback"]


class Callback:
    """Base callback: every hook is a no-op. ``wrapper`` is set by :meth:`set_wrapper` when a fit/predict starts."""

    _wrapper: AbsVolumeWrapper | None = None

    def __init__(self) -> None:
        self._wrapper = None

    @property
    def wrapper(self) -> AbsVolumeWrapper:
        """The wrapper of the running fit / predict (``RuntimeError`` before :meth:`set_wrapper`)."""
        if self._wrapper is None:
            raise RuntimeError(f"{type(self).__name__}: no wrapper; set_wrapper() is called when a fit/predict starts")
        return self._wrapper

    @wrapper.setter
    def wrapper(self, wrapper: AbsVolumeWrapper | None) -> None:
        self._wrapper = wrapper

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def set_wrapper(self, wrapper: AbsVolumeWrapper) -> None:
        """Associate the callback with the wrapper whose ``fit_params`` it reads and writes."""
        self._wrapper = wrapper

    def on_train_begin(self) -> None:
        """Detector fitting begins."""

    def on_epoch_begin(self) -> None:
        """A training, validation or prediction epoch begins (``fit_params.state`` says which)."""

    def on_volume_batch_begin(self) -> None:
        """A new batch of passive volumes begins."""

    def on_volume_begin(self) -> None:
        """A new passive layout has been loaded into the volume."""

    def on_mu_batch_begin(self) -> None:
        """A new muon batch is about to be generated/propagated (``fit_params.mu`` may be replaced here)."""

    def on_scatter_end(self) -> None:
        """Scatters of the latest muon batch are computed (``fit_params.sb``) but not yet given to the inferrer."""

    def on_mu_batch_end(self) -> None:
        """The latest muon batch's scatters were added to the volume inferrer."""

    def on_x0_pred_begin(self) -> None:
        """All muons of the volume have been propagated; the inferrer is about to predict."""

    def on_x0_pred_end(self) -> None:
        """The inferrer has predicted (``fit_params.pred``); the loss is not yet computed."""

    def on_volume_end(self) -> None:
        """The volume has been predicted (and its loss computed, outside of prediction mode)."""

    def on_volume_batch_end(self) -> None:
        """A batch of passive volumes ends (``fit_params.mean_loss`` holds the batch loss)."""

    def on_backwards_begin(self) -> None:
        """The batch loss is computed but not yet back-propagated (per-volume backward: before the first volume's)."""

    def on_backwards_end(self) -> None:
        """Gradients of the volume batch are accumulated; parameters not yet updated."""

    def on_step_end(self) -> None:
        """The detector parameters have been updated (or the step was skipped)."""

    def on_epoch_end(self) -> None:
        """A training, validation or prediction epoch ends."""

    def on_train_end(self) -> None:
        """Detector fitting ends."""

    def on_pred_begin(self) -> None:
        """The wrapper is about to predict."""

    def on_pred_end(self) -> None:
        """The wrapper has finished predicting."""


class CyclicCallback(Callback):
    """Marker base class for callbacks that schedule hyper-parameters per update step (sorted first by the wrapper)."""
