"""Shared test settings and fixtures.

* one torch thread (2-core machines), quiet Prefect, seeded generators;
* ``tiny_params``: the one minimal valid parameter set of the flow/task tests (a fresh deep copy per call, with
  per-test overrides), instead of a copy per test module;
* ``prefect_harness``: one temporary Prefect API server per session (per xdist worker); ``prefect_server``: a real
  ``prefect server start`` for the tests of ``python -m flows`` processes and of the UI;
* ``tiny_pipeline``: the whole pipeline (``all``) run once per session on ``tiny_params()``; read-only checks share
  it, tests that change outputs work on a copy (``tiny_pipeline.copy_to``);
* under pytest-xdist every test that needs the Prefect server is scheduled on one worker, so that only one server
  starts and the session pipeline runs once (``-n 2 --dist loadgroup`` in pyproject.toml; see "xdist grouping").
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("MPLBACKEND", "Agg")

import contextlib  # noqa: E402
import copy  # noqa: E402
import hashlib  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Callable, Iterator, Mapping  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import TYPE_CHECKING, Any

import prefect_template  # noqa: E402
import pytest  # noqa: E402

if TYPE_CHECKING:  # torch is imported lazily: the xdist controller process never needs it
    import torch

PREFECT_GROUP = "prefect-server"
"""xdist work unit of every test that uses the session's Prefect test server (``prefect_harness``)."""
CLI_SERVER_GROUP = "prefect-cli-server"
"""xdist work unit of every test that uses the session's real ``prefect server start`` (``prefect_server``)."""

TINY_PARAMS: dict[str, Any] = {
    "runtime": {"task_workers": 2},
    "passives": {"n_volumes": 2, "materials": ["beryllium", "lead"]},
    # 2 chunks per volume, the second one shorter (200 + 100): the remainder path of the chunking is exercised
    "irradiate": {"n_muons_per_volume": 300, "chunk_size": 200},
    "reconstruct": {"chunk_size": 100},
    "report": {"angle_bins": 20},
    "optimise": {"n_epochs": 2, "n_volumes": 2, "n_val_volumes": 1, "passive_bs": 1, "n_mu_per_volume": 150, "mu_bs": 150},
    "evaluate": {"n_volumes": 2, "n_mu_per_volume": 150, "mu_bs": 150, "n_images": 1, "n_bootstrap": 100},
    # 2 IPs (crossing planes y and x), one shift of sep_x: 4 configurations; 10 inversions in chunks of 4 (4 + 4 + 2)
    "lumi_scan": {
        "mode": "xy",
        "n_inversions": 10,
        "chunk_size": 4,
        "plan": {
            "bases": [{"crossing_plane": "y"}, {"crossing_plane": "x"}],
            "parameters": ["sep_x"],
            "n_shifts": 1,
            "product": False,
        },
    },
    "lumi_report": {"landscape_grid": 12, "hist_bins": 8},
}
"""Minimal valid parameters for every stage; never hand this dict out, use :func:`tiny_params`."""


def _merge(dst: dict[str, Any], src: Mapping[str, Any]) -> None:
    """Deep merge ``src`` into ``dst``: mappings merge key by key, anything else (lists too) replaces."""
    for key, val in src.items():
        if isinstance(val, Mapping) and isinstance(dst.get(key), dict):
            _merge(dst[key], val)
        else:
            dst[key] = copy.deepcopy(dict(val) if isinstance(val, Mapping) else val)


def tiny_params(overrides: Mapping[str, Any] | None = None, /, **sections: Any) -> dict[str, Any]:
    """A fresh deep copy of :data:`TINY_PARAMS` with overrides, as a plain dict (for ``parse_params`` or a YAML file).

    ``overrides`` may use dotted keys, ``sections`` are top-level keys; both merge into nested mappings::

        tiny_params(irradiate={"n_muons_per_volume": 0})
        tiny_params({"irradiate.n_muons_per_volume": 0, "optimise.start.panel_span": 0.5}, seed=7)
    """
    data = copy.deepcopy(TINY_PARAMS)
    for key, val in {**(overrides or {}), **sections}.items():
        *parents, leaf = key.split(".")
        nested: dict[str, Any] = {leaf: val}
        for parent in reversed(parents):
            nested = {parent: nested}
        _merge(data, nested)
    return data


@pytest.fixture(name="tiny_params")
def _tiny_params_fixture() -> Callable[..., dict[str, Any]]:
    """The :func:`tiny_params` factory, for tests that prefer a fixture to an import from conftest."""
    return tiny_params


# ------------------------------------------------------------------------------------------------ xdist grouping
# Every test that needs the session's Prefect test server (``prefect_harness``, directly or through ``tiny_pipeline``)
# runs on one xdist worker: one server start and one shared pipeline per run instead of one per worker; likewise the
# tests of the real ``prefect server start`` (``prefect_server``). The two groups are the largest work units, so
# xdist's scheduler (largest units first) starts them on different workers and fills both with the other tests. The
# workers know which tests those are (the fixture closure); the controller's scheduler only sees node ids. xdist's
# own ``xdist_group`` marks do not work with pytest 9 (xdist 3.8 renames ``item._nodeid``, which pytest 9 no longer
# reads), so each worker writes {node id: group} to a file named by the run id and the scheduler reads it.
def _groups_file(testrunuid: str) -> Path:
    return Path(tempfile.gettempdir()) / f"tomoflow-xdist-groups-{testrunuid}.json"


