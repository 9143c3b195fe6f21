"""Irradiation chunks and reconstruction chunks on a local Dask cluster give the same data as the thread runner."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flows.params import parse_params
from flows.paths import PipelinePaths
from tomopt_lib.io import read_muon_records, read_parquet

pytestmark = pytest.mark.flow

TINY = {
    "passives": {"n_volumes": 2, "materials": ["beryllium", "lead"]},
    "irradiate": {"n_muons_per_volume": 300, "chunk_size": 150},
    "reconstruct": {"chunk_size": 150},
}


def test_dask_local_equals_threads_for_irradiation(prefect_harness: None, dask_local_cluster_ok: None, tmp_path: Path) -> None:
    from flows.pipeline import run_stage

    outs = {}
    for runner in ("threads", "dask_local"):
        data = {k: dict(v) for k, v in TINY.items()}
        data["runtime"] = {"task_runner": runner, "task_workers": 2}
        p = parse_params(data)
        work = tmp_path / runner
        for stage in ("generate_passives", "irradiate", "reconstruct"):
            run_stage(stage, p, str(work))
        paths = PipelinePaths.at(work)
        outs[runner] = (read_muon_records(paths.irradiated), read_parquet(paths.scatters))
    (rec_t, df_t), (rec_d, df_d) = outs["threads"], outs["dask_local"]
    assert rec_t.keys() == rec_d.keys()
    for vid in rec_t:
        a, b = rec_t[vid], rec_d[vid]
        np.testing.assert_array_equal(a.generated, b.generated)
        np.testing.assert_array_equal(a.final, b.final)
        for group, hits in a.hits.items():
            for var, arr in hits.items():
                np.testing.assert_array_equal(arr, b.hits[group][var])
    pd.testing.assert_frame_equal(df_t, df_d, check_exact=True)
