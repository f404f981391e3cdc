"""Release windows and calendar freezes, as instants.

A window is written in wall-clock time in its time zone (``tue 09:00-16:00 Europe/London``);
it opens at the first instant whose local time is at or after its start, and closes at the
first instant whose local time is at or after its end, on the day it opens (or the next day, if
its end is not after its start: it crosses midnight). Everything is computed as instants from
the time zone's rules (:mod:`zoneinfo`), so daylight-saving changes are what they are:

- a wall time skipped in spring (01:30 in London on the last Sunday of March) is reached at the
  jump itself (01:00 UTC, when the clocks show 02:00): a window from 01:30 opens then;
- a wall time that happens twice in autumn is reached the first time: a window from 01:00 to
  03:00 on that night is three hours long, as the clocks on the wall show.

A calendar freeze runs from the start of its first day to the end of its last (or between the
two times given). Nothing here reads a clock: callers pass ``now`` (seconds since the epoch).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from ..config import FreezeConfig, GatesConfig, WindowConfig, time_zone
from ..config._gates import DAYS

__all__ = ["Calendar", "Freeze", "Occurrence", "Window", "iso_local", "local_instant"]

# How far ahead the next opening is looked for (a year and a bit: a long freeze included).
HORIZON_DAYS = 400


def local_instant(day: dt.date, minutes: int, tz: ZoneInfo) -> float:
    """The first instant whose wall-clock time in ``tz`` is at or after ``minutes`` past
    midnight of ``day`` (see the module documentation for the daylight-saving rules)."""
    wall = dt.datetime.combine(day, dt.time()) + dt.timedelta(minutes=minutes)
    first = wall.replace(tzinfo=tz, fold=0).timestamp()
    second = wall.replace(tzinfo=tz, fold=1).timestamp()
    if first == second or _wall(first, tz) == wall:
        return min(first, second)  # it exists (once, or twice: the first time)
    # Skipped by the clocks: the first instant after the jump. The jump lies between the two
    # readings; the wall clock only moves forward across it, so bisect to the second.
    lo, hi = min(first, second), max(first, second)
    while hi - lo > 0.5:
        mid = (lo + hi) / 2
        if _wall(mid, tz) >= wall:
            hi = mid
        else:
            lo = mid
    return float(round(hi))


def _wall(t: float, tz: ZoneInfo) -> dt.datetime:
    return dt.datetime.fromtimestamp(t, tz).replace(tzinfo=None)


def iso_local(t: float, tz: ZoneInfo) -> str:
    """``t`` as the wall clock in ``tz`` shows it, with its day: ``tue 2026-12-08 09:00 Europe/London``."""
    local = dt.datetime.fromtimestamp(t, tz)
    return f"{DAYS[local.weekday()]} {local:%Y-%m-%d %H:%M} {tz.key}"


def _minutes(hhmm: str) -> int:
    hours, minutes = hhmm.split(":")
    return int(hours) * 60 + int(minutes)


@dataclass(frozen=True)
class Occurrence:
    """One opening of a window: from ``opens`` to ``closes`` (instants)."""

    window: Window
    opens: float
    closes: float

    def describe(self) -> str:
        return (f"{self.window.label}, open from {iso_local(self.opens, self.window.tz)} to "
                f"{iso_local(self.closes, self.window.tz)}")


@dataclass(frozen=True)
class Window:
    days: tuple[int, ...]  # 0 = Monday: the days it opens
    start: int  # minutes past midnight
    end: int  # minutes past midnight (1440: midnight at its end); <= start: the next day
    tz: ZoneInfo

    @classmethod
    def of(cls, config: WindowConfig, default_tz: str) -> Window:
        return cls(days=tuple(DAYS.index(d) for d in config.days), start=_minutes(config.start),
                   end=_minutes(config.end), tz=time_zone(config.tz or default_tz))

    @property
    def label(self) -> str:
        days = ",".join(DAYS[d] for d in self.days) if len(self.days) < 7 else "every day"
        start, end = (f"{m // 60:02d}:{m % 60:02d}" for m in (self.start, self.end))
        return f"{days} {start}-{end} {self.tz.key}"

    def occurrence(self, day: dt.date) -> Occurrence | None:
        """The window opening on local ``day``, if it opens that day."""
        if day.weekday() not in self.days:
            return None
        # An end not after the start (or 24:00) is on the next day.
        end_day = day + dt.timedelta(days=0 if self.start < self.end < 1440 else 1)
        return Occurrence(self, local_instant(day, self.start, self.tz),
                          local_instant(end_day, self.end % 1440, self.tz))

    def occurrences(self, after: float, days: int) -> list[Occurrence]:
        """Its openings from the day before ``after`` (one that crosses midnight may still be
        open) for ``days`` days, in order."""
        today = dt.datetime.fromtimestamp(after, self.tz).date()
        found = []
        for i in range(-1, days):
            occurrence = self.occurrence(today + dt.timedelta(days=i))
            if occurrence is not None and occurrence.closes > after:
                found.append(occurrence)
        return found


@dataclass(frozen=True)
class Freeze:
    starts: float
    ends: float
    reason: str
    label: str

    @classmethod
    def of(cls, config: FreezeConfig, default_tz: str) -> Freeze:
        tz = time_zone(config.tz or default_tz)
        return cls(_instant(config.start, tz, end=False), _instant(config.end, tz, end=True),
                   config.reason, f"{config.start} to {config.end} {tz.key}")

    def covers(self, now: float) -> bool:
        return self.starts <= now < self.ends


def _instant(text: str, tz: ZoneInfo, *, end: bool) -> float:
    if len(text) == 10:  # a whole day: its start, or (as an end) the start of the next
        day = dt.date.fromisoformat(text) + dt.timedelta(days=1 if end else 0)
        return local_instant(day, 0, tz)
    when = dt.datetime.fromisoformat(text)
    return local_instant(when.date(), when.hour * 60 + when.minute, tz)


@dataclass(frozen=True)
class Calendar:
    """An environment's windows and calendar freezes."""

    windows: tuple[Window, ...] = ()
    freezes: tuple[Freeze, ...] = ()

    @classmethod
    def of(cls, gates: GatesConfig) -> Calendar:
        return cls(tuple(Window.of(w, gates.timezone) for w in gates.windows),
                   tuple(Freeze.of(f, gates.timezone) for f in gates.freezes))

    @property
    def has_windows(self) -> bool:
        return bool(self.windows)

    def window_at(self, now: float) -> Occurrence | None:
        """The window open at ``now`` (the one closing last, if several are); None when none
        is (or when there are no windows at all: see has_windows)."""
        open_now = [o for w in self.windows for o in w.occurrences(now, 2) if o.opens <= now < o.closes]
        return max(open_now, key=lambda o: o.closes) if open_now else None

    def freeze_at(self, now: float) -> Freeze | None:
        return next((f for f in self.freezes if f.covers(now)), None)

    def allowed(self, now: float) -> bool:
        return self.freeze_at(now) is None and (not self.windows or self.window_at(now) is not None)

    def next_opening(self, now: float) -> float | None:
        """The first instant at or after ``now`` when a deployment is allowed (in a window,
        outside every freeze); None when there is none within the horizon."""
        if not self.windows:
            candidate = now
            for _ in range(len(self.freezes) + 1):
                freeze = self.freeze_at(candidate)
                if freeze is None:
                    return candidate
                candidate = freeze.ends
            return candidate if self.freeze_at(candidate) is None else None
        occurrences = sorted((o for w in self.windows for o in w.occurrences(now, HORIZON_DAYS)),
                             key=lambda o: o.opens)
        for occurrence in occurrences:
            candidate = max(occurrence.opens, now)
            while candidate < occurrence.closes:
                freeze = self.freeze_at(candidate)
                if freeze is None:
                    return candidate
                candidate = freeze.ends
        return None

    def describe_windows(self) -> str:
        return "; ".join(w.label for w in self.windows)

