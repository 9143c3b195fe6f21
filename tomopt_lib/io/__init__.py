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

Modules: :mod:`.schema` (versions, units, errors, checks, records), :mod:`.files` (atomic writes, JSON, torch),
:mod:`.hdf5` (passives, muon hits) and :mod:`.parquet` (tables, ``verify_data_file``).
"""

from .files import atomic_path, read_json, save_torch, write_json
from .hdf5 import read_h5_attrs, read_muon_records, read_passives, write_muon_records, write_passives
from .parquet import read_parquet, verify_data_file, write_parquet
from .schema import (
    SCATTER_COLUMNS,
    SCATTER_SCHEMA,
    SCATTER_TRUE,
    SCATTER_VARS,
    SCHEMA_VERSION,
    TABLE_SCHEMAS,
    UNITS,
    CorruptInputError,
    DataFileError,
    MuonRecord,
    PassiveRecord,
    SchemaVersionError,
    TableSchema,
    check_array,
    check_frame,
)

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
