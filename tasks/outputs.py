"""The one way tasks write their small output files: atomically (temporary file in the same folder, then rename), so a
killed task never leaves a half-written PNG or CSV behind. Big data files go through ``tomopt_lib.io``."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from matplotlib.figure import Figure

from tomopt_lib.io import atomic_path

__all__ = ["save_png", "save_csv"]


def save_png(fig: Figure, path: str | Path, dpi: int = 70) -> Path:
    """Write ``fig`` to ``path`` as PNG atomically (parent folders created)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(p) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return p


def save_csv(df: pd.DataFrame, path: str | Path, float_format: str | None = None) -> Path:
    """Write ``df`` to ``path`` as CSV without the index, atomically (parent folders created)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(p) as tmp:
        df.to_csv(tmp, index=False, float_format=float_format)
    return p
