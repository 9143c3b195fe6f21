"""``schedules`` section of ``params.yaml``: cron schedules served by ``python -m flows.serve`` (``make serve``).

Each entry has a 5-field ``cron`` expression (validated with croniter), an IANA ``timezone`` and ``enabled``.
``nightly_evaluate`` re-evaluates the current trained detector on freshly generated held-out passives (seed derived
from the scheduled date, outputs under ``reports/scheduled/<date>/``); ``weekly_pipeline`` runs ``dvc repro``.
"""

from __future__ import annotations

from pydantic import Field, field_validator

from .base import ParamsModel

__all__ = ["CronEntry", "SchedulesParams"]


class CronEntry(ParamsModel):
    """One scheduled deployment."""

    cron: str = Field(..., min_length=1, description="5-field cron expression, e.g. '0 2 * * *'")
    timezone: str = Field("UTC", min_length=1, description="IANA time zone of the cron expression, e.g. 'Europe/Zurich'")
    enabled: bool = True

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, v: str) -> str:
        from prefect._vendor.croniter import croniter

        if len(v.split()) != 5 or not croniter.is_valid(v):
            raise ValueError(f"not a valid 5-field cron expression (minute hour day-of-month month day-of-week): {v!r}")
        return v

    @field_validator("timezone")
    @classmethod
    def _valid_tz(cls, v: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(v)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown IANA time zone {v!r} (e.g. 'UTC', 'Europe/Zurich')") from None
        return v


class SchedulesParams(ParamsModel):
    """Cron schedules of the served deployments (``null`` entry = not served)."""

    nightly_evaluate: CronEntry | None = Field(default_factory=lambda: CronEntry(cron="0 2 * * *"))
    weekly_pipeline: CronEntry | None = Field(default_factory=lambda: CronEntry(cron="0 3 * * 0"))
