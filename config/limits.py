"""``runtime.limits``: the memory, disk and hours of work a stage may ask for (checked by ``config.resources``)."""

from __future__ import annotations

from pydantic import Field

from .base import ParamsModel

__all__ = ["LimitsParams"]


class LimitsParams(ParamsModel):
    """What a stage may ask for; null = this machine's capacity at the time of the check."""

    memory_gb: float | None = Field(
        None, gt=0, le=1e6, description="peak memory a stage may need [GB]; null = 90 % of the memory available now"
    )
    disk_gb: float | None = Field(
        None, gt=0, le=1e9, description="disk a stage may write [GB]; null = 90 % of the free space of the work folder"
    )
    stage_hours: float = Field(
        24.0, gt=0, le=1e5, description="estimated hours of work per stage (on runtime.task_workers workers)"
    )
