"""Mixins of the volume wrappers: optimiser hyper-parameter access and save / load of detector + optimiser states."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import torch
from torch import Tensor

from ...io import save_torch

if TYPE_CHECKING:
    from ...volume.volume import Volume

__all__ = ["OptimiserAccessMixin"]


class OptimiserAccessMixin:
    """Learning rate / momentum access by optimiser name, parameter count, and save / load / ``from_save``.

    Expects ``self.opts`` (name -> ``torch.optim.Optimizer``), ``self.volume``, ``self.loss_func`` and ``self.device``.
    """

    opts: dict[str, torch.optim.Optimizer]
    volume: Volume
    loss_func: Callable[..., Tensor] | None
    device: torch.device
    generator: torch.Generator | None
    _last_good: list[Tensor] | None

    if TYPE_CHECKING:  # the wrappers' constructor, as used by ``from_save``

        def __init__(self, volume: Volume, **kwargs: Any) -> None: ...

    def _add_opts(self, detectors: list[Any], groups: dict[str, str], partial_opts: dict[str, Any]) -> None:
        """One optimiser per parameter group: ``groups`` maps an optimiser name (``xy_pos_opt``) to the attribute of
        every detector in ``detectors`` it trains (``xy``); a group whose partial optimiser is None stays frozen.
        ``budget_opt`` (if given) trains the volume's ``budget_weights`` (fixed-budget mode only)."""
        for name, attr in groups.items():
            partial_opt = partial_opts.get(name)
            if partial_opt is not None:
                self.opts[name] = partial_opt([getattr(d, attr) for d in detectors])
        budget_opt = partial_opts.get("budget_opt")
        if budget_opt is not None:
            if getattr(self.volume, "budget", None) is None or not hasattr(self.volume, "budget_weights"):
                raise ValueError(
                    "budget_opt: the volume has no budget (build it with Volume(..., budget=B) for fixed-budget mode)"
                )
            self.opts["budget_opt"] = budget_opt([self.volume.budget_weights])

    def _check_opt(self, opt: str) -> torch.optim.Optimizer:
        if opt not in self.opts:
            raise ValueError(f"opt={opt!r} is not an optimiser of this wrapper; available: {sorted(self.opts)}")
        return self.opts[opt]

    def get_opt_lr(self, opt: str) -> float:
        """Learning rate of the first parameter group of optimiser ``opt``."""
        return float(self._check_opt(opt).param_groups[0]["lr"])

    def set_opt_lr(self, lr: float, opt: str) -> None:
        """Set the learning rate of every parameter group of optimiser ``opt``."""
        for g in self._check_opt(opt).param_groups:
            g["lr"] = lr

    def get_opt_mom(self, opt: str) -> float:
        """Momentum (or Adam-style beta1) of optimiser ``opt``."""
        g = self._check_opt(opt).param_groups[0]
        if "momentum" in g:
            return float(g["momentum"])
        if "betas" in g:
            return float(g["betas"][0])
        raise ValueError(f"opt={opt!r}: optimiser {type(self.opts[opt]).__name__} has no momentum or betas")

    def set_opt_mom(self, mom: float, opt: str) -> None:
        """Set the momentum (or beta1) of optimiser ``opt``."""
        for g in self._check_opt(opt).param_groups:
            if "momentum" in g:
                g["momentum"] = mom
            elif "betas" in g:
                g["betas"] = (mom, *tuple(g["betas"])[1:])
            else:
                raise ValueError(f"opt={opt!r}: optimiser {type(self.opts[opt]).__name__} has no momentum or betas")

    def get_param_count(self, trainable: bool = True) -> int:
        """Number of (trainable) parameter elements of the volume."""
        return int(sum(p.numel() for p in self.volume.parameters() if p.requires_grad or not trainable))

    # ------------------------------------------------------------------ save / load
    def save(self, name: str | Path) -> None:
        """Save the volume state and the optimiser states to ``name``."""
        state: dict[str, Any] = {"volume": self.volume.state_dict()}
        state.update({k: o.state_dict() for k, o in self.opts.items()})
        coef = getattr(self.loss_func, "cost_coef", None)
        if coef is not None:
            state["loss_cost_coef"] = torch.as_tensor(coef).detach().cpu()
        save_torch(state, name)

    def load(self, name: str | Path) -> None:
        """Load a state saved with :meth:`save` (missing optimiser states are left as they are). Tensors and plain
        containers only (``weights_only=True``): a file that would need to unpickle objects is refused, never run."""
        try:
            state = torch.load(str(name), map_location=self.device, weights_only=True)
        except Exception as err:  # noqa: BLE001 - UnpicklingError for foreign objects, RuntimeError for a broken zip
            raise ValueError(f"{name}: not a wrapper state file this code can load safely ({type(err).__name__}: {err})") from err
        self.volume.load_state_dict(state["volume"])
        for k, o in self.opts.items():
            if k in state:
                o.load_state_dict(state[k])
        if "loss_cost_coef" in state and self.loss_func is not None and hasattr(self.loss_func, "cost_coef"):
            self.loss_func.cost_coef = state["loss_cost_coef"].to(self.device)

    def training_state(self) -> dict[str, Any]:
        """Everything a fit needs to continue bit for bit: ``volume`` and ``opts`` states, the loss's ``cost_coef``,
        the wrapper's ``generator`` state and ``last_good`` (the last usable optimised parameters); tensors on CPU."""
        coef = getattr(self.loss_func, "cost_coef", None)
        return {
            "volume": self.volume.state_dict(),
            "opts": {k: o.state_dict() for k, o in self.opts.items()},
            "cost_coef": None if coef is None else torch.as_tensor(coef).detach().cpu(),
            "generator": None if self.generator is None else self.generator.get_state(),
            "last_good": None if self._last_good is None else [t.detach().cpu() for t in self._last_good],
        }

    def load_training_state(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`training_state` (the wrapper must have the same optimiser groups)."""
        self.volume.load_state_dict(state["volume"])
        for k, o in self.opts.items():
            o.load_state_dict(state["opts"][k])
        if state.get("cost_coef") is not None and self.loss_func is not None:
            self.loss_func.cost_coef = state["cost_coef"].to(self.device)  # type: ignore[attr-defined]
        if state.get("generator") is not None:
            if self.generator is None:
                raise ValueError("the saved training state has a generator state but this wrapper has no generator (seed=None)")
            self.generator.set_state(state["generator"])
        last = state.get("last_good")
        self._last_good = None if last is None else [t.to(self.device) for t in last]

    @classmethod
    def from_save(cls, name: str | Path, *, volume: Volume, **kwargs: Any) -> Self:
        """New wrapper built with ``kwargs`` and loaded from ``name``."""
        vw = cls(volume, **kwargs)
        vw.load(name)
        return vw
