"""Stages on local Dask worker processes give the data of the thread runner: irradiation and reconstruction chunks,
and the luminosity scan chunks.

The cluster is this module's ``dask_cluster`` (conftest): made with the ``dask_local`` runner's own settings, reached
through ``runtime.task_runner: dask_address``, so that its worker processes start once for all three stages (and stop
with the module: an idle cluster costs ~20 % of a core)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import DaskCluster, PipelineRun, tiny_params

from flows.params import parse_params
from flows.paths import PipelinePaths
from tasks.lumi import read_scan
from tomopt_lib.io import read_muon_records, read_parquet

pytestmark = [pytest.mark.flow, pytest.mark.slow]


def test_shared_cluster_has_the_dask_local_settings(dask_cluster: DaskCluster) -> None:
    """2 worker processes of 1 thread each, with the BLAS/OpenMP thread count of ``runtime.threads`` (1), no dashboard."""
    assert dask_cluster.cluster_kwargs["processes"] and dask_cluster.cluster_kwargs["dashboard_address"] is None
    assert len(dask_cluster.worker_threads) == 2 and set(dask_cluster.worker_threads.values()) == {1}
    assert (
        list(dask_cluster.worker_env.values())
        == [dict.fromkeys(("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"), "1")] * 2
    )


def test_dask_equals_threads_for_irradiation(
    prefect_harness: None, dask_cluster: DaskCluster, tiny_pipeline: PipelineRun, tmp_path: Path
) -> None:
    """irradiate + reconstruct on 2 Dask worker processes, over a copy of the shared pipeline (2 threads): same data."""
    from flows.pipeline import run_stage

    assert tiny_pipeline.params["runtime"] == {"task_workers": 2}  # the shared run used the thread runner
    work = tiny_pipeline.copy_to(tmp_path / "dask")
    p = parse_params(tiny_params(runtime={"task_runner": "dask_address", "dask_address": dask_cluster.address}))
    for stage in ("irradiate", "reconstruct"):
        run_stage(stage, p, str(work))
    threads, dask = PipelinePaths.at(tiny_pipeline.workdir), PipelinePaths.at(work)
    rec_t, rec_d = read_muon_records(threads.irradiated), read_muon_records(dask.irradiated)
    assert rec_t.keys() == rec_d.keys() == {0, 1}
    for vid in rec_t:
        a, b = rec_t[vid], rec_d[vid]
        assert a.n_generated == b.n_generated == 300
        np.testing.assert_array_equal(a.generated, b.generated)
        np.testing.assert_array_equal(a.final, b.final)
        assert a.hits.keys() == b.hits.keys()
        for group, hits in a.hits.items():
            assert hits.keys() == b.hits[group].keys()
            for var, arr in hits.items():
                np.testing.assert_array_equal(arr, b.hits[group][var])
        assert a.extra.keys() == b.extra.keys()
        for k in a.extra:
            np.testing.assert_array_equal(a.extra[k], b.extra[k])
    df_t, df_d = read_parquet(threads.scatters), read_parquet(dask.scatters)
    assert len(df_t) > 0
    pd.testing.assert_frame_equal(df_t, df_d, check_exact=True)


def test_dask_equals_threads_for_the_lumi_scan(
    prefect_harness: None, dask_cluster: DaskCluster, tiny_pipeline: PipelineRun, tmp_path: Path
) -> None:
    """The scan on the local Dask cluster (2 worker processes with the ``dask_local`` settings) == the shared pipeline's
    scan on 2 threads."""
    from flows.pipeline import run_stage

    assert tiny_pipeline.params["runtime"] == {"task_workers": 2}  # the thread runner
    p = parse_params(tiny_params(runtime={"task_runner": "dask_address", "dask_address": dask_cluster.address}))
    run_stage("lumi_scan", p, str(tmp_path))
    threads = read_scan(str(PipelinePaths.at(tiny_pipeline.workdir).lumi_scan))[0]
    dask = read_scan(str(PipelinePaths.at(tmp_path).lumi_scan))[0]
    assert len(threads) == 10 and list(threads.columns) == list(dask.columns)
    # Everything drawn from the seeds is identical: ids, chunk seeds, true emittances, convergence.
    seeded = ["inversion_id", "chunk", "chunk_seed", "true_eps_x", "true_eps_y", "converged"]
    pd.testing.assert_frame_equal(threads[seeded], dask[seeded], check_exact=True)
    # The float64 solves are not bit-reproducible across processes (MKL picks kernels by memory alignment, and a
    # last-bit difference can change the iteration count by one): the estimates agree to 1e-9 of their value,
    # six orders of magnitude below the scan's own 1e-3 errors, and the uncertainties to 1e-6.
    assert (threads["iterations"] - dask["iterations"]).abs().max() <= 1
    for cols, rtol in ((["est_eps_x", "est_eps_y", "residual_norm"], 1e-9), (["sigma_eps_x", "sigma_eps_y", "cond"], 1e-6)):
        np.testing.assert_allclose(dask[cols].to_numpy(), threads[cols].to_numpy(), rtol=rtol, atol=0)
