"""File formats of the pipeline: HDF5 for passive volumes and muon hits, Parquet for scatter tables, JSON/CSV.

Every writer goes to a temporary file in the destination folder and then ``os.replace``s it, so a reader never sees a
half-written file. HDF5 files carry ``schema_version`` and ``kind`` root attributes and a ``units`` attribute on each
dataset; Parquet files carry ``tomoflow.schema_version`` in their schema metadata. Readers raise ``DataFileError`` (or
its subclass ``SchemaVersionError``) with the path and the reason on a missing, foreign or outdated file.

Integrity: every HDF5 dataset is chunked with the Fletcher32 checksum filter and the file's metadata is written in the
HDF5 1.10 format (checksummed object headers and chunk indices); Parquet files carry CRC32 page checksums. Readers
verify them and check the shape, dtype and finiteness of what they return (``check_array`` / ``check_frame``): a
truncated file, a flipped byte, a wrong-shaped dataset, a dropped column or NaN where a value must be raises
``CorruptInputError`` (a ``DataFileError`` and a ``ValueError``) naming the file and the problem, in the time it takes
to read the file. Files written before checksums were added still read (their content checks still apply).
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
    "CorruptInputError",
    "TableSchema",
    "SCATTER_VARS",
    "SCATTER_TRUE",
    "SCATTER_COLUMNS",
    "SCATTER_SCHEMA",
    "TABLE_SCHEMAS",
    "check_array",
    "check_frame",
    "verify_data_file",
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
_H5_LIBVER = ("v110", "latest")
"""HDF5 file-format bounds: the 1.10 format checksums object headers and chunk indices (metadata), not only data."""


class DataFileError(RuntimeError):
    """A data file is missing, truncated, unreadable or of the wrong kind."""


class SchemaVersionError(DataFileError):
    """A data file was written with another ``schema_version``."""


class CorruptInputError(DataFileError, ValueError):
    """A data file's content is damaged or not what its reader expects: a checksum mismatch, a truncated or undecodable
    file, a wrong shape, dtype or column, a non-integer schema version, NaN where a value must be. The message names
    the file and the problem; re-run the stage that writes the file."""


# ---------------------------------------------------------------------------------------------------------- checks
_RERUN = "re-run the stage that writes it"


def check_array(
    path: PathLike,
    name: str,
    arr: Any,
    *,
    shape: Sequence[int | None] | None = None,
    kind: str = "f",
    nan: bool = False,
    inf: bool = False,
) -> np.ndarray:
    """``arr`` as an array, checked: ``shape`` (``None`` entries match any length), dtype kind (``"f"`` float, ``"i"``
    integer (also accepts ``"u"``), ``"b"`` bool, ``""`` any), and for floats no NaN unless ``nan``, no +-inf unless
    ``inf``. Raises ``CorruptInputError`` naming ``path`` and the dataset/column ``name``."""
    a = np.asarray(arr)
    if shape is not None and (a.ndim != len(shape) or any(w is not None and w != g for w, g in zip(shape, a.shape))):
        want = "(" + ", ".join("n" if w is None else str(w) for w in shape) + ("," if len(shape) == 1 else "") + ")"
        raise CorruptInputError(f"{path}: {name} has shape {a.shape}, expected {want} ({_RERUN})")
    kinds = {"f": "f", "i": "iu", "b": "b"}.get(kind, "")
    if kinds and a.dtype.kind not in kinds:
        what = {"f": "floating-point", "i": "integer", "b": "boolean"}[kind]
        raise CorruptInputError(f"{path}: {name} has dtype {a.dtype}, expected {what} ({_RERUN})")
    if a.dtype.kind == "f" and a.size and not (nan and inf):
        n_nan = int(np.isnan(a).sum()) if not nan else 0
        n_inf = int(np.isinf(a).sum()) if not inf else 0
        if n_nan or n_inf:
            what = " and ".join(f"{n} {w}" for n, w in ((n_nan, "NaN"), (n_inf, "infinite")) if n)
            allowed = "finite values" if not (nan or inf) else ("no NaN" if not nan else "no infinite values")
            all_bad = " (all of them)" if n_nan + n_inf == a.size else ""
            raise CorruptInputError(
                f"{path}: {name} has {what} values of {a.size}{all_bad}, expected {allowed} (corrupt file; {_RERUN})"
            )
    return a


@dataclass(frozen=True)
class TableSchema:
    """What a Parquet table must hold: ``dtypes`` (column -> numpy dtype name; extra columns are allowed), ``finite``
    (columns finite in every row) and ``finite_where`` (``(flag column, columns)``: no NaN in those columns where the
    boolean flag column is true)."""

    dtypes: Mapping[str, str]
    finite: tuple[str, ...] = ()
    finite_where: tuple[str, tuple[str, ...]] | None = None


def check_frame(path: PathLike, df: pd.DataFrame, schema: TableSchema) -> pd.DataFrame:
    """Check ``df`` (read from ``path``) against ``schema``: every column present with its dtype, finiteness rules.
    Raises ``CorruptInputError`` naming the file and the first problem."""
    missing = [c for c in schema.dtypes if c not in df.columns]
    if missing:
        raise CorruptInputError(f"{path}: missing column(s) {', '.join(missing)} ({_RERUN})")
    wrong = [f"{c} ({df[c].dtype}, expected {t})" for c, t in schema.dtypes.items() if df[c].dtype != np.dtype(t)]
    if wrong:
        raise CorruptInputError(f"{path}: wrong column dtype(s): {', '.join(wrong)} ({_RERUN})")
    for col in schema.finite:
        check_array(path, f"column {col}", df[col].to_numpy(), shape=(None,), kind="")
    if schema.finite_where is not None:
        flag, cols = schema.finite_where
        sel = df[flag].to_numpy(bool)
        for col in cols:
            check_array(path, f"column {col} (rows with {flag})", df[col].to_numpy()[sel], shape=(None,), kind="", inf=True)
    return df


# scatter variable -> column names (one per component); every one also gets "<column>_unc"
SCATTER_VARS: dict[str, list[str]] = {
    "poca_xyz": ["poca_x", "poca_y", "poca_z"],
    "total_scatter": ["total_scatter"],
    "theta_in": ["theta_in"],
    "theta_out": ["theta_out"],
    "phi_in": ["phi_in"],
    "phi_out": ["phi_out"],
    "dtheta": ["dtheta"],
    "dphi": ["dphi"],
    "dxy": ["dx", "dy"],
    "xyz_in": ["x_in", "y_in", "z_in"],
    "xyz_out": ["x_out", "y_out", "z_out"],
}
"""Reconstructed scatter variables of ``data/scatters.parquet`` -> their columns."""
SCATTER_TRUE: list[str] = ["true_theta_in", "true_theta_out", "true_total_scatter"]
_SCATTER_FLAT = [c for cols in SCATTER_VARS.values() for c in cols]
SCATTER_COLUMNS: dict[str, str] = {
    "volume_id": "int32",
    "muon_id": "int64",
    "chunk": "int32",
    "mom": "float32",
    "reco_ok": "bool",
    "poca_inside": "bool",
    **{c: "float32" for c in _SCATTER_FLAT},
    **{f"{c}_unc": "float32" for c in _SCATTER_FLAT},
    **{c: "float32" for c in SCATTER_TRUE},
}
"""Columns of ``data/scatters.parquet`` (one row per muon that left the volume; NaN where not reconstructed)."""
SCATTER_SCHEMA = TableSchema(
    SCATTER_COLUMNS,
    finite=("mom",),
    finite_where=("reco_ok", tuple([*_SCATTER_FLAT, *(f"{c}_unc" for c in _SCATTER_FLAT)])),
)
"""The scatter table's checks: every column, finite momenta, no NaN in the reconstructed rows' variables."""
_TABLE_KEY = b"tomoflow.table"
TABLE_SCHEMAS: dict[str, TableSchema] = {"scatters": SCATTER_SCHEMA}
"""Schemas by table name: ``write_parquet(..., metadata={"table": name})`` records it, ``verify_data_file`` checks it."""


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
    """A chunked, compressed dataset with the Fletcher32 checksum filter (scalars are stored with shape (1,))."""
    arr = np.asarray(arr)
    if arr.ndim == 0:
        arr = arr.reshape(1)
    ds = grp.create_dataset(name, data=arr, chunks=True, fletcher32=True, **_COMPRESSION)
    ds.attrs["units"] = UNITS.get(name, "")


def _read_array(path: PathLike, ds: h5py.Dataset) -> np.ndarray:
    """The data of ``ds`` (its Fletcher32 checksums verified by HDF5 where written); ``CorruptInputError`` if it cannot
    be read or decoded."""
    try:
        return np.asarray(ds[()])
    except (OSError, RuntimeError, ValueError, KeyError) as err:
        raise CorruptInputError(
            f"{path}: dataset {ds.name} fails its checksum or cannot be decoded ({err}); corrupt file, {_RERUN}"
        ) from err


def _dataset(path: PathLike, grp: h5py.Group, name: str) -> h5py.Dataset:
    try:
        obj = grp[name]
    except (KeyError, OSError, RuntimeError, ValueError) as err:
        raise CorruptInputError(f"{path}: {grp.name.rstrip('/')}/{name} is missing or unreadable ({err}); {_RERUN}") from err
    if not isinstance(obj, h5py.Dataset):
        raise CorruptInputError(f"{path}: {obj.name} is not a dataset ({_RERUN})")
    return obj


def _group(path: PathLike, f: h5py.File, name: str) -> h5py.Group:
    try:
        grp = f[name]
    except (KeyError, OSError, RuntimeError, ValueError) as err:
        raise CorruptInputError(f"{path}: group {name} is unreadable ({err}); corrupt file, {_RERUN}") from err
    if not isinstance(grp, h5py.Group):
        raise CorruptInputError(f"{path}: {name} is not a group ({_RERUN})")
    return grp


def _check_version(p: Path, version: Any) -> None:
    if isinstance(version, bool) or not isinstance(version, (int, np.integer)):
        raise CorruptInputError(f"{p}: schema_version={version!r} is not an integer (corrupt or foreign file; {_RERUN})")
    if version != SCHEMA_VERSION:
        raise SchemaVersionError(
            f"{p}: schema_version={version!r} but this code reads schema_version={SCHEMA_VERSION}; "
            "regenerate the file with the current pipeline"
        )


def _open_h5(path: PathLike, kind: str) -> h5py.File:
    p = Path(path)
    if not p.is_file():
        raise DataFileError(f"{p}: file not found (run the stage that writes it first)")
    try:
        f = h5py.File(p, "r")
    except (OSError, RuntimeError, ValueError) as err:
        raise CorruptInputError(f"{p}: not a readable HDF5 file (truncated or corrupt?): {err}; {_RERUN}") from err
    try:
        try:
            got_kind = _py_attr(f.attrs.get("kind"))
            version = _py_attr(f.attrs.get("schema_version"))
        except (OSError, RuntimeError, ValueError, KeyError) as err:
            raise CorruptInputError(f"{p}: unreadable root attributes (corrupt file?): {err}; {_RERUN}") from err
        if got_kind != kind:
            raise DataFileError(f"{p}: expected a {kind!r} file, found kind={got_kind!r}")
        _check_version(p, version)
    except BaseException:
        f.close()
        raise
    return f


def _write_h5(path: PathLike, kind: str, attrs: Mapping[str, Any], fill) -> Path:
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w", libver=_H5_LIBVER) as f:
            f.attrs["kind"] = kind
            f.attrs["schema_version"] = SCHEMA_VERSION
            for key, val in attrs.items():
                f.attrs[key] = _attr_value(val)
            fill(f)
    return Path(path)


def read_h5_attrs(path: PathLike, kind: str) -> dict[str, Any]:
    """Root attributes of a checked HDF5 file of ``kind``."""
    with _open_h5(path, kind) as f:
        try:
            return {k: _py_attr(v) for k, v in f.attrs.items()}
        except (OSError, RuntimeError, ValueError, KeyError) as err:
            raise CorruptInputError(f"{path}: unreadable root attributes (corrupt file?): {err}; {_RERUN}") from err


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
    try:
        names = sorted(k for k in f.keys() if k.startswith("vol_"))
        n = _py_attr(f.attrs.get("n_volumes"))
    except (KeyError, OSError, RuntimeError, ValueError) as err:
        raise CorruptInputError(f"{path}: unreadable group index (corrupt file?): {err}; {_RERUN}") from err
    if n is not None and n != len(names):
        raise DataFileError(f"{path}: n_volumes={n} but {len(names)} volume groups found (incomplete file)")
    return names


def read_passives(
    path: PathLike,
    volume_ids: Sequence[int] | None = None,
    *,
    shape: Sequence[int] | None = None,
    finite: bool = True,
) -> list[PassiveRecord]:
    """Read the passive volumes of a ``passives`` file in order (all, or only the indices ``volume_ids``).

    Each ``x0`` must be a 3-D float cube (of ``shape`` (z, x, y) if given, else all of one shape), with ``finite``
    values > 0 (``finite=False`` for prediction files, NaN where a volume got no muons); ``target`` a float scalar.
    ``CorruptInputError`` otherwise."""
    out: list[PassiveRecord] = []
    with _open_h5(path, "passives") as f:
        names = _sorted_volumes(f, path)
        if volume_ids is not None:
            bad = [i for i in volume_ids if not 0 <= int(i) < len(names)]
            if bad:
                raise DataFileError(f"{path}: volume ids {bad} not found ({len(names)} volumes)")
            names = [names[int(i)] for i in volume_ids]
        want = None if shape is None else tuple(int(n) for n in shape)
        for name in names:
            grp = _group(path, f, name)
            try:
                attrs = {k: _py_attr(v) for k, v in grp.attrs.items()}
            except (OSError, RuntimeError, ValueError, KeyError) as err:
                raise CorruptInputError(f"{path}: unreadable attributes of {name} ({err}); {_RERUN}") from err
            x0 = _read_array(path, _dataset(path, grp, "x0"))
            x0 = check_array(path, f"{name}/x0", x0, shape=want or (None, None, None), nan=not finite, inf=not finite)
            want = want or x0.shape
            if finite and x0.size and not bool((x0 > 0).all()):
                raise CorruptInputError(f"{path}: {name}/x0 has values <= 0, expected radiation lengths > 0 ({_RERUN})")
            target = check_array(path, f"{name}/target", _read_array(path, _dataset(path, grp, "target")), nan=True, inf=True)
            if target.size != 1:
                raise CorruptInputError(f"{path}: {name}/target has shape {target.shape}, expected a scalar ({_RERUN})")
            out.append(PassiveRecord(x0=x0, target=float(target.reshape(-1)[0]), attrs=attrs))
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
            grp = _group(path, f, name)
            try:
                vid = int(_py_attr(grp.attrs["volume_id"]))
            except (KeyError, OSError, RuntimeError, ValueError, TypeError) as err:
                raise CorruptInputError(f"{path}: group {name} has no readable integer volume_id ({err}); {_RERUN}") from err
            if volume_ids is not None and vid not in volume_ids:
                continue
            out[vid] = _read_muon_group(path, grp)
    if volume_ids is not None and set(volume_ids) - set(out):
        raise DataFileError(f"{path}: volume ids {sorted(set(volume_ids) - set(out))} not found")
    return out


def _read_muon_group(path: PathLike, grp: h5py.Group) -> MuonRecord:
    """One ``vol_<id>`` group, every dataset read (checksums verified) and checked: ``generated`` (n_gen, 5) and
    ``final`` (n, 6) finite floats with n <= n_gen, hits (n, n_hits, k) floats without NaN (infinite: a missed
    panel), extras with n rows."""
    name = grp.name.lstrip("/")
    try:
        attrs = {k: _py_attr(v) for k, v in grp.attrs.items()}
        hits_grp = grp["hits"]
        order = _py_attr(hits_grp.attrs["order"])
        extra_grp = grp["extra"]
        if not isinstance(order, list) or not all(isinstance(g, str) for g in order):
            raise ValueError(f"hits order attribute {order!r} is not a list of group names")
        hit_items = {g: list(hits_grp[g].items()) for g in order}
        extra_items = list(extra_grp.items())
    except (KeyError, OSError, RuntimeError, ValueError, TypeError) as err:
        raise CorruptInputError(f"{path}: group {name} is incomplete or corrupt: {err}; {_RERUN}") from err
    generated = check_array(path, f"{name}/generated", _read_array(path, _dataset(path, grp, "generated")), shape=(None, 5))
    final = check_array(path, f"{name}/final", _read_array(path, _dataset(path, grp, "final")), shape=(None, 6))
    n = len(final)
    if n > len(generated):
        raise CorruptInputError(f"{path}: {name} has {n} final states but only {len(generated)} generated muons ({_RERUN})")
    hits: dict[str, dict[str, np.ndarray]] = {}
    for g, items in hit_items.items():
        hits[g] = {}
        for var, ds in items:
            if not isinstance(ds, h5py.Dataset):
                raise CorruptInputError(f"{path}: {ds.name} is not a dataset ({_RERUN})")
            arr = _read_array(path, ds)
            hits[g][var] = check_array(path, f"{name}/hits/{g}/{var}", arr, shape=(n, None, None), inf=True)
    extra: dict[str, np.ndarray] = {}
    for col, ds in extra_items:
        if not isinstance(ds, h5py.Dataset):
            raise CorruptInputError(f"{path}: {ds.name} is not a dataset ({_RERUN})")
        extra[col] = check_array(path, f"{name}/extra/{col}", _read_array(path, ds), shape=(n,), kind="", nan=True, inf=True)
    if "chunk" in extra:
        check_array(path, f"{name}/extra/chunk", extra["chunk"], kind="i")
    return MuonRecord(generated=generated, final=final, hits=hits, extra=extra, attrs=attrs)


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
        pq.write_table(table, tmp, compression="zstd", write_page_checksum=True)
    return Path(path)


def read_parquet(path: PathLike, columns: Sequence[str] | None = None, schema: TableSchema | None = None) -> pd.DataFrame:
    """Read a Parquet file written by ``write_parquet``, checking its schema version and its page checksums (files
    written without checksums still read), and, with ``schema``, its columns, dtypes and finiteness
    (``check_frame``). ``CorruptInputError`` on a damaged file or content that fails the checks."""
    p = Path(path)
    if not p.is_file():
        raise DataFileError(f"{p}: file not found (run the stage that writes it first)")
    try:
        pf = pq.ParquetFile(p, page_checksum_verification=True)
        meta = pf.schema_arrow.metadata or {}
    except (pa.ArrowException, OSError, ValueError) as err:
        raise CorruptInputError(f"{p}: not a readable Parquet file (truncated or corrupt?): {err}; {_RERUN}") from err
    raw = meta.get(_PARQUET_VERSION_KEY)
    if raw is None:
        raise SchemaVersionError(
            f"{p}: schema_version=None but this code reads schema_version={SCHEMA_VERSION}; "
            "regenerate the file with the current pipeline"
        )
    try:
        version: Any = int(raw)
    except ValueError:
        version = raw.decode(errors="replace")
    _check_version(p, version)
    if schema is not None and columns is not None:
        schema = TableSchema({c: t for c, t in schema.dtypes.items() if c in columns})
    try:
        df = pf.read(columns=list(columns) if columns is not None else None).to_pandas()
    except (pa.ArrowException, OSError, ValueError) as err:
        raise CorruptInputError(
            f"{p}: could not read the table (page checksum mismatch or corrupt data): {err}; {_RERUN}"
        ) from err
    return df if schema is None else check_frame(p, df, schema)


def _verify_parquet(p: Path) -> None:
    try:
        pf = pq.ParquetFile(p, page_checksum_verification=True)
        for i in range(pf.num_row_groups):
            pf.read_row_group(i)
    except (pa.ArrowException, OSError, ValueError) as err:
        raise CorruptInputError(f"{p}: damaged Parquet file (page checksum mismatch or corrupt data): {err}; {_RERUN}") from err


def verify_data_file(path: PathLike) -> None:
    """Read every byte of the pipeline data file ``path`` (HDF5 ``passives`` / ``muon_hits``, Parquet) and run its
    reader's checks, one volume at a time; other files are skipped. ``DataFileError`` (``CorruptInputError`` for
    damaged content) naming the file and the problem. The CLI runs it on a stage's inputs before the stage starts."""
    p = Path(path)
    if p.suffix == ".parquet":
        read_parquet(p, columns=[])  # existence, footer and schema version
        _verify_parquet(p)
        table = (pq.read_schema(p).metadata or {}).get(_TABLE_KEY, b"").decode(errors="replace")
        if table in TABLE_SCHEMAS:
            read_parquet(p, schema=TABLE_SCHEMAS[table])
        return
    if p.suffix not in (".h5", ".hdf5"):
        return
    kind = _peek_kind(p)
    if kind == "passives":
        read_passives(p)
    elif kind == "muon_hits":
        with _open_h5(p, kind) as f:
            for name in _sorted_volumes(f, p):
                _read_muon_group(p, _group(p, f, name))  # one volume in memory at a time
    else:
        raise DataFileError(f"{p}: kind={kind!r} is not a data file of this pipeline (expected 'passives' or 'muon_hits')")


def _peek_kind(p: Path) -> Any:
    if not p.is_file():
        raise DataFileError(f"{p}: file not found (run the stage that writes it first)")
    try:
        with h5py.File(p, "r") as f:
            return _py_attr(f.attrs.get("kind"))
    except (OSError, RuntimeError, ValueError, KeyError) as err:
        raise CorruptInputError(f"{p}: not a readable HDF5 file (truncated or corrupt?): {err}; {_RERUN}") from err


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
