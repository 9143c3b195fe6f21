"""Atomic PNG writing for the tasks (temporary file, then rename)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Union

from tomopt_lib.io import atomic_path

__all__ = ["save_png"]


def save_png(fig: Any, path: Union[str, Path], dpi: int = 70) -> Path:
    """Write ``fig`` to ``path`` as PNG atomically (parent folders created)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(p) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return p
