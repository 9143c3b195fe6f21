"""Atomic file writes and the small JSON / torch files of the pipeline (see :mod:`tomopt_lib.io`)."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .schema import DataFileError, PathLike

__all__ = ["atomic_path", "save_torch", "write_json", "read_json"]


def _umask() -> int:
    """The process umask, read without changing it (Linux ``/proc``), else the common 0o022."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


@contextlib.contextmanager
def atomic_path(path: PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path`` (``.<name>.<random>.tmp``); on success ``os.replace`` it onto ``path``
    and delete the temporaries of earlier writes of ``path`` that were killed before their rename; on error delete it."""
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the file the usual permissions
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise
    for stale in dest.parent.glob(f".{glob.escape(dest.name)}.*.tmp"):  # leftovers of killed writers of this file
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()


def save_torch(obj: Any, path: PathLike) -> Path:
    """``torch.save`` of ``obj`` to ``path``, atomically and byte-stable: the archive is built in memory (its inner
    name is always ``archive``, not the temporary file's), so equal content gives equal bytes."""
    import io

    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())
    return Path(path)


def write_json(obj: Any, path: PathLike) -> Path:
    """Write ``obj`` as indented JSON (NaN/inf written as null)."""

    def clean(o: Any) -> Any:
        if isinstance(o, dict):
            return {str(k): clean(v) for k, v in o.items()}
        if isinstance(o, (list, tuple)):
            return [clean(v) for v in o]
        if isinstance(o, np.generic):
            o = o.item()
        if isinstance(o, float) and not np.isfinite(o):
            return None
        return o

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(clean(obj), indent=2, sort_keys=False) + "\n")
    return Path(path)


def read_json(path: PathLike) -> Any:
    """Read a JSON file; ``DataFileError`` if missing or malformed."""
    p = Path(path)
    try:
        return json.loads(p.read_text())
    except FileNotFoundError as err:
        raise DataFileError(f"{p}: file not found") from err
    except json.JSONDecodeError as err:
        raise DataFileError(f"{p}: malformed JSON: {err}") from err
