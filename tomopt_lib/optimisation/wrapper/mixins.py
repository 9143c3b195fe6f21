"""Mixins of the volume wrappers: optimiser hyper-parameter access and save / load of detector + optimiser states."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Union

import torch

__all__ = ["OptimiserAccessMixin"]


class OptimiserAccessMixin:
    """Learning rate / momentum access by optimiser name, parameter count, and save / load / ``from_save``.

    Expects ``self.opts`` (name -> ``torch.optim.Optimizer``), ``self.volume``, ``self.loss_func`` and ``self.device``.
    """

    opts: Dict[str, torch.optim.Optimizer]
    volume: Any
    loss_func: Any
    device: torch.device

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
    def save(self, name: Union[str, Path]) -> None:
        """Save the volume state and the optimiser states to ``name``."""
        state: Dict[str, Any] = {"volume": self.volume.state_dict()}
        state.update({k: o.state_dict() for k, o in self.opts.items()})
        coef = getattr(self.loss_func, "cost_coef", None)
        if coef is not None:
            state["loss_cost_coef"] = torch.as_tensor(coef).detach().cpu()
        torch.save(state, str(name))

    def load(self, name: Union[str, Path]) -> None:
        """Load a state saved with :meth:`save` (missing optimiser states are left as they are)."""
        state = torch.load(str(name), map_location=self.device, weights_only=False)
        self.volume.load_state_dict(state["volume"])
        for k, o in self.opts.items():
            if k in state:
                o.load_state_dict(state[k])
        if "loss_cost_coef" in state and self.loss_func is not None and hasattr(self.loss_func, "cost_coef"):
            self.loss_func.cost_coef = state["loss_cost_coef"].to(self.device)

    @classmethod
    def from_save(cls, name: Union[str, Path], *, volume: Any, **kwargs: Any) -> Any:
        """New wrapper built with ``kwargs`` and loaded from ``name``."""
        vw = cls(volume, **kwargs)
        vw.load(name)
        return vw
