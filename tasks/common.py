"""Helpers shared by the Prefect tasks: logging, seeds, volume construction from a parameter section."""

from __future__ import annotations

import logging
from typing import Any, Mapping, Optional

import numpy as np

from tomopt_lib.volume.builders import build_panel_volume
from tomopt_lib.volume.volume import Volume

__all__ = ["task_logger", "derive_seed", "build_volume"]

_VOLUME_KEYS = (
    "n_panels_above", "n_panels_below", "passive_n_layers", "lw", "voxel_size", "res", "eff", "panel_span", "step_sz",
    "scatter_model", "sigmoid_smooth", "energy_loss", "highland_beta",
)


def task_logger() -> logging.Logger | logging.LoggerAdapter:
    """Prefect's run logger inside a flow/task run, a plain ``tomoflow`` logger otherwise (e.g. ``task.fn`` calls)."""
    try:
        from prefect import get_run_logger
        from prefect.exceptions import MissingContextError

        try:
            return get_run_logger()
        except MissingContextError:
            pass
    except ImportError:  # pragma: no cover
        pass
    return logging.getLogger("tomoflow")


def derive_seed(seed: int, *keys: int) -> int:
    """A 63-bit seed derived from ``seed`` and integer ``keys`` (stage, volume, chunk ...), stable across processes."""
    state = np.random.SeedSequence([int(seed), *[int(k) for k in keys]]).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1])) & (2**63 - 1)


def build_volume(volume_cfg: Mapping[str, Any], device: Optional[str] = None, budget: Optional[float] = None) -> Volume:
    """``build_panel_volume`` from a ``volume`` parameter section (a mapping of plain values); ``budget``: fixed-budget
    mode with that total detector cost."""
    kwargs = {k: volume_cfg[k] for k in _VOLUME_KEYS if k in volume_cfg}
    return build_panel_volume(**kwargs, budget=budget, device=device)
