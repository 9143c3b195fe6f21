"""File formats of the pipeline: HDF5 for passive volumes and muon hits, Parquet for scatter tables, JSON/CSV.

Every writer goes to a temporary file in the destination folder and then ``os.replace``s it, so a reader never sees a
half-written file. HDF5 files carry ``schema_version`` and ``kind`` root attributes and a ``units`` attribute on each
dataset; Parquet files carry ``tomoflow.schema_version`` in their schema metadata. Readers raise ``DataFileError`` (or
its subclass ``SchemaVersionError``) with the path and the reason on a missing, truncated, foreign or outdated file.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

__all__ = [
    "SCHEMA_VERSION",
    "UNITS",
    "DataFileError",
    "SchemaVersionError",
    "PassiveRecord",
    "MuonRecord",
    "atomic_path",
    "write_passives",
    "read_passives",
    "write_muon_records",
    "read_muon_records",
    "read_h5_attrs",
    "write_parquet",
    "read_parquet",
    "write_json",
    "save_torch",
    "read_json",
]

PathLike = str | os.PathLike

SCHEMA_VERSION: int = 1
"""Version of the HDF5/Parquet layouts written here; bump it on any incompatible change."""

_PARQUET_VERSION_KEY = b"tomoflow.schema_version"

UNITS: dict[str, str] = {
    "x0": "m (radiation length per voxel; axes z, x, y with z index 0 = bottom layer)",
    "target": "task dependent (X0 [m] of the block for block generators, NaN if none)",
    "generated": "x [m], y [m], p [GeV], theta [rad], phi [rad] at z = top of the volume",
    "final": "x [m], y [m], z [m], p [GeV], theta [rad], phi [rad] after the volume",
    "reco_xyz": "m",
    "gen_xyz": "m",
    "unc_xyz": "m",
    "eff": "probability",
    "chunk": "index of the irradiation chunk",
    "true_theta_in": "rad",
    "true_theta_out": "rad",
    "true_total_scatter": "rad",
}

_COMPRESSION = dict(compression="gzip", compression_opts=4, shuffle=True)


class DataFileError(RuntimeError):
    """A data file is missing, truncated, unreadable or of the wrong kind."""


class SchemaVersionError(DataFileError):
    """A data file was written with another ``schema_version``."""


@dataclass
class PassiveRecord:
    """One passive volume: ``x0`` (z, x, y) cube [m] (z index 0 = bottom) and an optional scalar ``target``."""

    x0: np.ndarray
    target: float = float("nan")
    attrs: dict[str, Any] = field(default_factory=dict)


@dataclass
class MuonRecord:
    """Muons of one volume: generated states, states and hits of the muons leaving the volume, extra per-muon columns.

    ``hits`` is ``{group: {var: (N_kept, n_hits, k)}}``; every array in ``extra`` has ``N_kept`` rows.
    """

    generated: np.ndarray
    final: np.ndarray
    hits: dict[str, dict[str, np.ndarray]]
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def n_generated(self) -> int:
        return int(len(self.generated))

    @property
    def n_kept(self) -> int:
        return int(len(self.final))


# ---------------------------------------------------------------------------------------------------------- atomic
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


# ---------------------------------------------------------------------------------------------------------- HDF5
def _attr_value(val: Any) -> Any:
    if val is None:
        return "null"
    if isinstance(val, (list, tuple)) and all(isinstance(v, str) for v in val):
        return np.array(val, dtype=h5py.string_dtype())
    if isinstance(val, dict):
        return json.dumps(val)
    return val


def _py_attr(val: Any) -> Any:
    if isinstance(val, bytes):
        val = val.decode()
    if isinstance(val, np.ndarray):
        return [v.decode() if isinstance(v, bytes) else v for v in val.tolist()]
    if isinstance(val, np.generic):
        return val.item()
    return None if val == "null" else val


def _write_array(grp: h5py.Group, name: str, arr: np.ndarray) -> None:
    arr = np.asarray(arr)
    opts = _COMPRESSION if arr.ndim >= 1 else {}
    ds = grp.create_dataset(name, data=arr, chunks=True if arr.ndim >= 1 else None, **opts)
    ds.attrs["units"] = UNITS.get(name, "")


def _open_h5(path: PathLike, kind: str) -> h5py.File:
    p = Path(path)
    if not p.is_file():
        raise DataFileError(f"{p}: file not found (run the stage that writes it first)")
    try:
        f = h5py.File(p, "r")
    except OSError as err:
        raise DataFileError(f"{p}: not a readable HDF5 file (truncated or corrupt?): {err}") from err
    try:
        got_kind = _py_attr(f.attrs.get("kind"))
        version = _py_attr(f.attrs.get("schema_version"))
        if got_kind != kind:
            raise DataFileError(f"{p}: expected a {kind!r} file, found kind={got_kind!r}")
        if version != SCHEMA_VERSION:
            raise SchemaVersionError(
                f"{p}: schema_version={version!r} but this code reads schema_version={SCHEMA_VERSION}; "
                "regenerate the file with the current pipeline"
            )
    except BaseException:
        f.close()
        raise
    return f


def _write_h5(path: PathLike, kind: str, attrs: Mapping[str, Any], fill) -> Path:
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as f:
            f.attrs["kind"] = kind
            f.attrs["schema_version"] = SCHEMA_VERSION
            for key, val in attrs.items():
                f.attrs[key] = _attr_value(val)
            fill(f)
    return Path(path)


def read_h5_attrs(path: PathLike, kind: str) -> dict[str, Any]:
    """Root attributes of a checked HDF5 file of ``kind``."""
    with _open_h5(path, kind) as f:
        return {k: _py_attr(v) for k, v in f.attrs.items()}


def write_passives(path: PathLike, records: Sequence[PassiveRecord], attrs: Mapping[str, Any] | None = None) -> Path:
    """Write passive volumes as groups ``vol_000``, ``vol_001``, ... (datasets ``x0``, ``target``)."""

    def fill(f: h5py.File) -> None:
        f.attrs["n_volumes"] = len(records)
        for i, rec in enumerate(records):
            grp = f.create_group(f"vol_{i:03d}")
            _write_array(grp, "x0", np.asarray(rec.x0, dtype=np.float32))
            _write_array(grp, "target", np.asarray(np.nan if rec.target is None else rec.target, dtype=np.float64))
            for key, val in rec.attrs.items():
                grp.attrs[key] = _attr_value(val)

    return _write_h5(path, "passives", attrs or {}, fill)


def _sorted_volumes(f: h5py.File, path: PathLike) -> list[str]:
    names = sorted(k for k in f.keys() if k.startswith("vol_"))
    n = _py_attr(f.attrs.get("n_volumes"))
    if n is not None and n != len(names):
        raise DataFileError(f"{path}: n_volumes={n} but {len(names)} volume groups found (incomplete file)")
    return names


def read_passives(path: PathLike, volume_ids: Sequence[int] | None = None) -> list[PassiveRecord]:
    """Read the passive volumes of a ``passives`` file in order (all, or only the indices ``volume_ids``)."""
    out: list[PassiveRecord] = []
    with _open_h5(path, "passives") as f:
        names = _sorted_volumes(f, path)
        if volume_ids is not None:
            bad = [i for i in volume_ids if not 0 <= int(i) < len(names)]
            if bad:
                raise DataFileError(f"{path}: volume ids {bad} not found ({len(names)} volumes)")
            names = [names[int(i)] for i in volume_ids]
        for name in names:
            grp = f[name]
            attrs = {k: _py_attr(v) for k, v in grp.attrs.items()}
            out.append(PassiveRecord(x0=grp["x0"][()], target=float(grp["target"][()]), attrs=attrs))
    return out


def write_muon_records(path: PathLike, records: Mapping[int, MuonRecord], attrs: Mapping[str, Any] | None = None) -> Path:
    """Write muon records as groups ``vol_<id>`` with ``generated``, ``final``, ``hits/<group>/<var>`` and ``extra/<col>``."""

    def fill(f: h5py.File) -> None:
        f.attrs["n_volumes"] = len(records)
        for vid, rec in sorted(records.items()):
            n = rec.n_kept
            grp = f.create_group(f"vol_{int(vid):03d}")
            grp.attrs["volume_id"] = int(vid)
            for key, val in rec.attrs.items():
                grp.attrs[key] = _attr_value(val)
            _write_array(grp, "generated", np.asarray(rec.generated, dtype=np.float32).reshape(-1, 5))
            _write_array(grp, "final", np.asarray(rec.final, dtype=np.float32).reshape(-1, 6))
            hits = grp.create_group("hits")
            hits.attrs["order"] = np.array(list(rec.hits), dtype=h5py.string_dtype())
            for gname, group in rec.hits.items():
                g = hits.create_group(gname)
                for var, arr in group.items():
                    if len(arr) != n:
                        raise ValueError(f"hits[{gname!r}][{var!r}] has {len(arr)} rows, expected {n}")
                    _write_array(g, var, np.asarray(arr))
            extra = grp.create_group("extra")
            for col, arr in rec.extra.items():
                if len(arr) != n:
                    raise ValueError(f"extra[{col!r}] has {len(arr)} rows, expected {n}")
                _write_array(extra, col, np.asarray(arr))

    return _write_h5(path, "muon_hits", attrs or {}, fill)


def read_muon_records(path: PathLike, volume_ids: Sequence[int] | None = None) -> dict[int, MuonRecord]:
    """Read muon records (all, or only ``volume_ids``) keyed by volume id."""
    out: dict[int, MuonRecord] = {}
    with _open_h5(path, "muon_hits") as f:
        for name in _sorted_volumes(f, path):
            grp = f[name]
            vid = int(_py_attr(grp.attrs["volume_id"]))
            if volume_ids is not None and vid not in volume_ids:
                continue
            try:
                order = _py_attr(grp["hits"].attrs["order"])
                hits = {g: {v: ds[()] for v, ds in grp["hits"][g].items()} for g in order}
                out[vid] = MuonRecord(
                    generated=grp["generated"][()],
                    final=grp["final"][()],
                    hits=hits,
                    extra={k: ds[()] for k, ds in grp["extra"].items()},
                    attrs={k: _py_attr(v) for k, v in grp.attrs.items()},
                )
            except (KeyError, OSError) as err:
                raise DataFileError(f"{path}: group {name} is incomplete or corrupt: {err}") from err
    if volume_ids is not None and set(volume_ids) - set(out):
        raise DataFileError(f"{path}: volume ids {sorted(set(volume_ids) - set(out))} not found")
    return out


# ---------------------------------------------------------------------------------------------------------- Parquet
def write_parquet(df: pd.DataFrame, path: PathLike, metadata: Mapping[str, str] | None = None) -> Path:
    """Write ``df`` (without its index) to Parquet with the schema version and optional extra metadata."""
    table = pa.Table.from_pandas(df, preserve_index=False)
    meta = dict(table.schema.metadata or {})
    meta[_PARQUET_VERSION_KEY] = str(SCHEMA_VERSION).encode()
    for key, val in (metadata or {}).items():
        meta[f"tomoflow.{key}".encode()] = str(val).encode()
    table = table.replace_schema_metadata(meta)
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return Path(path)


def read_parquet(path: PathLike, columns: Sequence[str] | None = None) -> pd.DataFrame:
    """Read a Parquet file written by ``write_parquet``, checking its schema version."""
    p = Path(path)
    if not p.is_file():
        raise DataFileError(f"{p}: file not found (run the stage that writes it first)")
    try:
        pf = pq.ParquetFile(p)
    except (pa.ArrowException, OSError) as err:
        raise DataFileError(f"{p}: not a readable Parquet file (truncated or corrupt?): {err}") from err
    meta = pf.schema_arrow.metadata or {}
    version = meta.get(_PARQUET_VERSION_KEY)
    if version is None or int(version) != SCHEMA_VERSION:
        raise SchemaVersionError(
            f"{p}: schema_version={None if version is None else int(version)} but this code reads "
            f"schema_version={SCHEMA_VERSION}; regenerate the file with the current pipeline"
        )
    try:
        return pf.read(columns=list(columns) if columns is not None else None).to_pandas()
    except (pa.ArrowException, OSError) as err:
        raise DataFileError(f"{p}: could not read the table: {err}") from err


# ---------------------------------------------------------------------------------------------------------- JSON
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
