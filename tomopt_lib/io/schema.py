"""Schemas and checks of the pipeline's data files: schema version, units, error types, array / table checks, the
scatter table's columns and the passive / muon records (see :mod:`tomopt_lib.io`)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "PathLike",
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
    "check_version",
    "PassiveRecord",
    "MuonRecord",
    "RERUN",
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


class DataFileError(RuntimeError):
    """A data file is missing, truncated, unreadable or of the wrong kind."""


class SchemaVersionError(DataFileError):
    """A data file was written with another ``schema_version``."""


class CorruptInputError(DataFileError, ValueError):
    """A data file's content is damaged or not what its reader expects: a checksum mismatch, a truncated or undecodable
    file, a wrong shape, dtype or column, a non-integer schema version, NaN where a value must be. The message names
    the file and the problem; re-run the stage that writes the file."""


RERUN = "re-run the stage that writes it"


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
        raise CorruptInputError(f"{path}: {name} has shape {a.shape}, expected {want} ({RERUN})")
    kinds = {"f": "f", "i": "iu", "b": "b"}.get(kind, "")
    if kinds and a.dtype.kind not in kinds:
        what = {"f": "floating-point", "i": "integer", "b": "boolean"}[kind]
        raise CorruptInputError(f"{path}: {name} has dtype {a.dtype}, expected {what} ({RERUN})")
    if a.dtype.kind == "f" and a.size and not (nan and inf):
        n_nan = int(np.isnan(a).sum()) if not nan else 0
        n_inf = int(np.isinf(a).sum()) if not inf else 0
        if n_nan or n_inf:
            what = " and ".join(f"{n} {w}" for n, w in ((n_nan, "NaN"), (n_inf, "infinite")) if n)
            allowed = "finite values" if not (nan or inf) else ("no NaN" if not nan else "no infinite values")
            all_bad = " (all of them)" if n_nan + n_inf == a.size else ""
            raise CorruptInputError(
                f"{path}: {name} has {what} values of {a.size}{all_bad}, expected {allowed} (corrupt file; {RERUN})"
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
        raise CorruptInputError(f"{path}: missing column(s) {', '.join(missing)} ({RERUN})")
    wrong = [f"{c} ({df[c].dtype}, expected {t})" for c, t in schema.dtypes.items() if df[c].dtype != np.dtype(t)]
    if wrong:
        raise CorruptInputError(f"{path}: wrong column dtype(s): {', '.join(wrong)} ({RERUN})")
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


def check_version(p: Path, version: Any) -> None:
    """``CorruptInputError`` for a non-integer ``schema_version``, ``SchemaVersionError`` for another version."""
    if isinstance(version, bool) or not isinstance(version, (int, np.integer)):
        raise CorruptInputError(f"{p}: schema_version={version!r} is not an integer (corrupt or foreign file; {RERUN})")
    if version != SCHEMA_VERSION:
        raise SchemaVersionError(
            f"{p}: schema_version={version!r} but this code reads schema_version={SCHEMA_VERSION}; "
            "regenerate the file with the current pipeline"
        )
