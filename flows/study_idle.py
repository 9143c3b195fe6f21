"""The ``study`` stage's outputs when ``study: default`` (no benchmark study selected): placeholders, written fast.

Imports neither torch nor prefect, so that the default pipeline's ``make run`` does not grow by a Prefect flow start.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from .paths import PipelinePaths

__all__ = ["IDLE_NOTE", "write_idle_outputs"]

IDLE_NOTE = (
    "study: default -- the main stages (generate_passives ... evaluate) are the default study; select a benchmark "
    "study with `dvc exp run -S study=ladle_furnace` (README: Benchmark studies)"
)


def _atomic_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


def _note_png(path: Path) -> None:
    """A PNG that says which study ran (the plots folder holds PNGs only: ``dvc plots show`` renders it)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 1.2))
    fig.text(0.02, 0.5, IDLE_NOTE.replace(" -- ", "\n"), va="center", fontsize=9, wrap=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    fig.savefig(tmp, format="png", dpi=70, metadata={"Software": None})
    os.replace(tmp, path)


def write_idle_outputs(paths: PipelinePaths) -> dict[str, Any]:
    """Every output of the ``study`` stage for ``study: default``: a note in each folder, the metrics saying so."""
    outs = paths.study_outputs
    _atomic_text(Path(outs["data_dir"]) / "README.txt", IDLE_NOTE + "\n")
    _note_png(Path(outs["plots_dir"]) / "study.png")
    _atomic_text(Path(outs["detector_json"]).parent / "README.txt", IDLE_NOTE + "\n")
    summary = {"study": "default"}
    _atomic_text(Path(outs["metrics"]), json.dumps({"study": "default", "note": IDLE_NOTE}, indent=2) + "\n")
    _atomic_text(Path(outs["summary"]), json.dumps(summary, indent=2) + "\n")
    return summary
