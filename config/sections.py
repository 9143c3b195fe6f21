"""Parameter sections of the muon-tomography stages and the shared ``runtime`` / ``volume`` sections."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from tomopt_lib.checks import check_materials, is_voxel_multiple

from .base import ParamsModel, PosFloat
from .limits import LimitsParams

DASK_ADDRESS_PATTERN = r"^(tcp|tls)://[A-Za-z0-9.\-]+:[0-9]{1,5}$"
"""Form of ``runtime.dask_address``: ``tcp://host:port`` or ``tls://host:port``."""

MEMORY_PATTERN = r"^[0-9]+(\.[0-9]+)?\s*[kKmMgGtT]i?[bB]$"
"""Form of ``runtime.jobqueue.memory`` / ``disk``: a number and a unit, e.g. ``4GB``, ``4 GiB``, ``500MB``."""

WALLTIME_PATTERN = r"^(?:([0-9]+)-)?([0-9]{1,3}):([0-5][0-9]):([0-5][0-9])$"
"""Form of ``runtime.jobqueue.walltime``: ``HH:MM:SS`` (SLURM also ``D-HH:MM:SS``)."""

HTCONDOR_COMMAND_PATTERN = r"^\s*\+?[A-Za-z_][A-Za-z0-9_.]*\s*=.*$"
"""Form of an HTCondor ``runtime.jobqueue.job_directives`` entry: ``key = value`` (``+Attr`` / ``MY.Attr`` keys too)."""

SUBMIT_COMMANDS = {"slurm": "sbatch", "htcondor": "condor_submit", "pbs": "qsub"}
"""The batch system's submit command of each ``runtime.jobqueue.system`` (it must be on PATH where the flow runs)."""

CLUSTER_CLASSES = {
    "slurm": "dask_jobqueue.SLURMCluster",
    "htcondor": "dask_jobqueue.HTCondorCluster",
    "pbs": "dask_jobqueue.PBSCluster",
}
"""The ``dask_jobqueue`` cluster class of each ``runtime.jobqueue.system``."""

__all__ = [
    "DASK_ADDRESS_PATTERN",
    "MEMORY_PATTERN",
    "WALLTIME_PATTERN",
    "SUBMIT_COMMANDS",
    "CLUSTER_CLASSES",
    "JobqueueParams",
    "walltime_seconds",
    "RuntimeParams",
    "VolumeParams",
    "PassiveParams",
    "IrradiateParams",
    "ReconstructParams",
    "ReportParams",
]


def walltime_seconds(walltime: str) -> int:
    """``[D-]HH:MM:SS`` -> seconds (the form is checked by ``JobqueueParams``)."""
    m = re.fullmatch(WALLTIME_PATTERN, walltime)
    if m is None:
        raise ValueError(f"walltime {walltime!r} is not [D-]HH:MM:SS")
    d, h, mi, sec = (int(g) if g else 0 for g in m.groups())
    return ((d * 24 + h) * 60 + mi) * 60 + sec


