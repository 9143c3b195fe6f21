"""Corrupted inputs (issue 14, item 3): checksums written and verified, shapes / columns / dtypes / finiteness checked.

Every damaged file gives one ``CorruptInputError`` (a ``DataFileError`` and a ``ValueError``) naming the file and the
problem, within seconds (each read runs under a timeout); the CLI turns it into one line and exit status 1 before
anything is written. Tiny files are built with the writers of ``tomopt_lib.io``, not by running the pipeline.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import Cli, tiny_params

from tomopt_lib.io import (
    SCATTER_COLUMNS,
    SCATTER_SCHEMA,
    CorruptInputError,
    DataFileError,
    MuonRecord,
    PassiveRecord,
    read_muon_records,
    read_parquet,
    read_passives,
    verify_data_file,
    write_muon_records,
    write_parquet,
    write_passives,
)

TIMEOUT_S = 10.0


def _error_within(fn: Callable[[], Any], timeout: float = TIMEOUT_S) -> BaseException | None:
    """Run ``fn`` in a daemon thread; the exception it raised (None if it returned); fail if it runs past ``timeout``."""
    out: dict[str, BaseException | None] = {"err": None}

    def target() -> None:
        try:
            fn()
        except BaseException as err:  # noqa: BLE001 - handed to the test
            out["err"] = err

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), f"still running after {timeout} s (hang)"
    return out["err"]


def _corrupt(fn: Callable[[], Any], *fragments: str) -> CorruptInputError:
    err = _error_within(fn)
    assert isinstance(err, CorruptInputError), f"expected CorruptInputError, got {err!r}"
    assert isinstance(err, ValueError) and isinstance(err, DataFileError)
    msg = str(err)
    assert "\n" not in msg and "re-run" in msg, msg
    for frag in fragments:
        assert frag in msg, (frag, msg)
    return err


def _flip(path: Path, offset: int, n: int = 4096) -> None:
    data = bytearray(path.read_bytes())
    data[offset : offset + n] = bytes(b ^ 0xFF for b in data[offset : offset + n])
    path.write_bytes(bytes(data))


# ------------------------------------------------------------------------------------------------ irradiated.h5
def _muons(n: int = 600, n_vol: int = 2, seed: int = 0) -> dict[int, MuonRecord]:
    rng = np.random.default_rng(seed)
    out = {}
    for vid in range(n_vol):
        reco = rng.normal(size=(n, 4, 3)).astype(np.float32)
        reco[0, 1, :2] = np.inf  # a missed panel is allowed
        hits = {
            "above": {"reco_xyz": reco, "unc_xyz": np.ones((n, 4, 3), np.float32), "eff": np.ones((n, 4, 1), np.float32)},
            "below": {"reco_xyz": rng.normal(size=(n, 4, 3)).astype(np.float32)},
        }
        extra = {"chunk": np.zeros(n, np.int32), "true_total_scatter": rng.random(n).astype(np.float32)}
        gen = rng.normal(size=(n + 10, 5)).astype(np.float32)
        out[vid] = MuonRecord(generated=gen, final=rng.normal(size=(n, 6)).astype(np.float32), hits=hits, extra=extra)
    return out


@pytest.fixture
def irradiated(tmp_path: Path) -> Path:
    path = write_muon_records(tmp_path / "data" / "irradiated.h5", _muons(), attrs={"n_generated": 1220})
    with h5py.File(path) as f:
        ds = f["vol_000/hits/above/reco_xyz"]
        assert ds.fletcher32 and ds.chunks is not None and ds.compression == "gzip"
        assert f["vol_001/generated"].fletcher32
    return path


@pytest.mark.parametrize("where", [0.5, 0.3, 0.7])
def test_flipped_4k_block_in_irradiated_is_a_clear_error(irradiated: Path, where: float) -> None:
    _flip(irradiated, int(irradiated.stat().st_size * where))
    _corrupt(lambda: read_muon_records(irradiated), str(irradiated))
    _corrupt(lambda: verify_data_file(irradiated), str(irradiated))


def test_truncated_irradiated_is_a_clear_error(irradiated: Path) -> None:
    irradiated.write_bytes(irradiated.read_bytes()[: irradiated.stat().st_size // 2])
    _corrupt(lambda: read_muon_records(irradiated), "truncated or corrupt")


def test_nan_hits_and_wrong_shapes_in_irradiated(tmp_path: Path) -> None:
    recs = _muons(50, 1)
    recs[0].hits["above"]["reco_xyz"][:] = np.nan
    path = write_muon_records(tmp_path / "nan.h5", recs)
    _corrupt(lambda: read_muon_records(path), "vol_000/hits/above/reco_xyz", "NaN", "(all of them)")
    with h5py.File(path := write_muon_records(tmp_path / "shape.h5", _muons(50, 1)), "a") as f:
        del f["vol_000/final"]
        f["vol_000/final"] = np.zeros((50, 4), np.float32)
    _corrupt(lambda: read_muon_records(path), "vol_000/final has shape (50, 4), expected (n, 6)")
    with h5py.File(path, "a") as f:
        del f["vol_000/final"]
    _corrupt(lambda: read_muon_records(path), "vol_000/final is missing")


# ------------------------------------------------------------------------------------------------ scatters.parquet
def _scatters(n: int = 3000, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    data: dict[str, np.ndarray] = {}
    for col, dtype in SCATTER_COLUMNS.items():
        if dtype == "bool":
            data[col] = rng.random(n) < 0.5
        elif dtype.startswith("int"):
            data[col] = np.zeros(n, dtype)
        else:
            data[col] = rng.random(n).astype(dtype)
    df = pd.DataFrame(data)
    df.loc[~df["reco_ok"], "total_scatter"] = np.nan  # NaN where not reconstructed is allowed
    return df


@pytest.fixture
def scatters(tmp_path: Path) -> Path:
    return write_parquet(_scatters(), tmp_path / "data" / "scatters.parquet", metadata={"table": "scatters"})


def test_scatters_round_trip_with_checks(scatters: Path) -> None:
    df = read_parquet(scatters, schema=SCATTER_SCHEMA)
    pd.testing.assert_frame_equal(df, _scatters())
    verify_data_file(scatters)


@pytest.mark.parametrize("where", [0.5, 0.25])
def test_flipped_bytes_in_scatters_are_a_clear_error(scatters: Path, where: float) -> None:
    _flip(scatters, int(scatters.stat().st_size * where), 64)
    _corrupt(lambda: read_parquet(scatters, schema=SCATTER_SCHEMA), str(scatters))
    _corrupt(lambda: verify_data_file(scatters), str(scatters))


def test_dropped_column_and_nan_angles_in_scatters(tmp_path: Path) -> None:
    dropped = write_parquet(_scatters().drop(columns=["poca_z"]), tmp_path / "dropped.parquet", metadata={"table": "scatters"})
    _corrupt(lambda: read_parquet(dropped, schema=SCATTER_SCHEMA), "missing column(s) poca_z")
    _corrupt(lambda: verify_data_file(dropped), "missing column(s) poca_z")
    df = _scatters()
    df["total_scatter"] = np.float32(np.nan)
    nan = write_parquet(df, tmp_path / "nan.parquet", metadata={"table": "scatters"})
    _corrupt(lambda: read_parquet(nan, schema=SCATTER_SCHEMA), "column total_scatter (rows with reco_ok)", "NaN")
    df = _scatters()
    df["volume_id"] = df["volume_id"].astype("float64")
    wrong = write_parquet(df, tmp_path / "dtype.parquet")
    _corrupt(lambda: read_parquet(wrong, schema=SCATTER_SCHEMA), "volume_id (float64, expected int32)")


def test_scatters_written_before_checksums_still_read(tmp_path: Path) -> None:
    table = pa.Table.from_pandas(_scatters(), preserve_index=False)
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), b"tomoflow.schema_version": b"1"})
    old = tmp_path / "old.parquet"
    pq.write_table(table, old, compression="zstd")  # no page checksums
    pd.testing.assert_frame_equal(read_parquet(old, schema=SCATTER_SCHEMA), _scatters())
    table = table.replace_schema_metadata({**(table.schema.metadata or {}), b"tomoflow.schema_version": b"one"})
    pq.write_table(table, old)
    _corrupt(lambda: read_parquet(old), "schema_version='one' is not an integer")


# ------------------------------------------------------------------------------------------------ passives.h5
def _passives(tmp_path: Path, name: str = "passives.h5", n: int = 2) -> Path:
    recs = [PassiveRecord(x0=np.full((6, 10, 10), 0.35, np.float32), target=0.0056) for _ in range(n)]
    return write_passives(tmp_path / name, recs, attrs={"generator": "voxel"})


def test_passives_wrong_shape_and_bad_values(tmp_path: Path) -> None:
    path = _passives(tmp_path)
    assert read_passives(path, shape=(6, 10, 10))[1].target == pytest.approx(0.0056)
    _corrupt(lambda: read_passives(path, shape=(6, 5, 5)), "vol_000/x0 has shape (6, 10, 10), expected (6, 5, 5)")
    with h5py.File(path, "a") as f:
        del f["vol_001/x0"]
        f["vol_001/x0"] = np.ones((6, 10), np.float32)
    _corrupt(lambda: read_passives(path), "vol_001/x0 has shape (6, 10), expected (6, 10, 10)")
    with h5py.File(path, "a") as f:
        del f["vol_001/x0"]
        f["vol_001/x0"] = np.full((6, 10, 10), np.nan, np.float32)
    _corrupt(lambda: read_passives(path), "vol_001/x0 has 600 NaN values of 600 (all of them)")
    assert np.isnan(read_passives(path, finite=False)[1].x0).all(), "prediction files may hold NaN"
    with h5py.File(path, "a") as f:
        f["vol_001/x0"][...] = 1.0
        f["vol_001/x0"][0, 0, 0] = -1.0
    _corrupt(lambda: read_passives(path), "values <= 0")


@pytest.mark.parametrize("version", [1.5, "1", "one", [1, 1], True])
def test_passives_non_integer_schema_version(tmp_path: Path, version: Any) -> None:
    path = _passives(tmp_path)
    with h5py.File(path, "a") as f:
        f.attrs["schema_version"] = version
    _corrupt(lambda: read_passives(path), "schema_version=", "is not an integer")


def test_passives_written_before_checksums_still_read(tmp_path: Path) -> None:
    path = tmp_path / "old.h5"
    with h5py.File(path, "w") as f:  # the layout before checksums: unfiltered datasets, a scalar target
        f.attrs.update({"kind": "passives", "schema_version": 1, "n_volumes": 1})
        f.create_dataset("vol_000/x0", data=np.full((2, 3, 3), 0.1, np.float32))
        f.create_dataset("vol_000/target", data=np.float64(0.5))
    rec = read_passives(path, shape=(2, 3, 3))[0]
    assert rec.target == 0.5 and rec.x0.shape == (2, 3, 3)


# ------------------------------------------------------------------------------------------------ determinism
def test_checksummed_files_are_byte_identical_run_to_run(tmp_path: Path) -> None:
    import time

    a = write_muon_records(tmp_path / "a.h5", _muons(100), attrs={"n_generated": 220})
    p = _passives(tmp_path, "pa.h5")
    s = write_parquet(_scatters(200), tmp_path / "a.parquet", metadata={"table": "scatters"})
    time.sleep(1.1)  # no timestamps in the files
    assert write_muon_records(tmp_path / "b.h5", _muons(100), attrs={"n_generated": 220}).read_bytes() == a.read_bytes()
    assert _passives(tmp_path, "pb.h5").read_bytes() == p.read_bytes()
    assert write_parquet(_scatters(200), tmp_path / "b.parquet", metadata={"table": "scatters"}).read_bytes() == s.read_bytes()


# ------------------------------------------------------------------------------------------------ CLI
def test_cli_reports_a_damaged_input_in_one_line_and_writes_nothing(tmp_path: Path, cli: Cli) -> None:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params()))
    path = write_muon_records(tmp_path / "data" / "irradiated.h5", _muons(), attrs={"n_generated": 1220})
    _flip(path, path.stat().st_size // 2)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    rc, err = cli("reconstruct", "--workdir", str(tmp_path))
    assert rc == 1, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: stage 'reconstruct' cannot read its input: "), err
    assert str(path) in lines[0] and "Traceback" not in err
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before, "nothing written"
