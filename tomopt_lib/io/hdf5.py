"""HDF5 files of the pipeline: passive volumes and muon hits (checksummed, versioned; see :mod:`tomopt_lib.io`)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .files import atomic_path
from .schema import (
    RERUN,
    SCHEMA_VERSION,
    UNITS,
    CorruptInputError,
    DataFileError,
    MuonRecord,
    PassiveRecord,
    PathLike,
    check_array,
    check_version,
)

__all__ = ["write_passives", "read_passives", "write_muon_records", "read_muon_records", "read_h5_attrs", "verify_h5_file"]

_COMPRESSION = dict(compression="gzip", compression_opts=4, shuffle=True)
_H5_LIBVER = ("v110", "latest")
"""HDF5 file-format bounds: the 1.10 format checksums object headers and chunk indices (metadata), not only data."""


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
            f"{path}: dataset {ds.name} fails its checksum or cannot be decoded ({err}); corrupt file, {RERUN}"
        ) from err


def _dataset(path: PathLike, grp: h5py.Group, name: str) -> h5py.Dataset:
    try:
        obj = grp[name]
    except (KeyError, OSError, RuntimeError, ValueError) as err:
        raise CorruptInputError(f"{path}: {grp.name.rstrip('/')}/{name} is missing or unreadable ({err}); {RERUN}") from err
    if not isinstance(obj, h5py.Dataset):
        raise CorruptInputError(f"{path}: {obj.name} is not a dataset ({RERUN})")
    return obj


def _group(path: PathLike, f: h5py.File, name: str) -> h5py.Group:
    try:
        grp = f[name]
    except (KeyError, OSError, RuntimeError, ValueError) as err:
        raise CorruptInputError(f"{path}: group {name} is unreadable ({err}); corrupt file, {RERUN}") from err
    if not isinstance(grp, h5py.Group):
        raise CorruptInputError(f"{path}: {name} is not a group ({RERUN})")
    return grp


def _open_h5(path: PathLike, kind: str) -> h5py.File:
    p = Path(path)
    if not p.is_file():
        raise DataFileError(f"{p}: file not found (run the stage that writes it first)")
    try:
        f = h5py.File(p, "r")
    except (OSError, RuntimeError, ValueError) as err:
        raise CorruptInputError(f"{p}: not a readable HDF5 file (truncated or corrupt?): {err}; {RERUN}") from err
    try:
        try:
            got_kind = _py_attr(f.attrs.get("kind"))
            version = _py_attr(f.attrs.get("schema_version"))
        except (OSError, RuntimeError, ValueError, KeyError) as err:
            raise CorruptInputError(f"{p}: unreadable root attributes (corrupt file?): {err}; {RERUN}") from err
        if got_kind != kind:
            raise DataFileError(f"{p}: expected a {kind!r} file, found kind={got_kind!r}")
        check_version(p, version)
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
            raise CorruptInputError(f"{path}: unreadable root attributes (corrupt file?): {err}; {RERUN}") from err


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
        raise CorruptInputError(f"{path}: unreadable group index (corrupt file?): {err}; {RERUN}") from err
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
                raise CorruptInputError(f"{path}: unreadable attributes of {name} ({err}); {RERUN}") from err
            x0 = _read_array(path, _dataset(path, grp, "x0"))
            x0 = check_array(path, f"{name}/x0", x0, shape=want or (None, None, None), nan=not finite, inf=not finite)
            want = want or x0.shape
            if finite and x0.size and not bool((x0 > 0).all()):
                raise CorruptInputError(f"{path}: {name}/x0 has values <= 0, expected radiation lengths > 0 ({RERUN})")
            target = check_array(path, f"{name}/target", _read_array(path, _dataset(path, grp, "target")), nan=True, inf=True)
            if target.size != 1:
                raise CorruptInputError(f"{path}: {name}/target has shape {target.shape}, expected a scalar ({RERUN})")
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
                raise CorruptInputError(f"{path}: group {name} has no readable integer volume_id ({err}); {RERUN}") from err
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
        raise CorruptInputError(f"{path}: group {name} is incomplete or corrupt: {err}; {RERUN}") from err
    generated = check_array(path, f"{name}/generated", _read_array(path, _dataset(path, grp, "generated")), shape=(None, 5))
    final = check_array(path, f"{name}/final", _read_array(path, _dataset(path, grp, "final")), shape=(None, 6))
    n = len(final)
    if n > len(generated):
        raise CorruptInputError(f"{path}: {name} has {n} final states but only {len(generated)} generated muons ({RERUN})")
    hits: dict[str, dict[str, np.ndarray]] = {}
    for g, items in hit_items.items():
        hits[g] = {}
        for var, ds in items:
            if not isinstance(ds, h5py.Dataset):
                raise CorruptInputError(f"{path}: {ds.name} is not a dataset ({RERUN})")
            arr = _read_array(path, ds)
            hits[g][var] = check_array(path, f"{name}/hits/{g}/{var}", arr, shape=(n, None, None), inf=True)
    extra: dict[str, np.ndarray] = {}
    for col, ds in extra_items:
        if not isinstance(ds, h5py.Dataset):
            raise CorruptInputError(f"{path}: {ds.name} is not a dataset ({RERUN})")
        extra[col] = check_array(path, f"{name}/extra/{col}", _read_array(path, ds), shape=(n,), kind="", nan=True, inf=True)
    if "chunk" in extra:
        check_array(path, f"{name}/extra/chunk", extra["chunk"], kind="i")
    return MuonRecord(generated=generated, final=final, hits=hits, extra=extra, attrs=attrs)


def verify_h5_file(p: Path) -> None:
    """Read every dataset of the pipeline HDF5 file ``p`` (``passives`` / ``muon_hits``) through its reader's checks,
    one volume at a time; ``DataFileError`` for any other kind."""
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
        raise CorruptInputError(f"{p}: not a readable HDF5 file (truncated or corrupt?): {err}; {RERUN}") from err
