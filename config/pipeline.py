"""The root model ``PipelineParams``: one section per DVC stage plus ``seed``, ``runtime``, ``volume``, ``study``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from .base import ParamsModel
from .lumi import LumiReportParams, LumiScanParams
from .optimise import EvaluateParams, OptimiseParams
from .schedules import SchedulesParams
from .sections import IrradiateParams, PassiveParams, ReconstructParams, ReportParams, RuntimeParams, VolumeParams
from .studies import StudiesParams

__all__ = ["PipelineParams"]


class PipelineParams(ParamsModel):
    """All parameters of the pipeline (one section per DVC stage plus ``seed``, ``runtime``, ``volume``)."""

    seed: int = Field(1234, ge=0, le=2**63 - 1)
    runtime: RuntimeParams = Field(default_factory=RuntimeParams)
    volume: VolumeParams = Field(default_factory=VolumeParams)
    passives: PassiveParams = Field(default_factory=PassiveParams)
    irradiate: IrradiateParams = Field(default_factory=IrradiateParams)
    reconstruct: ReconstructParams = Field(default_factory=ReconstructParams)
    report: ReportParams = Field(default_factory=ReportParams)
    lumi_scan: LumiScanParams = Field(default_factory=LumiScanParams)
    lumi_report: LumiReportParams = Field(default_factory=LumiReportParams)
    optimise: OptimiseParams = Field(default_factory=OptimiseParams)
    evaluate: EvaluateParams = Field(default_factory=EvaluateParams)
    schedules: SchedulesParams = Field(default_factory=SchedulesParams)
    study: Literal["default", "ladle_furnace", "u_lorry", "small_walls"] = Field(
        "default", description="benchmark study of the study stage (default: none; the main stages are the default study)"
    )
    studies: StudiesParams = Field(default_factory=StudiesParams)

    @model_validator(mode="after")
    def _u_block_fits(self) -> PipelineParams:
        if self.study != "u_lorry":  # only the selected study's settings must fit the geometry
            return self
        n = self.studies.u_lorry.u_volume / self.volume.voxel_size**3
        if abs(n - round(n)) > 1e-6 * max(1.0, n) or round(n) < 1:
            raise ValueError(
                f"studies.u_lorry.u_volume={self.studies.u_lorry.u_volume} m^3 must be a whole number (>= 1) of voxels "
                f"of volume.voxel_size={self.volume.voxel_size} m ({self.volume.voxel_size**3:g} m^3 each)"
            )
        return self

    @model_validator(mode="after")
    def _block_fits(self) -> PipelineParams:
        bs = self.passives.block_size
        if bs is not None:
            v = self.volume
            extent = (v.lw[0], v.lw[1], v.passive_n_layers * v.voxel_size)
            for i, (b, e) in enumerate(zip(bs, extent)):
                if b > e + 1e-9:
                    raise ValueError(f"passives.block_size.{i}={b} exceeds the passive extent {e:g} m along {'xyz'[i]}")
                if b < v.voxel_size - 1e-9:
                    raise ValueError(
                        f"passives.block_size.{i}={b} is smaller than one voxel (volume.voxel_size={v.voxel_size} m): "
                        "the block would fill no voxel"
                    )
        return self
