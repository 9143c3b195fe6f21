"""Shared test settings: one torch thread (2-core machines), quiet Prefect, seeded generators."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")

from typing import Iterator  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture
def gen() -> torch.Generator:
    """A seeded CPU generator for reproducible tests."""
    return torch.Generator().manual_seed(1234)


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One temporary Prefect API server for the session, with the flow heartbeat off (saves ~1 s per flow)."""
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
            yield


@pytest.fixture(scope="session")
def dask_local_cluster_ok() -> None:
    """Skip (with the reason) where a local Dask cluster of worker processes cannot start."""
    try:
        from distributed import Client, LocalCluster

        with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, Client(cluster) as client:
            assert client.submit(sum, [1, 2]).result(timeout=60) == 3
    except Exception as err:  # noqa: BLE001 - any failure to start means: no local Dask here
        pytest.skip(f"a local Dask cluster (worker processes) cannot start here: {type(err).__name__}: {err}")
