"""Helpers of the volume wrappers: inferrer resolution, passive iteration, guarded optimiser steps."""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

import torch
from torch import Tensor

from ...checks import check_number
from ..data.passives import PassiveYielder

if TYPE_CHECKING:
    from ...inference.x0_base import AbsVolumeInferrer
    from ...volume.volume import Volume

__all__ = ["resolve_volume_inferrer", "as_yielder", "seeded_iteration", "opt_params", "grads_finite", "check_int", "conform"]

logger = logging.getLogger(__name__)

VolumeInferrerSpec: TypeAlias = "str | Callable[..., AbsVolumeInferrer] | None"
"""A volume-inferrer class / factory (called with ``volume=``), a registered name ("poca", "path", ...) or None."""


def check_int(name: str, value: Any, low: int = 1) -> int:
    """``value`` as an int >= ``low`` (an int or an integer-valued index type, never a bool or a float):
    :func:`~tomopt_lib.checks.check_number` with ``integer=True``."""
    return int(check_number(name, value, low=low, integer=True))


def resolve_volume_inferrer(spec: VolumeInferrerSpec) -> Callable[..., AbsVolumeInferrer]:
    """A volume-inferrer class/factory from a class, a factory or a registered name ("poca", "path", ...).

    ``None`` means the default ``PanelX0Inferrer``. Unknown names raise ``ValueError`` naming
    ``partial_volume_inferrer``.
    """
    if spec is None:
        try:
            from ...inference.volume import PanelX0Inferrer
        except ImportError as err:  # pragma: no cover - depends on the inference package
            raise ValueError(f"partial_volume_inferrer: the default PanelX0Inferrer is unavailable ({err})") from err
        return PanelX0Inferrer
    if isinstance(spec, str):
        try:
            from ...inference.volume import get_volume_inferrer
        except ImportError as err:  # pragma: no cover
            raise ValueError(f"partial_volume_inferrer={spec!r}: named inferrers are unavailable ({err})") from err
        try:
            found = get_volume_inferrer(spec)
        except (KeyError, ValueError) as err:
            raise ValueError(f"partial_volume_inferrer: unknown inferrer name {spec!r} ({err})") from err
        if found is None:
            raise ValueError(f"partial_volume_inferrer: unknown inferrer name {spec!r}")
        return found
    if not callable(spec):
        raise ValueError(f"partial_volume_inferrer must be a class, a callable or a name, got {spec!r}")
    return spec


def as_yielder(name: str, passives: Any, *, shuffle: bool = True) -> PassiveYielder:
    """Accept a ``PassiveYielder`` or a list of layouts; ``ValueError`` naming ``name`` if empty or missing."""
    if passives is None:
        raise ValueError(f"{name} must be a PassiveYielder or a non-empty list of passive layouts, got None")
    if not isinstance(passives, PassiveYielder):
        if isinstance(passives, (list, tuple)):
            passives = PassiveYielder(list(passives), shuffle=shuffle)
        else:
            raise ValueError(f"{name} must be a PassiveYielder or a list of passive layouts, got {type(passives)}")
    if len(passives) == 0:
        raise ValueError(f"{name} holds no passive layouts")
    return passives


@contextlib.contextmanager
def seeded_iteration(
    py: PassiveYielder, generator: torch.Generator | None, shuffle: bool | None = None
) -> Iterator[PassiveYielder]:
    """Temporarily give ``py`` the wrapper's generator (if it has none) and/or a shuffle setting."""
    old_gen, old_shuffle = py.generator, py.shuffle
    try:
        if old_gen is None and generator is not None:
            py.generator = generator
        if shuffle is not None:
            py.shuffle = shuffle
        yield py
    finally:
        py.generator, py.shuffle = old_gen, old_shuffle


def opt_params(opts: dict[str, torch.optim.Optimizer]) -> list[Tensor]:
    """All distinct parameters of the optimisers, in order."""
    seen, out = set(), []
    for opt in opts.values():
        for g in opt.param_groups:
            for p in g["params"]:
                if id(p) not in seen:
                    seen.add(id(p))
                    out.append(p)
    return out


def grads_finite(params: Sequence[Tensor]) -> bool:
    """True if every existing gradient is finite."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return True
    return bool(torch.stack([torch.isfinite(g).all() for g in grads]).all())


def conform(volume: Volume, generator: torch.Generator | None) -> None:
    """``conform_detector`` on every detector layer (passing ``generator`` where accepted)."""
    for det in volume.get_detectors():
        conform_detector: Callable[..., None] = det.conform_detector  # signature checked at runtime
        if "generator" in inspect.signature(conform_detector).parameters:
            conform_detector(generator=generator)
        else:
            det.conform_detector()