class JobqueueParams(ParamsModel):
    """Batch jobs of ``runtime.task_runner: dask_jobqueue`` (each job starts ``processes`` Dask workers that run the
    stage's coarse tasks; the flow itself and its Dask scheduler stay on the machine that runs ``make run``)."""

    system: Literal["slurm", "htcondor", "pbs"] = Field(
        "slurm", description="batch system: dask_jobqueue's SLURMCluster, HTCondorCluster or PBSCluster"
    )
    cores: int = Field(1, ge=1, le=1024, description="cores per job (RequestCpus / --cpus-per-task / ncpus)")
    processes: int = Field(1, ge=1, le=1024, description="Dask worker processes per job (cores are split between them)")
    memory: str = Field("2GB", description="memory per job, e.g. 4GB (split between the worker processes)")
    disk: str = Field("1GB", description="scratch disk per job, e.g. 1GB (HTCondor's RequestDisk; others: unused)")
    walltime: str | None = Field(
        "01:00:00",
        description="run-time limit per job, HH:MM:SS (SLURM also D-HH:MM:SS; HTCondor: +MaxRuntime in seconds); "
        "null = the queue's default",
    )
    queue: str | None = Field(None, description="SLURM partition (-p) or PBS queue (-q); null = the default")
    account: str | None = Field(None, description="account / project charged (SLURM -A, PBS -A); null = the default")
    n_jobs: int = Field(1, ge=0, le=10000, description="jobs submitted at the start (the minimum when max_jobs is set)")
    max_jobs: int | None = Field(
        None, ge=1, le=10000, description="null: a fixed n_jobs; else adaptive between n_jobs and max_jobs jobs"
    )
    job_directives: list[str] = Field(
        default_factory=list,
        description="extra header lines: SLURM/PBS options (e.g. '--gres=gpu:1', '-l nodes=1'), "
        "HTCondor 'key = value' commands (e.g. '+JobFlavour = \"workday\"')",
    )
    setup: list[str] = Field(
        default_factory=list,
        description="shell lines each job runs before starting its workers (module load, source a setup script)",
    )
    python: str | None = Field(None, description="the workers' Python; null = the interpreter that runs the flow")
    interface: str | None = Field(None, description="network interface of scheduler and workers (e.g. ib0); null = any")
    log_directory: str | None = Field(None, description="folder for the jobs' stdout/stderr; null = the batch default")

    @field_validator("memory", "disk")
    @classmethod
    def _size_form(cls, v: str) -> str:
        if not re.fullmatch(MEMORY_PATTERN, v) or float(re.split(r"\s*[a-zA-Z]", v)[0]) <= 0:
            raise ValueError("must be a positive size with a unit, e.g. '4GB', '4 GiB' or '500MB'")
        return v

    @field_validator("walltime", mode="before")
    @classmethod
    def _walltime_seconds(cls, v: object) -> object:
        # YAML 1.1 (PyYAML) reads an unquoted 01:00:00 as the base-60 integer 3600: take it as seconds
        if isinstance(v, int) and not isinstance(v, bool):
            if v <= 0:
                raise ValueError("must be > 0 (HH:MM:SS, or seconds)")
            return f"{v // 3600:02d}:{v // 60 % 60:02d}:{v % 60:02d}"
        return v

    @field_validator("walltime")
    @classmethod
    def _walltime_form(cls, v: str | None) -> str | None:
        if v is not None and (not re.fullmatch(WALLTIME_PATTERN, v) or walltime_seconds(v) == 0):
            raise ValueError("must have the form HH:MM:SS (SLURM also D-HH:MM:SS) and be > 0, or be null")
        return v

    @field_validator("queue", "account", "python", "interface", "log_directory")
    @classmethod
    def _not_blank(cls, v: str | None) -> str | None:
        if v is not None and not v.strip():
            raise ValueError("must not be empty (null for the default)")
        return v

    @field_validator("job_directives", "setup")
    @classmethod
    def _lines(cls, v: list[str]) -> list[str]:
        for i, line in enumerate(v):
            if not line.strip() or "\n" in line:
                raise ValueError(f"item {i} ({line!r}) must be one non-empty line")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> JobqueueParams:
        k = "runtime.jobqueue"
        if self.processes > self.cores or self.cores % self.processes:
            raise ValueError(
                f"{k}.cores={self.cores} must be a multiple of {k}.processes={self.processes} "
                "(each worker process gets cores / processes threads)"
            )
        if self.max_jobs is not None and self.max_jobs < self.n_jobs:
            raise ValueError(f"{k}.max_jobs={self.max_jobs} must be >= {k}.n_jobs={self.n_jobs} (the adaptive minimum)")
        if self.max_jobs is None and self.n_jobs == 0:
            raise ValueError(f"{k}.n_jobs=0 starts no worker: set n_jobs >= 1, or max_jobs for an adaptive cluster")
        if self.walltime is not None and "-" in self.walltime and self.system != "slurm":
            raise ValueError(f"{k}.walltime={self.walltime!r}: the D-HH:MM:SS form is SLURM's; use HH:MM:SS")
        if self.system == "htcondor":
            for key in ("queue", "account"):
                if getattr(self, key) is not None:
                    raise ValueError(
                        f"{k}.{key}={getattr(self, key)!r} has no HTCondor equivalent; set it to null and give the "
                        f"pool's own commands in {k}.job_directives (e.g. '+JobFlavour = \"workday\"', "
                        "'accounting_group = group_x')"
                    )
            for i, line in enumerate(self.job_directives):
                if not re.fullmatch(HTCONDOR_COMMAND_PATTERN, line):
                    raise ValueError(f"{k}.job_directives.{i}={line!r}: an HTCondor submit command has the form 'key = value'")
        return self

    @property
    def submit_command(self) -> str:
        """The batch system's submit command (``sbatch``, ``condor_submit``, ``qsub``)."""
        return SUBMIT_COMMANDS[self.system]

    @property
    def cluster_class(self) -> str:
        """Qualified name of the ``dask_jobqueue`` cluster class."""
        return CLUSTER_CLASSES[self.system]


