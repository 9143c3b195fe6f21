"""Helpers shared by the Prefect tasks: logging and seeds."""

from __future__ import annotations

import logging

import numpy as np

__all__ = ["task_logger", "derive_seed"]


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
