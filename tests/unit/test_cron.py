"""A Schedule's decisions (controller/cron.py), by table: which tick is due, what happens to it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from taskorch.api.schedule import ScheduleSpec
from taskorch.controller.cron import Cron, InvalidSchedule, plan


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def spec(**fields: Any) -> ScheduleSpec:
    return ScheduleSpec.model_validate(
        {"schedule": "* * * * *", "taskTemplate": {"spec": {"type": "t"}}, **fields}
    )


EVERY_MINUTE = Cron.parse("* * * * *", None)


@pytest.mark.parametrize(
    ("since", "now", "fields", "active", "expect"),
    [
        # nothing due before the first tick after creation
        ("10:00:30", "10:00:59", {}, [], None),
        # the tick, on time
        ("10:00:30", "10:01:00.2", {}, [], ("10:01:00", True, "", 0)),
        # decided ticks are not decided again
        ("10:01:00", "10:01:30", {}, [], None),
        # after 5 minutes down: the latest missed tick once (CronJob), 4 passed over
        ("10:00:30", "10:05:10", {}, [], ("10:05:00", True, "", 4)),
        # ... unless it is past startingDeadlineSeconds
        (
            "10:00:30",
            "10:05:40",
            {"startingDeadlineSeconds": 30},
            [],
            ("10:05:00", False, "late", 4),
        ),
        # Skip: a tick over 60 s late is not made up; one on time still runs
        ("10:00:30", "10:05:10", {"missedRuns": "Skip"}, [], ("10:05:00", True, "", 4)),
        (
            "10:00:30",
            "10:06:10",
            {"missedRuns": "Skip", "schedule": "*/5 * * * *"},
            [],
            ("10:05:00", False, "Skip", 0),
        ),
        # a long startingDeadlineSeconds lets RunLatest run late, not Skip (only on time)
        ("10:00:30", "10:07:00", {"startingDeadlineSeconds": 3600}, [], ("10:07:00", True, "", 6)),
        (
            "10:00:30",
            "10:08:59",
            {"startingDeadlineSeconds": 3600, "schedule": "*/7 * * * *"},
            [],
            ("10:07:00", True, "", 0),
        ),
        (
            "10:00:30",
            "10:08:59",
            {"startingDeadlineSeconds": 3600, "schedule": "*/7 * * * *", "missedRuns": "Skip"},
            [],
            ("10:07:00", False, "Skip", 0),
        ),
        # suspended: nothing is decided, so resume is like downtime
        ("10:00:30", "10:05:10", {"suspend": True}, [], None),
        # Forbid skips the tick while a child runs; Allow runs beside it; Replace cancels it
        (
            "10:00:30",
            "10:01:01",
            {"concurrencyPolicy": "Forbid"},
            ["s-1"],
            ("10:01:00", False, "Forbid", 0),
        ),
        (
            "10:00:30",
            "10:01:01",
            {"concurrencyPolicy": "Allow"},
            ["s-1"],
            ("10:01:00", True, "", 0),
        ),
        (
            "10:00:30",
            "10:01:01",
            {"concurrencyPolicy": "Replace"},
            ["s-1"],
            ("10:01:00", True, "", 0),
        ),
    ],
)
def test_plan(
    since: str,
    now: str,
    fields: dict[str, Any],
    active: list[str],
    expect: tuple[str, bool, str, int] | None,
) -> None:
    s = spec(**fields)
    cron = Cron.parse(s.schedule, s.time_zone)
    p = plan(cron, s, at(f"2026-01-05T{since}"), at(f"2026-01-05T{now}"), active)
    if expect is None:
        assert p.tick is None
        return
    tick, fire, reason, missed = expect
    assert p.tick == at(f"2026-01-05T{tick}")
    assert p.fire is fire and reason in p.skip_reason and p.missed == missed
    assert p.cancel == (tuple(active) if fields.get("concurrencyPolicy") == "Replace" else ())


def test_a_time_zone_shifts_the_fire_time() -> None:
    berlin = Cron.parse("0 9 * * *", "Europe/Berlin")
    utc = Cron.parse("0 9 * * *", None)
    start = at("2026-01-05T00:00:00")
    assert berlin.next_after(start).astimezone(UTC) == at("2026-01-05T08:00:00")  # CET
    assert utc.next_after(start) == at("2026-01-05T09:00:00")
    assert berlin.next_after(at("2026-07-05T00:00:00")).astimezone(UTC) == at(
        "2026-07-05T07:00:00"
    )  # CEST


def test_dst_as_croniter_defines_it() -> None:
    berlin = Cron.parse("30 2 * * *", "Europe/Berlin")
    # spring forward (2026-03-29): 02:30 does not exist; it fires at 03:00 local, once
    spring = berlin.next_after(at("2026-03-28T12:00:00"))
    assert spring.astimezone(UTC) == at("2026-03-29T01:00:00")
    # fall back (2026-10-25): 02:30 exists twice, and it fires at both (an hour apart)
    day = at("2026-10-24T22:00:00")
    ticks = []
    t = day
    while (t := berlin.next_after(t)) < day + timedelta(days=1):
        ticks.append(t)
    assert [t.astimezone(UTC) for t in ticks] == [
        at("2026-10-25T00:30:00"),
        at("2026-10-25T01:30:00"),
    ]


def test_child_names_are_the_tick_in_unix_minutes_or_seconds() -> None:
    tick = at("2026-01-05T10:01:00")
    assert EVERY_MINUTE.child_suffix(tick) == str(int(tick.timestamp()) // 60)
    seconds = Cron.parse("*/10 * * * * *", None)
    assert seconds.seconds and seconds.child_suffix(tick) == str(int(tick.timestamp()))
    assert seconds.next_after(tick) == tick + timedelta(seconds=10)


@pytest.mark.parametrize(
    ("expr", "zone", "message"),
    [
        ("61 * * * *", None, "invalid schedule '61 * * * *'"),
        ("@fortnightly", None, "invalid schedule"),
        ("* * * *", None, "invalid schedule"),
        ("* * * * *", "Mars/Olympus", "unknown time zone 'Mars/Olympus'"),
    ],
)
def test_bad_schedules_name_themselves(expr: str, zone: str | None, message: str) -> None:
    with pytest.raises(InvalidSchedule, match=message.replace("*", r"\*")):
        Cron.parse(expr, zone)


def test_macros() -> None:
    daily = Cron.parse("@daily", "Europe/Berlin")
    assert daily.next_after(at("2026-01-05T12:00:00")).astimezone(UTC) == at("2026-01-05T23:00:00")
