"""``runtime.task_runner: dask_jobqueue``: the typed ``runtime.jobqueue`` section, the runner wiring, the job scripts
``dask_jobqueue`` generates for SLURM, HTCondor and PBS, the pre-flight checks of ``python -m flows``, and one real
Prefect flow whose tasks run in a "batch job" started by a stand-in ``sbatch`` (no batch system needed)."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest
from conftest import Cli

from config import JobqueueParams, ParamsError, RuntimeParams, parse_params
from config.sections import walltime_seconds


def _runtime(**jobqueue: Any) -> RuntimeParams:
    return parse_params({"runtime": {"task_runner": "dask_jobqueue", "threads": 2, "jobqueue": jobqueue}}).runtime


# ------------------------------------------------------------------------------------------------ typed section
def test_defaults_and_params_yaml_agree() -> None:
    from config import load_params

    root = Path(__file__).resolve().parents[1]
    jq = load_params(root / "params.yaml").runtime.jobqueue
    assert jq == JobqueueParams() and jq.system == "slurm" and jq.walltime == "01:00:00" and jq.max_jobs is None


@pytest.mark.parametrize(
    "jobqueue, needle",
    [
        ({"system": "sge"}, "runtime.jobqueue.system = 'sge'"),
        ({"cores": 0}, "runtime.jobqueue.cores = 0"),
        ({"cores": "4"}, "runtime.jobqueue.cores = '4'"),
        ({"memory": "4"}, "runtime.jobqueue.memory = '4': must be a positive size with a unit"),
        ({"memory": "0GB"}, "runtime.jobqueue.memory = '0GB'"),
        ({"disk": "lots"}, "runtime.jobqueue.disk = 'lots'"),
        ({"walltime": "1h"}, "runtime.jobqueue.walltime = '1h': must have the form HH:MM:SS"),
        ({"walltime": 0}, "runtime.jobqueue.walltime = 0: must be > 0"),
        ({"system": "pbs", "walltime": "1-00:00:00"}, "runtime.jobqueue.walltime='1-00:00:00': the D-HH:MM:SS form is SLURM's"),
        ({"cores": 3, "processes": 2}, "runtime.jobqueue.cores=3 must be a multiple of runtime.jobqueue.processes=2"),
        ({"n_jobs": 3, "max_jobs": 2}, "runtime.jobqueue.max_jobs=2 must be >= runtime.jobqueue.n_jobs=3"),
        ({"n_jobs": 0}, "runtime.jobqueue.n_jobs=0 starts no worker"),
        ({"queue": ""}, "runtime.jobqueue.queue = '': must not be empty"),
        ({"setup": ["module load x", " "]}, "runtime.jobqueue.setup = ['module load x', ' ']: item 1"),
        ({"system": "htcondor", "queue": "short"}, "runtime.jobqueue.queue='short' has no HTCondor equivalent"),
        ({"system": "htcondor", "account": "atlas"}, "runtime.jobqueue.account='atlas' has no HTCondor equivalent"),
        ({"system": "htcondor", "job_directives": ["--gres=gpu:1"]}, "runtime.jobqueue.job_directives.0='--gres=gpu:1'"),
        ({"n_job": 2}, "runtime.jobqueue.n_job: unknown key (allowed keys: system, cores"),
    ],
)
def test_bad_values_name_the_key(jobqueue: dict[str, Any], needle: str) -> None:
    with pytest.raises(ParamsError) as err:
        _runtime(**jobqueue)
    msg = str(err.value)
    assert "1 problem" in msg and needle in msg, msg
    assert len(msg.splitlines()) == 2, "one line per problem"


def test_walltime_forms() -> None:
    assert _runtime(walltime=3600).jobqueue.walltime == "01:00:00", "PyYAML reads unquoted 1:00:00 as 3600 seconds"
    assert _runtime(walltime=25 * 3600 + 61).jobqueue.walltime == "25:01:01"
    assert _runtime(walltime="2-12:00:00").jobqueue.walltime == "2-12:00:00"
    assert _runtime(walltime=None).jobqueue.walltime is None
    assert walltime_seconds("1-01:00:30") == 90030 and walltime_seconds("00:10:00") == 600


# ------------------------------------------------------------------------------------------------ runner wiring
def test_runner_wiring_fixed_jobs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from prefect_dask import DaskTaskRunner

    from flows.pipeline import make_task_runner

    monkeypatch.chdir(tmp_path)
    rt = _runtime(
        cores=4,
        processes=2,
        memory="8GB",
        walltime="02:00:00",
        queue="short",
        account="phys",
        n_jobs=3,
        job_directives=["--gres=gpu:1"],
        setup=["module load hdf5"],
        python="/opt/py/bin/python",
        interface="ib0",
        log_directory="logs",
    )
    r = make_task_runner(rt)
    assert isinstance(r, DaskTaskRunner) and r.cluster_class == "dask_jobqueue.SLURMCluster" and r.address is None
    from dask_jobqueue import SLURMCluster

    assert r.resolved_cluster_class is SLURMCluster
    kw = r.cluster_kwargs
    assert kw["n_workers"] == 6, "3 jobs x 2 worker processes (dask_jobqueue counts workers)"
    assert not r.adapt_kwargs
    expected = {"cores": 4, "processes": 2, "memory": "8GB", "walltime": "02:00:00", "queue": "short", "account": "phys"}
    assert {k: kw[k] for k in expected} == expected
    assert kw["job_extra_directives"] == ["--gres=gpu:1"] and kw["python"] == "/opt/py/bin/python"
    assert kw["interface"] == "ib0" and kw["log_directory"] == "logs" and "disk" not in kw
    assert kw["job_script_prologue"] == [
        f"cd {tmp_path}",
        "export OMP_NUM_THREADS=2",
        "export MKL_NUM_THREADS=2",
        "export OPENBLAS_NUM_THREADS=2",
        "module load hdf5",
    ]
    assert kw["scheduler_options"]["dashboard"] is False


def test_runner_wiring_adaptive_and_htcondor() -> None:
    from flows.pipeline import make_task_runner

    r = make_task_runner(
        _runtime(system="htcondor", n_jobs=1, max_jobs=20, walltime="00:30:00", job_directives=['+JobFlavour = "workday"'])
    )
    assert r.cluster_class == "dask_jobqueue.HTCondorCluster"
    assert r.adapt_kwargs == {"minimum_jobs": 1, "maximum_jobs": 20} and "n_workers" not in r.cluster_kwargs
    kw = r.cluster_kwargs
    assert kw["disk"] == "1GB" and kw["job_extra_directives"] == {"+JobFlavour": '"workday"', "+MaxRuntime": "1800"}
    assert not {"walltime", "queue", "account"} & set(kw)
    r = make_task_runner(_runtime(system="pbs", queue="workq"))
    assert r.cluster_class == "dask_jobqueue.PBSCluster" and r.cluster_kwargs["queue"] == "workq"


# ------------------------------------------------------------------------------------------------ job scripts
def _job_script(rt: RuntimeParams) -> str:
    from flows.pipeline import make_task_runner

    runner = make_task_runner(rt)
    kwargs = {**runner.cluster_kwargs, "n_workers": 0}  # submit nothing: only the scheduler starts, in this process
    with runner.resolved_cluster_class(**kwargs) as cluster:
        script: str = cluster.job_script()
    return script


def _common(script: str, cwd: str) -> None:
    assert f"cd {cwd}" in script and "export OMP_NUM_THREADS=2" in script and "module load hdf5" in script
    assert "-m distributed.cli.dask_worker tcp://" in script and "--nthreads 2 " in script and "--nworkers 2 " in script


def test_slurm_job_script(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    script = _job_script(
        _runtime(
            cores=4,
            processes=2,
            memory="8GB",
            walltime="1-02:00:00",
            queue="short",
            account="phys",
            job_directives=["--gres=gpu:1"],
            setup=["module load hdf5"],
        )
    )
    lines = script.splitlines()
    for directive in (
        "#SBATCH -J tomoflow-worker",
        "#SBATCH -p short",
        "#SBATCH -A phys",
        "#SBATCH --cpus-per-task=4",
        "#SBATCH --mem=8G",
        "#SBATCH -t 1-02:00:00",
        "#SBATCH --gres=gpu:1",
    ):
        assert directive in lines, (directive, script)
    _common(script, str(tmp_path))


def test_pbs_job_script(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    script = _job_script(
        _runtime(
            system="pbs",
            cores=4,
            processes=2,
            memory="8GB",
            walltime="04:00:00",
            queue="workq",
            account="proj1",
            setup=["module load hdf5"],
        )
    )
    lines = script.splitlines()
    for directive in ("#PBS -N tomoflow-worker", "#PBS -q workq", "#PBS -A proj1", "#PBS -l walltime=04:00:00"):
        assert directive in lines, (directive, script)
    assert any(ln.startswith("#PBS -l select=1:ncpus=4:mem=") for ln in lines), script
    _common(script, str(tmp_path))


def test_htcondor_job_script(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    script = _job_script(
        _runtime(
            system="htcondor",
            cores=4,
            processes=2,
            memory="8GB",
            disk="5GB",
            walltime="02:00:00",
            job_directives=['+JobFlavour = "workday"', "accounting_group = group_u_ATLAS"],
            setup=["module load hdf5"],
        )
    )
    lines = script.splitlines()
    for directive in (
        "RequestCpus = MY.DaskWorkerCores",
        "MY.DaskWorkerCores = 4",
        "MY.DaskWorkerMemory = 8000000000",
        "MY.DaskWorkerDisk = 5000000000",
        "+MaxRuntime = 7200",
        '+JobFlavour = "workday"',
        "accounting_group = group_u_ATLAS",
        "Executable = /bin/sh",
    ):
        assert directive in lines, (directive, script)
    _common(script, str(tmp_path))


# ------------------------------------------------------------------------------------------------ pre-flight checks
def _fake_tool(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text("#!/usr/bin/env bash\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


def test_cli_refuses_without_submit_command(tmp_path: Path, cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))  # no sbatch / condor_submit / qsub here
    monkeypatch.setenv("PREFECT_API_URL", "http://login01.example.org:4200/api")
    work = tmp_path / "w"
    work.mkdir()
    for system, command in (("slurm", "sbatch"), ("htcondor", "condor_submit"), ("pbs", "qsub")):
        (work / "params.yaml").write_text(f"runtime: {{task_runner: dask_jobqueue, jobqueue: {{system: {system}}}}}\n")
        rc, err = cli("generate_passives", "--workdir", str(work))
        assert rc == 2, err
        assert "runtime.task_runner = 'dask_jobqueue'" in err and f"{command} (runtime.jobqueue.system" in err, err
        assert "not on PATH" in err and err.count("error:") == 1
    assert sorted(p.name for p in work.iterdir()) == ["params.yaml"], "nothing written"

    _fake_tool(bin_dir, "sbatch", "exit 1\n")
    (work / "params.yaml").write_text("runtime: {task_runner: dask_jobqueue}\n")
    rc, err = cli("check", "--workdir", str(work))
    assert rc == 0 and "valid" in err, err
    for url, why in ((None, "unset (embedded server)"), ("http://127.0.0.1:4200/api", "(loopback)")):
        if url is None:
            monkeypatch.delenv("PREFECT_API_URL")
        else:
            monkeypatch.setenv("PREFECT_API_URL", url)
        rc, err = cli("check", "--workdir", str(work))
        assert rc == 2 and "runtime.task_runner = 'dask_jobqueue'" in err and why in err and "--host 0.0.0.0" in err, err


# ------------------------------------------------------------------------------------------------ a real "batch job"
def test_flow_tasks_run_in_a_submitted_job(prefect_harness: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A stand-in ``sbatch`` runs the generated job script in the background (as SLURM would on a node) and
    ``scancel`` kills it: the flow's tasks then run in that job's Dask worker, in the flow's working directory, with
    ``runtime.threads`` exported."""
    from prefect import flow, task

    from flows.pipeline import make_task_runner

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    jobs = tmp_path / "jobs"
    jobs.mkdir()
    # dask_jobqueue deletes the script after sbatch returns: keep a copy, start it in its own session, print the id
    _fake_tool(
        bin_dir,
        "sbatch",
        f'cp "$1" {jobs}/job.$$.sh\nsetsid bash {jobs}/job.$$.sh > {jobs}/job.$$.log 2>&1 < /dev/null &\n'
        'echo "Submitted batch job $!"\n',
    )
    _fake_tool(bin_dir, "scancel", 'kill -TERM -- "-$1" 2>/dev/null || kill -TERM "$1" 2>/dev/null; exit 0\n')
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    runner = make_task_runner(_runtime(cores=1, memory="1GB", walltime="00:10:00", n_jobs=1, interface="lo"))

    @task
    def where() -> tuple[str, str | None, int]:
        return os.getcwd(), os.environ.get("OMP_NUM_THREADS"), os.getpid()

    @flow(task_runner=runner)
    def probe() -> list[tuple[str, str | None, int]]:
        return [f.result() for f in [where.submit() for _ in range(2)]]

    out = probe()
    assert {o[0] for o in out} == {str(work)} and {o[1] for o in out} == {"2"}, out
    assert os.getpid() not in {o[2] for o in out}, "the tasks ran in the job's worker process"
    assert len(list(jobs.glob("job.*.sh"))) == 1, "one job submitted"
    script = next(jobs.glob("job.*.sh")).read_text()
    assert "#SBATCH -t 00:10:00" in script and f"cd {work}" in script
