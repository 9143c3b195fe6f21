"""Cron schedules of ``flows.serve``: deployments built from ``params.yaml``, next fire times, validation errors."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import tiny_params

from flows.params import ParamsError, load_params, parse_params
from flows.scheduled import date_seed
from flows.serve import build_deployments, main

ROOT = Path(__file__).resolve().parents[1]


def _data(**schedules: Any) -> dict[str, Any]:
    """``tiny_params`` (conftest) with exactly these schedule entries (the others keep their defaults)."""
    return tiny_params(schedules=schedules)


def test_deployments_carry_the_crons_of_params_yaml() -> None:
    from prefect.client.schemas.schedules import CronSchedule

    p = load_params(ROOT / "params.yaml")
    deps = {d.name: d for d in build_deployments(p, "params.yaml", str(ROOT))}
    assert set(deps) == {"nightly-evaluate", "weekly-pipeline"}
    for key, name in (("nightly_evaluate", "nightly-evaluate"), ("weekly_pipeline", "weekly-pipeline")):
        entry = getattr(p.schedules, key)
        sched = deps[name].schedules[0].schedule
        assert isinstance(sched, CronSchedule)
        assert (sched.cron, sched.timezone) == (entry.cron, entry.timezone)
    assert deps["nightly-evaluate"].parameters["workdir"] == str(ROOT)
    assert deps["nightly-evaluate"].flow_name == "nightly_evaluate"


def test_timezone_and_disabled_entries() -> None:
    p = parse_params(
        _data(
            nightly_evaluate={"cron": "30 1 * * 1-5", "timezone": "Europe/Zurich"},
            weekly_pipeline={"cron": "0 3 * * 0", "enabled": False},
        )
    )
    deps = build_deployments(p)
    assert [d.name for d in deps] == ["nightly-evaluate"]
    s = deps[0].schedules[0].schedule
    assert (s.cron, s.timezone) == ("30 1 * * 1-5", "Europe/Zurich")


def test_next_fire_times_without_waiting() -> None:
    from prefect.server.schemas.schedules import CronSchedule

    p = load_params(ROOT / "params.yaml")
    start = dt.datetime(2026, 1, 7, 12, 0, tzinfo=dt.UTC)  # a Wednesday

    def dates(entry: Any) -> list:
        sched = CronSchedule(cron=entry.cron, timezone=entry.timezone)
        return [d.astimezone(dt.UTC).replace(tzinfo=None) for d in asyncio.run(sched.get_dates(n=3, start=start))]

    assert dates(p.schedules.nightly_evaluate) == [dt.datetime(2026, 1, d, 2, 0) for d in (8, 9, 10)]
    assert dates(p.schedules.weekly_pipeline) == [dt.datetime(2026, 1, d, 3, 0) for d in (11, 18, 25)]
    zurich = parse_params(_data(nightly_evaluate={"cron": "0 2 * * *", "timezone": "Europe/Zurich"})).schedules.nightly_evaluate
    assert dates(zurich)[0] == dt.datetime(2026, 1, 8, 1, 0)  # 02:00 CET = 01:00 UTC


def test_date_seed_changes_daily_and_is_reproducible() -> None:
    a, b = dt.date(2026, 1, 8), dt.date(2026, 1, 9)
    assert date_seed(1234, a) == date_seed(1234, a) != date_seed(1234, b)


@pytest.mark.parametrize(
    "schedules, key",
    [
        ({"nightly_evaluate": {"cron": "61 2 * * *"}}, "schedules.nightly_evaluate.cron"),
        ({"nightly_evaluate": {"cron": "every night"}}, "schedules.nightly_evaluate.cron"),
        ({"weekly_pipeline": {"cron": "0 3 * * 0", "timezone": "Mars/Olympus"}}, "schedules.weekly_pipeline.timezone"),
        ({"hourly": {"cron": "0 * * * *"}}, "schedules.hourly"),
        ({"nightly_evaluate": {"cron": "0 2 * * *", "when": "now"}}, "schedules.nightly_evaluate.when"),
    ],
)
def test_bad_schedules_name_the_key(schedules: dict[str, Any], key: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(ParamsError, match=key.replace(".", r"\.")):
        parse_params(_data(**schedules))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(_data(**schedules)))
    assert main(["--workdir", str(tmp_path), "--dry-run"]) == 2
    assert key in capsys.readouterr().err


def test_serve_refuses_without_a_server(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        assert main(["--workdir", str(ROOT)]) == 3
    assert "PREFECT_API_URL is not set" in capsys.readouterr().err
