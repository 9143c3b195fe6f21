"""The one place that decides device, floating dtype, thread count and random seeds.

Every core function takes an optional ``device``; it is resolved here so that nothing else hard-wires CPU.
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from .checks import check_number
from .core import DEVICE

__all__ = ["DEFAULT_DTYPE", "resolve_device", "make_generator", "seed_everything", "set_threads"]

DEFAULT_DTYPE: torch.dtype = torch.float32
"""Floating dtype of muon states, hits and detector parameters."""

DeviceLike = str | torch.device | None


def resolve_device(device: DeviceLike = None) -> torch.device:
    """Turn ``None`` / ``"cpu"`` / ``"cuda"`` / ``"cuda:1"`` / ``"auto"`` into a ``torch.device``.

    ``None`` means :data:`tomopt_lib.core.DEVICE` (CPU); ``"auto"`` means CUDA when it is available, else CPU.
    """
    if device is None:
        return DEVICE
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device={device!r} requested but CUDA is not available; allowed: 'cpu', 'auto' or an available CUDA device"
        )
    return dev


def make_generator(seed: int | None = None, device: DeviceLike = None) -> torch.Generator:
    """A ``torch.Generator`` on ``device``, seeded with ``seed`` (a fresh non-deterministic seed when ``None``)."""
    gen = torch.Generator(device=resolve_device(device))
    if seed is None:
        gen.seed()
    else:
        gen.manual_seed(int(seed))
    return gen


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global generators (for code that does not take a generator)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def set_threads(n_threads: int | None = None) -> int:
    """Set torch's intra-op thread count (default: ``OMP_NUM_THREADS`` or 1) and return it.

    Oversubscribed torch threads were 2-30x slower on the 2-core machines this project targets, so the default is 1.
    """
    if n_threads is None:
        n_threads = int(os.environ.get("OMP_NUM_THREADS", "1"))
    check_number("n_threads", n_threads, low=1, integer=True)
    torch.set_num_threads(n_threads)
    return n_threads
