"""Parquet tables of the pipeline (page-checksummed, versioned) and the whole-file check ``verify_data_file`` (see
:mod:`tomopt_lib.io`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from .files import atomic_path
from .hdf5 import verify_h5_file
from .schema import (
    _PARQUET_VERSION_KEY,
    _TABLE_KEY,
    RERUN,
    SCHEMA_VERSION,
    TABLE_SCHEMAS,
    CorruptInputError,
    DataFileError,
    PathLike,
    SchemaVersionError,
    TableSchema,
    check_frame,
    check_version,
)

__all__ = ["write_parquet", "read_parquet", "verify_data_file"]


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
        raise CorruptInputError(f"{p}: not a readable Parquet file (truncated or corrupt?): {err}; {RERUN}") from err
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
    check_version(p, version)
    if schema is not None and columns is not None:
        schema = TableSchema({c: t for c, t in schema.dtypes.items() if c in columns})
    try:
        df = pf.read(columns=list(columns) if columns is not None else None).to_pandas()
    except (pa.ArrowException, OSError, ValueError) as err:
        raise CorruptInputError(
            f"{p}: could not read the table (page checksum mismatch or corrupt data): {err}; {RERUN}"
        ) from err
    return df if schema is None else check_frame(p, df, schema)


def _verify_parquet(p: Path) -> None:
    try:
        pf = pq.ParquetFile(p, page_checksum_verification=True)
        for i in range(pf.num_row_groups):
            pf.read_row_group(i)
    except (pa.ArrowException, OSError, ValueError) as err:
        raise CorruptInputError(f"{p}: damaged Parquet file (page checksum mismatch or corrupt data): {err}; {RERUN}") from err


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
    verify_h5_file(p)
