"""HDF5 / Parquet / JSON file formats: round trips, attributes, schema versions, truncated files, atomic writes."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tomopt_lib.io import (
    SCHEMA_VERSION,
    DataFileError,
    MuonRecord,
    PassiveRecord,
    SchemaVersionError,
    atomic_path,
    read_h5_attrs,
    read_json,
    read_muon_records,
    read_parquet,
    read_passives,
    write_json,
    write_muon_records,
    write_parquet,
    write_passives,
)


def _muon_record(rng: np.random.Generator, n: int, n_gen: int) -> MuonRecord:
    reco = rng.normal(size=(n, 4, 3)).astype(np.float32)
    if n:
        reco[0, 1, :2] = np.inf  # a missed panel
    hits = {
        "above": {
            "reco_xyz": reco,
            "gen_xyz": reco.copy(),
            "unc_xyz": np.ones((n, 4, 3), np.float32),
            "eff": np.ones((n, 4, 1), np.float32),
        },
        "below": {"reco_xyz": rng.normal(size=(n, 2, 3)).astype(np.float32)},
    }
    return MuonRecord(
        generated=rng.normal(size=(n_gen, 5)).astype(np.float32),
        final=rng.normal(size=(n, 6)).astype(np.float32),
        hits=hits,
        extra={"chunk": np.arange(n, dtype=np.int32), "true_total_scatter": rng.random(n).astype(np.float32)},
    )


def test_passives_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    recs = [
        PassiveRecord(x0=rng.random((6, 10, 10)).astype(np.float32), target=0.0056, attrs={"materials": ["lead", "iron"]}),
        PassiveRecord(x0=rng.random((6, 10, 10)).astype(np.float32)),
    ]
    path = write_passives(tmp_path / "p.h5", recs, attrs={"generator": "voxel", "block_size": None})
    back = read_passives(path)
    assert len(back) == 2
    for a, b in zip(recs, back):
        np.testing.assert_array_equal(a.x0, b.x0)
    assert back[0].target == pytest.approx(0.0056) and np.isnan(back[1].target)
    assert back[0].attrs["materials"] == ["lead", "iron"]
    assert read_passives(path, [1])[0].x0.shape == (6, 10, 10)
    attrs = read_h5_attrs(path, "passives")
    assert attrs["schema_version"] == SCHEMA_VERSION and attrs["generator"] == "voxel" and attrs["block_size"] is None
    with h5py.File(path) as f:
        ds = f["vol_000/x0"]
        assert ds.compression == "gzip" and ds.chunks is not None and "m" in ds.attrs["units"]
    with pytest.raises(DataFileError, match="volume ids"):
        read_passives(path, [5])


@pytest.mark.parametrize("n", [0, 7])
def test_muon_records_round_trip(tmp_path: Path, n: int) -> None:
    rng = np.random.default_rng(1)
    recs = {0: _muon_record(rng, n, n + 3), 3: _muon_record(rng, n, n)}
    path = write_muon_records(tmp_path / "m.h5", recs, attrs={"n_generated": 2 * n + 3})
    back = read_muon_records(path)
    assert sorted(back) == [0, 3]
    for vid, rec in recs.items():
        got = back[vid]
        assert list(got.hits) == ["above", "below"]
        np.testing.assert_array_equal(got.generated, rec.generated)
        np.testing.assert_array_equal(got.final, rec.final)
        for g in rec.hits:
            for var in rec.hits[g]:
                np.testing.assert_array_equal(got.hits[g][var], rec.hits[g][var])
        for k in rec.extra:
            np.testing.assert_array_equal(got.extra[k], rec.extra[k])
            assert got.extra[k].dtype == rec.extra[k].dtype
    assert list(read_muon_records(path, [3])) == [3]
    with h5py.File(path) as f:
        assert f["vol_000/hits/above/reco_xyz"].attrs["units"] == "m"
        assert f["vol_000/extra/true_total_scatter"].attrs["units"] == "rad"
    with pytest.raises(DataFileError, match="not found"):
        read_muon_records(path, [1])


def test_row_count_mismatch_is_rejected(tmp_path: Path) -> None:
    rec = _muon_record(np.random.default_rng(2), 4, 4)
    rec.extra["chunk"] = np.zeros(3)
    with pytest.raises(ValueError, match="extra"):
        write_muon_records(tmp_path / "m.h5", {0: rec})
    assert list(tmp_path.iterdir()) == []  # nothing left behind


def test_schema_version_and_kind_mismatch(tmp_path: Path) -> None:
    path = write_passives(tmp_path / "p.h5", [PassiveRecord(x0=np.ones((1, 2, 2)))])
    with pytest.raises(DataFileError, match="expected a 'muon_hits' file"):
        read_muon_records(path)
    with h5py.File(path, "a") as f:
        f.attrs["schema_version"] = SCHEMA_VERSION + 1
    with pytest.raises(SchemaVersionError, match=f"schema_version={SCHEMA_VERSION + 1}.*regenerate"):
        read_passives(path)


def test_truncated_and_missing_files(tmp_path: Path) -> None:
    rec = _muon_record(np.random.default_rng(3), 500, 500)
    path = write_muon_records(tmp_path / "m.h5", {0: rec})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataFileError, match="truncated or corrupt"):
        read_muon_records(path)
    with pytest.raises(DataFileError, match="file not found"):
        read_passives(tmp_path / "none.h5")
    (tmp_path / "junk.h5").write_bytes(b"not hdf5")
    with pytest.raises(DataFileError, match="not a readable HDF5"):
        read_h5_attrs(tmp_path / "junk.h5", "passives")


def test_parquet_round_trip_and_errors(tmp_path: Path) -> None:
    df = pd.DataFrame({"a": np.arange(5, dtype=np.int32), "b": np.linspace(0, 1, 5, dtype=np.float32), "ok": [True] * 5})
    path = write_parquet(df, tmp_path / "t.parquet", metadata={"stage": "test"})
    back = read_parquet(path)
    pd.testing.assert_frame_equal(back, df)
    assert read_parquet(path, columns=["b"]).columns.tolist() == ["b"]
    assert pq.ParquetFile(path).schema_arrow.metadata[b"tomoflow.stage"] == b"test"
    empty = write_parquet(df.iloc[:0], tmp_path / "e.parquet")
    assert read_parquet(empty).dtypes.to_dict() == df.dtypes.to_dict()
    pq.write_table(pa.Table.from_pandas(df), tmp_path / "plain.parquet")
    with pytest.raises(SchemaVersionError):
        read_parquet(tmp_path / "plain.parquet")
    data = path.read_bytes()
    (tmp_path / "trunc.parquet").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataFileError, match="truncated or corrupt"):
        read_parquet(tmp_path / "trunc.parquet")
    with pytest.raises(DataFileError, match="file not found"):
        read_parquet(tmp_path / "nope.parquet")


def test_atomic_write_keeps_old_file_on_error(tmp_path: Path) -> None:
    dest = tmp_path / "sub" / "f.txt"
    with atomic_path(dest) as tmp:
        assert tmp.parent == dest.parent and tmp != dest
        tmp.write_text("one")
    assert dest.read_text() == "one" and oct(dest.stat().st_mode & 0o777) != oct(0o600)
    with pytest.raises(RuntimeError):
        with atomic_path(dest) as tmp:
            tmp.write_text("two")
            raise RuntimeError("boom")
    assert dest.read_text() == "one"
    assert sorted(p.name for p in dest.parent.iterdir()) == ["f.txt"]


def test_json(tmp_path: Path) -> None:
    path = write_json({"a": np.float32(1.5), "b": float("nan"), "c": [np.int64(2), float("inf")]}, tmp_path / "m.json")
    assert json.loads(path.read_text()) == {"a": 1.5, "b": None, "c": [2, None]}
    assert read_json(path)["a"] == 1.5
    path.write_text("{")
    with pytest.raises(DataFileError, match="malformed"):
        read_json(path)