class RuntimeParams(ParamsModel):
    """Where and how the numerics run."""

    device: Literal["cpu", "auto", "cuda"] = "cpu"
    threads: int = Field(1, ge=1, le=256, description="torch intra-op threads per process")
    task_workers: int = Field(1, ge=1, le=64, description="concurrent Prefect tasks: pool threads or Dask worker processes")
    task_runner: Literal["threads", "dask_local", "dask_address", "dask_jobqueue"] = Field(
        "threads",
        description="threads: ThreadPoolTaskRunner; dask_local: LocalCluster of task_workers processes; "
        "dask_address: an existing Dask cluster at dask_address; dask_jobqueue: Dask workers in batch jobs "
        "(SLURM, HTCondor, PBS) as set in jobqueue",
    )
    dask_address: str | None = Field(
        None, description="scheduler address for task_runner=dask_address, e.g. tcp://127.0.0.1:8786"
    )
    jobqueue: JobqueueParams = Field(
        default_factory=JobqueueParams, description="batch jobs of task_runner=dask_jobqueue (unused otherwise)"
    )
    limits: LimitsParams = Field(
        default_factory=LimitsParams, description="memory, disk and hours of work a stage may ask for (config.resources)"
    )

    @field_validator("dask_address")
    @classmethod
    def _address_form(cls, v: str | None) -> str | None:
        if v is not None and not re.fullmatch(DASK_ADDRESS_PATTERN, v):
            raise ValueError("must have the form tcp://host:port (or tls://host:port)")
        return v

    @model_validator(mode="after")
    def _address_iff_needed(self) -> RuntimeParams:
        if self.task_runner == "dask_address" and not self.dask_address:
            raise ValueError(
                "runtime.dask_address must be set (e.g. 'tcp://127.0.0.1:8786') when runtime.task_runner is 'dask_address'"
            )
        if self.task_runner != "dask_address" and self.dask_address is not None:
            raise ValueError(
                f"runtime.dask_address={self.dask_address!r} is only used with runtime.task_runner 'dask_address'; set it to null"
            )
        return self


class VolumeParams(ParamsModel):
    """Detector / passive layout of ``tomopt_lib.volume.builders.build_panel_volume``."""

    lw: list[PosFloat] = Field(default_factory=lambda: [1.0, 1.0], min_length=2, max_length=2)
    voxel_size: float = Field(0.1, gt=0, le=10)
    passive_n_layers: int = Field(6, ge=1, le=100)
    n_panels_above: int = Field(4, ge=2, le=16)
    n_panels_below: int = Field(4, ge=2, le=16)
    res: float = Field(1e4, gt=0, le=1e9, description="panel resolution [1/m]")
    eff: float = Field(0.9, gt=0, le=1)
    panel_span: float = Field(1.0, gt=0, le=100)
    step_sz: float = Field(0.01, gt=0, le=1)
    scatter_model: Literal["pdg"] = "pdg"
    sigmoid_smooth: float | None = Field(None, gt=0, le=10)
    energy_loss: bool = Field(True, description="continuous muon energy loss in the passive layers (off: TomOpt)")
    highland_beta: bool = Field(True, description="Highland with the muon's beta (off: TomOpt's beta = 1)")

    @model_validator(mode="after")
    def _voxels_fit(self) -> VolumeParams:
        ok = is_voxel_multiple(self.lw, self.voxel_size).tolist()
        for i, v in enumerate(self.lw):
            if not ok[i]:
                raise ValueError(f"volume.lw.{i}={v} must be a whole multiple of volume.voxel_size={self.voxel_size}")
        if self.step_sz > self.voxel_size:
            raise ValueError(
                f"volume.step_sz={self.step_sz} exceeds volume.voxel_size={self.voxel_size}: a propagation step must not "
                "jump over a passive layer (use at most the voxel size)"
            )
        return self


class PassiveParams(ParamsModel):
    """Random passive volumes (``tomopt_lib.optimisation.data.passives``)."""

    n_volumes: int = Field(10, ge=1, le=100000)
    generator: Literal["random_block", "voxel"] = "random_block"
    materials: list[str] = Field(default_factory=lambda: ["beryllium", "aluminium", "iron", "lead"], min_length=2)
    block_size: list[PosFloat] | None = Field(None, min_length=3, max_length=3)
    block_size_max_half: bool = True
    sort_x0: bool = False
    enforce_diff_mat: bool = True

    @field_validator("materials")
    @classmethod
    def _known_materials(cls, v: list[str]) -> list[str]:
        return check_materials(v)


class IrradiateParams(ParamsModel):
    """Muon generation and propagation."""

    n_muons_per_volume: int = Field(10000, ge=0, le=10_000_000)
    chunk_size: int = Field(5000, ge=1, le=1_000_000)
    flux_model: Literal["2015", "2016"] = "2016"
    fixed_mom: float | None = Field(None, gt=0, le=1e4, description="GeV; null = sample from the flux")
    min_angle_deg: float = Field(15.0, ge=0, lt=90, description="generation-area widening angle")
    theta_max_deg: float = Field(70.0, gt=0, lt=90)
    realistic_panels: bool = Field(True, description="physical panels (eval mode) instead of the smooth training model")


class ReconstructParams(ParamsModel):
    """Scatter reconstruction (``ScatterBatch``)."""

    chunk_size: int = Field(5000, ge=1, le=1_000_000)


class ReportParams(ParamsModel):
    """Metrics and plots."""

    angle_bins: int = Field(50, ge=2, le=10000)
    max_angle: float = Field(0.2, gt=0, le=3.1416, description="rad; upper edge of the scatter-angle histogram")
    poca_bins_per_voxel: int = Field(2, ge=1, le=50)
