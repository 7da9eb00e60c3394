"""Armed schedules: the times of the week when a zone or a tripwire raises its signal (a door watched
only at night, a loading bay only at weekends), and the clock they are judged by.

A schedule is a list of windows, each written ``[DAYS ]HH:MM-HH:MM``: ``22:00-06:00`` (every day),
``mon-fri 18:00-07:30``, ``sat,sun 00:00-24:00``. A window whose end is not after its start runs past
midnight and belongs to the day it starts on (``fri 22:00-06:00`` ends on Saturday morning). No
windows: always armed.

The clock is a camera's scene time in ``runtime.timezone``: when a live frame was captured, or, for a
recorded file with ``recorded_at``, that time plus the frame's media time (so a replay is judged by
when it was recorded, not by when it is replayed).
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MINUTES_PER_DAY = 24 * 60
_WINDOW = re.compile(r"^\s*(?:(?P<days>[A-Za-z,\- ]+?)\s+)?(?P<start>\d{1,2}:\d{2})\s*-\s*(?P<end>\d{1,2}:\d{2})\s*$")


@dataclass(frozen=True)
class ArmedWindow:
    """One window of a schedule: minutes of the day from ``start`` to ``end`` (past midnight when
    ``end <= start``), on the weekdays in ``days`` (0 is Monday) that it starts on."""

    text: str
    days: frozenset[int]
    start: int
    end: int

    def covers(self, moment: datetime) -> bool:
        minute = moment.hour * 60 + moment.minute
        day = moment.weekday()
        if self.start < self.end:
            return day in self.days and self.start <= minute < self.end
        return (day in self.days and minute >= self.start) or ((day - 1) % 7 in self.days and minute < self.end)


def _minutes(clock: str, text: str, *, end: bool) -> int:
    hours, minutes = (int(part) for part in clock.split(":"))
    if minutes > 59 or hours > 24 or (hours == 24 and (minutes or not end)):
        latest = "24:00" if end else "23:59"
        raise ValueError(f"{clock!r} in armed window {text!r} is not a time of day (00:00 to {latest})")
    return hours * 60 + minutes


_FULL_NAMES = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def _day(name: str, text: str) -> int:
    key = name.strip().lower()
    for index, spellings in enumerate(zip(DAY_NAMES, _FULL_NAMES, strict=True)):
        if key in spellings:
            return index
    raise ValueError(f"unknown day {name.strip()!r} in armed window {text!r}: use {', '.join(DAY_NAMES)}")


def _days(spec: str | None, text: str) -> frozenset[int]:
    if spec is None or spec.strip().lower() in ("daily", "every day"):
        return frozenset(range(7))
    days: set[int] = set()
    for part in spec.split(","):
        if not part.strip():
            raise ValueError(f"an empty day in armed window {text!r}")
        if "-" in part:
            first, _, last = part.partition("-")
            a, b = _day(first, text), _day(last, text)
            days.update((a + i) % 7 for i in range((b - a) % 7 + 1))  # fri-mon wraps over the weekend
        else:
            days.add(_day(part, text))
    return frozenset(days)


def parse_window(text: str) -> ArmedWindow:
    """``[DAYS ]HH:MM-HH:MM`` as an ``ArmedWindow``; a ValueError that quotes ``text`` otherwise."""
    match = _WINDOW.match(text)
    if match is None:
        raise ValueError(
            f"armed window {text!r} is not '[DAYS ]HH:MM-HH:MM' (for example '22:00-06:00' or 'mon-fri 18:00-07:30')"
        )
    start = _minutes(match["start"], text, end=False)
    end = _minutes(match["end"], text, end=True)
    if start == end % MINUTES_PER_DAY and end != MINUTES_PER_DAY:
        raise ValueError(f"armed window {text!r} starts and ends at the same time (a whole day is 00:00-24:00)")
    return ArmedWindow(text.strip(), _days(match["days"], text), start, end)


def parse_schedule(windows: Sequence[str]) -> tuple[ArmedWindow, ...]:
    return tuple(parse_window(text) for text in windows)


def armed_at(windows: Sequence[ArmedWindow], moment: datetime) -> bool:
    """Whether a rule with these windows is armed at ``moment`` (always, without windows)."""
    return not windows or any(window.covers(moment) for window in windows)


def describe(windows: Sequence[ArmedWindow]) -> str:
    return "; ".join(window.text for window in windows) if windows else "always"


def time_zone(name: str | None) -> tzinfo | None:
    """The IANA time zone ``name`` (``Europe/Berlin``); None for None: this host's local time, read
    afresh at each conversion (a fixed offset taken at start would be an hour off after a change to
    or from summer time). Unknown names raise a ValueError with the nearest known ones."""
    if name is None:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        close = difflib.get_close_matches(name, sorted(available_timezones()), n=3, cutoff=0.6)
        named = " or ".join(repr(c) for c in close)
        hint = f" (did you mean {named}?)" if close else " (an IANA name like 'Europe/Berlin')"
        raise ValueError(f"unknown time zone {name!r}{hint}") from None


@dataclass(frozen=True)
class SceneClock:
    """A camera's clock time for a frame: ``recorded_at`` plus its media time for a recording with a
    known start, else its capture wall time; in ``zone``."""

    zone: tzinfo | None  # None: the host's local time (``time_zone``)
    recorded_at: datetime | None = None

    @classmethod
    def of(cls, timezone: str | None, recorded_at: datetime | None) -> SceneClock:
        """A camera's clock from ``runtime.timezone`` (by name) and its ``recorded_at``."""
        return cls(time_zone(timezone), recorded_at)

    def at(self, pts: float, wall_time: float) -> datetime:
        if self.recorded_at is not None:
            start = self.recorded_at
            if start.tzinfo is None:  # in the clock's zone
                start = start.replace(tzinfo=self.zone) if self.zone is not None else start.astimezone()
            return (start + timedelta(seconds=pts)).astimezone(self.zone)
        return datetime.fromtimestamp(wall_time, UTC).astimezone(self.zone)

    def naming(self, live: bool, frame_pts: float, frame_wall_time: float) -> Callable[[float], str]:
        """How an alert's reasons name the media time of something the frame at ``frame_pts`` (read
        at ``frame_wall_time``) shows: a live camera's by its clock time (``22:14:03``: its media time
        only counts seconds since the run began); a file's by its media time, where to look in it
        (``25.6 s``), with the clock time when the recording's start is known (``25.6 s (22:00:05)``)."""
        if live:
            return lambda t: f"{self.at(t, frame_wall_time - (frame_pts - t)):%H:%M:%S}"
        if self.recorded_at is not None:
            return lambda t: f"{t:.1f} s ({self.at(t, 0.0):%H:%M:%S})"
        return media_seconds


def media_seconds(t: float) -> str:
    return f"{t:.1f} s"


def armed_notes(rules: Sequence[tuple[str, Sequence[str]]], clock: SceneClock, now: float) -> list[str]:
    """One line per scheduled rule (``(what, windows)``, as ``("zone 'door'", ["22:00-06:00"])``): its
    windows, and whether it is armed on the camera's clock now (``now``: a wall time), or, for a
    recording, when the recording starts."""
    notes = []
    for what, texts in rules:
        windows = parse_schedule(texts)
        if clock.recorded_at is not None:
            start = clock.at(0.0, now)
            state = "armed" if armed_at(windows, start) else "disarmed"
            when = f"{state} when the recording starts ({start:%a %Y-%m-%d %H:%M:%S %Z})"
        else:
            moment = clock.at(0.0, now)
            when = f"{'armed' if armed_at(windows, moment) else 'disarmed'} now ({moment:%a %H:%M %Z})"
        notes.append(f"{what} (armed {describe(windows)}): {when}")
    return notes
