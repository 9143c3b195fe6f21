"""The local Dask task runner: no dashboard and nothing on distributed's default port 8787."""

from __future__ import annotations

import logging
import socket

from config import RuntimeParams
from flows.pipeline import make_task_runner


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_local_cluster_has_no_dashboard(dask_local_cluster_ok: None) -> None:
    from distributed import LocalCluster

    runner = make_task_runner(RuntimeParams(task_runner="dask_local", task_workers=1))
    before = _port_open(8787)
    with LocalCluster(**runner.cluster_kwargs) as cluster:
        addrs = [s.getsockname() for s in cluster.scheduler.http_server._sockets.values()]
        assert addrs and all(a[0] == "127.0.0.1" and a[1] != 8787 for a in addrs), addrs
        assert _port_open(8787) == before, "the cluster must not open port 8787"


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_dask_local_run_announces_no_dashboard(dask_local_cluster_ok: None, prefect_harness: None) -> None:
    """A flow on the ``dask_local`` runner: its tasks run on the cluster, and neither distributed ("dashboard at")
    nor prefect-dask ("The Dask dashboard is available at") advertises a dashboard that was not asked for (the
    scheduler's health-check HTTP server is registered under that name)."""
    from prefect import flow, task

    @task
    def double(x: int) -> int:
        return 2 * x

    @flow(task_runner=make_task_runner(RuntimeParams(task_runner="dask_local", task_workers=1)))
    def two() -> int:
        return double.submit(21).result()

    rec = _Records()
    loggers = [logging.getLogger(n) for n in ("distributed.scheduler", "prefect.task_runner.dask")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(rec)
        lg.setLevel(logging.INFO)
    try:
        assert two() == 42
    finally:
        for lg, lvl in zip(loggers, levels):
            lg.removeHandler(rec)
            lg.setLevel(lvl)
    assert any("scheduler" in m.lower() for m in rec.messages), rec.messages  # the cluster's start was logged here
    assert not [m for m in rec.messages if "dashboard" in m.lower()]
