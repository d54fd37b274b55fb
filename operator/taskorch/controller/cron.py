"""A Schedule's decisions, pure: which tick is due, whether it fires, is skipped or replaces
the running child (DESIGN §4 Schedule). Cron parsing, time zones and DST are croniter's: a time
that does not exist (spring forward) fires at the first time after it; one that exists twice
(fall back) fires at both occurrences, an hour apart (docs/queues-and-schedules.md)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from croniter.croniter import CroniterError

from taskorch.api.schedule import ConcurrencyPolicy, MissedRuns, ScheduleSpec

# Under `missedRuns: Skip` a tick later than this (or startingDeadlineSeconds, if shorter) is
# missed and not made up: Quartz's misfire threshold and its "do nothing" instruction.
SKIP_AFTER_SECONDS = 60
# Counting missed ticks stops here (a seconds schedule after a day's downtime has 86,400).
MAX_COUNTED = 1000


class InvalidSchedule(ValueError):
    pass


@dataclass(frozen=True)
class Cron:
    expr: str
    tz: ZoneInfo
    seconds: bool  # a 6-field expression, seconds first

    @classmethod
    def parse(cls, expr: str, time_zone: str | None) -> Cron:
        try:
            tz = ZoneInfo(time_zone or "UTC")
        except (ZoneInfoNotFoundError, ValueError) as e:
            raise InvalidSchedule(f"unknown time zone {time_zone!r}") from e
        seconds = not expr.startswith("@") and len(expr.split()) == 6
        cron = cls(expr, tz, seconds)
        try:
            cron._iter(datetime.now(UTC)).get_next(datetime)
        except (CroniterError, ValueError, KeyError) as e:
            raise InvalidSchedule(f"invalid schedule {expr!r}: {e}") from e
        return cron

    def _iter(self, start: datetime) -> croniter:
        return croniter(self.expr, start.astimezone(self.tz), second_at_beginning=self.seconds)

    def next_after(self, t: datetime) -> datetime:
        tick: datetime = self._iter(t).get_next(datetime)
        return tick

    def latest_in(self, after: datetime, until: datetime) -> tuple[datetime | None, int]:
        """The latest tick in (after, until], and how many ticks that interval holds (counted
        up to MAX_COUNTED)."""
        start = until.replace(microsecond=0) + timedelta(seconds=1)
        latest: datetime = self._iter(start).get_prev(datetime)
        if latest <= after:
            return None, 0
        it, count = self._iter(after), 0
        while count < MAX_COUNTED and it.get_next(datetime) <= latest:
            count += 1
        return latest, count

    def child_suffix(self, tick: datetime) -> str:
        """The tick as the child's name suffix: unix minutes, or seconds for a seconds schedule."""
        ts = int(tick.timestamp())
        return str(ts if self.seconds else ts // 60)


@dataclass(frozen=True)
class Plan:
    tick: datetime | None  # the tick decided now; None: nothing due
    fire: bool = False
    skip_reason: str = ""
    cancel: tuple[str, ...] = ()  # Replace: the running children to cancel first
    missed: int = 0  # earlier ticks passed over without running (downtime, suspend)


def plan(cron: Cron, spec: ScheduleSpec, since: datetime, now: datetime, active: list[str]) -> Plan:
    """Decide the latest tick after `since` (the last tick decided, or the Schedule's creation).
    While suspended nothing is decided, so resuming is the same as coming back from downtime:
    missedRuns says whether the latest missed tick runs."""
    if spec.suspend:
        return Plan(None)
    latest, count = cron.latest_in(since, now)
    if latest is None:
        return Plan(None)
    missed = count - 1
    late = (now - latest).total_seconds()
    deadline = spec.starting_deadline_seconds
    if deadline is not None and late > deadline:
        return Plan(
            latest, skip_reason=f"{late:.0f}s late, past startingDeadlineSeconds", missed=missed
        )
    if spec.missed_runs is MissedRuns.Skip and late > min(
        deadline or SKIP_AFTER_SECONDS, SKIP_AFTER_SECONDS
    ):
        return Plan(
            latest, skip_reason=f"missed ({late:.0f}s late) and missedRuns is Skip", missed=missed
        )
    if active and spec.concurrency_policy is ConcurrencyPolicy.Forbid:
        return Plan(latest, skip_reason=f"Forbid: {active[0]} still running", missed=missed)
    cancel = tuple(active) if spec.concurrency_policy is ConcurrencyPolicy.Replace else ()
    return Plan(latest, fire=True, cancel=cancel, missed=missed)
