"""Parameter sections of the muon-tomography stages and the shared ``runtime`` / ``volume`` sections."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from tomopt_lib.checks import check_materials, is_voxel_multiple

from .base import ParamsModel, PosFloat

DASK_ADDRESS_PATTERN = r"^(tcp|tls)://[A-Za-z0-9.\-]+:[0-9]{1,5}$"
"""Form of ``runtime.dask_address``: ``tcp://host:port`` or ``tls://host:port``."""

__all__ = [
    "DASK_ADDRESS_PATTERN",
    "RuntimeParams",
    "VolumeParams",
    "PassiveParams",
    "IrradiateParams",
    "ReconstructParams",
    "ReportParams",
]


class RuntimeParams(ParamsModel):
    """Where and how the numerics run."""

    device: Literal["cpu", "auto", "cuda"] = "cpu"
    threads: int = Field(1, ge=1, le=256, description="torch intra-op threads per process")
    task_workers: int = Field(1, ge=1, le=64, description="concurrent Prefect tasks: pool threads or Dask worker processes")
    task_runner: Literal["threads", "dask_local", "dask_address"] = Field(
        "threads",
        description="threads: ThreadPoolTaskRunner; dask_local: LocalCluster of task_workers processes; "
        "dask_address: an existing Dask cluster at dask_address",
    )
    dask_address: str | None = Field(
        None, description="scheduler address for task_runner=dask_address, e.g. tcp://127.0.0.1:8786"
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