SLOW_FIXTURES = ("prefect_harness", "prefect_server", "tiny_pipeline", "dask_cluster", "dask_local_cluster_ok")
"""Tests that use any of these take seconds (a server, the shared pipeline, worker processes): marked ``slow``."""


def pytest_itemcollected(item: pytest.Item) -> None:
    if any(name in SLOW_FIXTURES for name in getattr(item, "fixturenames", ())):
        item.add_marker(pytest.mark.slow)  # still run by default; `-m "not slow"` leaves them out


def pytest_configure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput"):  # the controller (or the only process): the Prefect template, if missing,
        prefect_template.start_in_background()  # is made while the tests are collected
    if config.pluginmanager.hasplugin("xdist") and not hasattr(config, "workerinput") and config.getoption("testrunuid") is None:
        config.option.testrunuid = uuid.uuid4().hex  # the controller fixes the run id it hands to the workers


@pytest.hookimpl(trylast=True)  # after -k/-m deselection: exactly the node ids the controller will schedule
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    workerinput = getattr(config, "workerinput", None)
    if workerinput is None:
        return
    grouped = {}
    for item in items:
        names = getattr(item, "fixturenames", ())
        if "prefect_harness" in names:
            grouped[item.nodeid] = PREFECT_GROUP
        elif "prefect_server" in names:
            grouped[item.nodeid] = CLI_SERVER_GROUP
    path = _groups_file(workerinput["testrunuid"])
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(grouped))
    os.replace(tmp, path)  # both workers write the same list; each write is atomic


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    if config.getoption("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadGroupScheduling

    path = _groups_file(config.getoption("testrunuid"))

    class ServerGroupScheduling(LoadGroupScheduling):
        """``--dist loadgroup`` plus: the users of the Prefect server are one work unit."""

        grouped: dict[str, str] | None = None

        def _split_scope(self, nodeid: str) -> str:
            if self.grouped is None:  # read once, when the workers have finished collecting
                self.grouped = json.loads(path.read_text()) if path.exists() else {}
            return self.grouped.get(nodeid) or super()._split_scope(nodeid)

    return ServerGroupScheduling(config, log)


def pytest_unconfigure(config: pytest.Config) -> None:
    if not hasattr(config, "workerinput") and config.getoption("testrunuid", None):
        _groups_file(config.getoption("testrunuid")).unlink(missing_ok=True)


Cli = Callable[..., tuple[Any, str]]


@pytest.fixture
def cli(capsys: pytest.CaptureFixture) -> Cli:
    """``python -m flows ARGS`` in this process (``flows.__main__.main``): returns (exit status, stderr).

    For the checks that end before any stage runs (validation, exit status 2); one test per CLI still starts the real
    process (test_params.py::test_cli_process_exits_2_without_touching_outputs)."""

    def run(*argv: str) -> tuple[Any, str]:
        from flows.__main__ import main

        capsys.readouterr()
        try:
            rc: Any = main(list(argv))
        except SystemExit as exit_:  # argparse errors
            rc = exit_.code
        return rc, capsys.readouterr().err

    return run


@pytest.fixture(scope="session", autouse=True)
def _one_torch_thread() -> None:
    import torch

    torch.set_num_threads(1)


@pytest.fixture
def gen() -> torch.Generator:
    """A seeded CPU generator for reproducible tests."""
    import torch

    return torch.Generator().manual_seed(1234)


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One temporary Prefect API server for the session, with the flow heartbeat off (saves ~1 s per flow) and the
    run logs kept out of the API (no test reads them there; they still reach pytest's log capture), which spares the
    server a write per log record."""
    import prefect.testing.utilities as harness
    from prefect.settings import PREFECT_FLOWS_HEARTBEAT_FREQUENCY, PREFECT_LOGGING_TO_API_ENABLED, temporary_settings

    # the harness makes its database folder with `mkdtemp()` and names the file prefect-test.db: hand it a folder
    # holding a copy of the migrated template (prefect_template.py), ~10 s of CPU less than migrating a new one
    seeded = Path(tempfile.mkdtemp(prefix="tomoflow-harness-"))
    shutil.copyfile(prefect_template.ensure_template() / prefect_template.DB_NAME, seeded / "prefect-test.db")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(harness, "mkdtemp", lambda: str(seeded))
        with harness.prefect_test_harness(server_startup_timeout=120):
            with temporary_settings({PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None, PREFECT_LOGGING_TO_API_ENABLED: False}):
                yield


@contextlib.contextmanager
def prefect_api(url: str) -> Iterator[None]:
    """Flows of this process report to the Prefect API at ``url`` (heartbeat off and run logs kept out of the API, as
    under ``prefect_harness``: a log record still queued for a server the session has stopped would keep the process
    retrying at exit for a minute or more)."""
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
        PREFECT_LOGGING_TO_API_ENABLED,
        temporary_settings,
    )

    with temporary_settings(
        {PREFECT_API_URL: url, PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None, PREFECT_LOGGING_TO_API_ENABLED: False}
    ):
        yield


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real ``prefect server start`` (UI on) on a free port with its own PREFECT_HOME, for the tests of what users
    run: ``python -m flows`` processes reporting to a server (crash/resume) and the UI monitoring acceptance test.
    Yields the API URL; always terminated. Not starting within 180 s is a failure, not a skip."""
    home = tmp_path_factory.mktemp("prefect_server_home")
    prefect_template.seed_home(home)  # a migrated database: ~10 s of CPU less than a fresh one
    with prefect_template.server_process(home, ui=True) as api:  # RuntimeError (a test error) if it does not start
        yield api


@pytest.fixture(scope="session")
def dask_local_cluster_ok() -> None:
    """Skip (with the reason) where a local Dask cluster of worker processes cannot start."""
    try:
        from distributed import Client, LocalCluster

        with (
            LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
            Client(cluster) as client,
        ):
            assert client.submit(sum, [1, 2]).result(timeout=60) == 3
    except Exception as err:  # noqa: BLE001 - any failure to start means: no local Dask here
        pytest.skip(f"a local Dask cluster (worker processes) cannot start here: {type(err).__name__}: {err}")


@dataclass(frozen=True)
class DaskCluster:
    """The session's local Dask cluster: its scheduler address and what its workers report."""

    address: str
    cluster_kwargs: dict[str, Any]
    worker_threads: dict[str, int]
    worker_env: dict[str, dict[str, str | None]]


@pytest.fixture(scope="module")
def dask_cluster() -> Iterator[DaskCluster]:
    """A local Dask cluster made exactly as the ``dask_local`` runner makes it (``make_task_runner``'s cluster class
    and keyword arguments for ``task_workers: 2``), shared by the Dask equivalence tests of a module through
    ``runtime.task_runner: dask_address``: the two worker processes start and import torch/prefect once, not once per
    flow run, and stop with the module (idle, the cluster still costs ~20 % of a core). Skips (with the reason) where
    worker processes cannot start."""
    from flows.params import parse_params
    from flows.pipeline import make_task_runner

    runner = make_task_runner(parse_params(tiny_params(runtime={"task_runner": "dask_local", "task_workers": 2})).runtime)
    kwargs = dict(runner.cluster_kwargs)
    try:
        from distributed import Client

        cluster = runner.resolved_cluster_class(**kwargs)
    except Exception as err:  # noqa: BLE001 - any failure to start means: no local Dask here
        pytest.skip(f"a local Dask cluster (worker processes) cannot start here: {type(err).__name__}: {err}")
    with cluster, Client(cluster) as client:
        client.wait_for_workers(kwargs["n_workers"], timeout=120)
        keys = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
        env = client.run(lambda: {k: os.environ.get(k) for k in keys})
        yield DaskCluster(cluster.scheduler_address, kwargs, dict(client.nthreads()), env)


# ------------------------------------------------------------------------------------------------ shared pipeline
PIPELINE_ARTIFACT_KEYS = (
    "tomoflow-generate-passives",
    "tomoflow-irradiate",
    "tomoflow-reconstruct",
    "tomoflow-skeleton-report",
    "tomoflow-report-images",
    "tomoflow-optimise",
    "tomoflow-evaluate",
    "lumi-scan-summary",
    "lumi-scan-progress",
    "lumi-report",
)
"""Artifacts captured right after the session pipeline ran (later flow runs publish under the same keys)."""


def _manifest(root: Path) -> dict[str, str]:
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*")) if p.is_file()
    }


@dataclass(frozen=True)
class PipelineRun:
    """Outputs of one ``run_stage("all", ...)``: treat ``workdir`` as read-only, copy it to change anything."""

    workdir: Path
    params: dict[str, Any]
    out: Mapping[str, Any]
    artifacts: dict[str, str | None] = field(default_factory=dict)

    def copy_to(self, dst: Path) -> Path:
        """A private copy of the whole work folder (for tests that rerun stages over these outputs)."""
        shutil.copytree(self.workdir, dst)
        return dst


@pytest.fixture(scope="session")
def tiny_pipeline(prefect_harness: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PipelineRun]:
    """Every stage (the ``skeleton`` parent flow) once per session on ``tiny_params()``.

    At the end of the session the outputs must be byte-identical to what the run wrote: a test that changed them
    (instead of working on ``copy_to``) fails the teardown.
    """
    from prefect.artifacts import Artifact

    from flows.params import parse_params
    from flows.pipeline import run_stage

    work = tmp_path_factory.mktemp("tiny_pipeline")
    data = tiny_params()
    out = run_stage("all", parse_params(data), str(work))
    arts = {}
    for key in PIPELINE_ARTIFACT_KEYS:
        art = Artifact.get(key)
        arts[key] = None if art is None else str(art.data)
    before = _manifest(work)
    yield PipelineRun(work, data, out, arts)
    assert _manifest(work) == before, "a test changed the shared tiny_pipeline outputs; work on tiny_pipeline.copy_to()"
