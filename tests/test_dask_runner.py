"""The local Dask task runner: no dashboard and nothing on distributed's default port 8787."""

from __future__ import annotations

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
