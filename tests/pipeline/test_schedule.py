from __future__ import annotations

import re
import time
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from pipeline.schedule import SceneClock, armed_at, armed_notes, parse_schedule, parse_window, time_zone

BERLIN = ZoneInfo("Europe/Berlin")


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=BERLIN)


def test_a_window_without_days_is_every_day_and_one_past_midnight_runs_into_the_next_morning():
    nights = parse_schedule(["22:00-06:00"])
    assert armed_at(nights, at("2026-11-30 23:30")) and armed_at(nights, at("2026-12-01 05:59"))
    assert not armed_at(nights, at("2026-12-01 06:00")) and not armed_at(nights, at("2026-12-01 21:59"))


def test_an_overnight_window_belongs_to_the_day_it_starts_on():
    friday_night = parse_schedule(["fri 22:00-06:00"])
    assert armed_at(friday_night, at("2026-11-28 05:00"))  # Saturday morning: Friday's night
    assert not armed_at(friday_night, at("2026-11-27 05:00"))  # Friday morning: Thursday's, not asked for
    assert not armed_at(friday_night, at("2026-11-28 23:00"))  # Saturday night


def test_days_take_ranges_lists_full_names_and_wrap_over_the_weekend():
    assert parse_window("mon-fri 18:00-07:30").days == frozenset(range(5))
    assert parse_window("sat,sun 00:00-24:00").days == frozenset({5, 6})
    assert parse_window("fri-mon 10:00-11:00").days == frozenset({4, 5, 6, 0})
    assert parse_window("Tuesday 9:00-17:00").days == frozenset({1})
    assert parse_window("daily 00:00-24:00").days == frozenset(range(7))
    weekend = parse_schedule(["sat,sun 00:00-24:00"])
    assert armed_at(weekend, at("2026-11-29 23:59")) and not armed_at(weekend, at("2026-11-30 00:00"))


def test_no_windows_is_always_armed_and_several_are_any_of_them():
    assert armed_at((), at("2026-11-30 12:00"))
    shifts = parse_schedule(["mon-fri 18:00-07:30", "sat,sun 00:00-24:00"])
    assert armed_at(shifts, at("2026-11-28 12:00")) and not armed_at(shifts, at("2026-11-30 12:00"))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("22-06", "armed window '22-06' is not '[DAYS ]HH:MM-HH:MM'"),
        ("25:00-06:00", "'25:00' in armed window '25:00-06:00' is not a time of day (00:00 to 23:59)"),
        ("10:00-24:30", "'24:30' in armed window '10:00-24:30' is not a time of day (00:00 to 24:00)"),
        ("weekdays 10:00-11:00", "unknown day 'weekdays' in armed window 'weekdays 10:00-11:00': use mon, tue,"),
        ("10:00-10:00", "starts and ends at the same time (a whole day is 00:00-24:00)"),
        ("mon,,tue 10:00-11:00", "an empty day in armed window 'mon,,tue 10:00-11:00'"),
    ],
)
def test_a_window_that_is_not_one_is_refused_saying_why(text, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_window(text)


def test_an_unknown_time_zone_is_refused_with_the_names_it_is_close_to():
    assert time_zone("Europe/Berlin") == BERLIN
    with pytest.raises(ValueError, match=r"unknown time zone 'Europe/Berln' \(did you mean 'Europe/Berlin'"):
        time_zone("Europe/Berln")
    assert time_zone(None) is None  # this host's, read at each conversion (see below)


def test_a_recording_s_clock_runs_from_recorded_at_and_a_camera_s_from_its_capture_time():
    recording = SceneClock(BERLIN, datetime(2026, 11, 28, 21, 59, 55))  # naive: in the clock's zone
    assert recording.at(7.5, wall_time=0.0) == at("2026-11-28 22:00:02.500")
    offset = SceneClock(BERLIN, datetime(2026, 11, 28, 20, 0, tzinfo=timezone(timedelta(hours=-1))))
    assert offset.at(0.0, 0.0) == at("2026-11-28 22:00")  # 20:00 at UTC-1 is 22:00 in Berlin
    live = SceneClock(BERLIN)
    captured = datetime(2026, 11, 28, 21, 0, tzinfo=UTC).timestamp()
    assert live.at(123.0, captured).isoformat() == "2026-11-28T22:00:00+01:00"


def test_check_notes_say_whether_each_scheduled_rule_is_armed_now_or_when_the_recording_starts():
    rules = [("zone 'door'", ["22:00-06:00"]), ("line 'gate'", ["mon-fri 08:00-18:00"])]
    friday_noon = at("2026-11-27 12:00").timestamp()
    assert armed_notes(rules, SceneClock(BERLIN), friday_noon) == [
        "zone 'door' (armed 22:00-06:00): disarmed now (Fri 12:00 CET)",
        "line 'gate' (armed mon-fri 08:00-18:00): armed now (Fri 12:00 CET)",
    ]
    recording = SceneClock(BERLIN, datetime(2026, 11, 28, 23, 15))
    assert armed_notes(rules[:1], recording, friday_noon) == [
        "zone 'door' (armed 22:00-06:00): armed when the recording starts (Sat 2026-11-28 23:15:00 CET)"
    ]


def test_reasons_name_a_live_camera_s_moments_by_the_clock_and_a_file_s_by_its_media_time():
    frame_read = at("2026-11-28 22:14:05").timestamp()  # the frame at media time 3605.0
    live = SceneClock(BERLIN).naming(True, 3605.0, frame_read)
    assert live(3603.2) == "22:14:03"  # 1.8 s before the frame
    file = SceneClock(BERLIN).naming(False, 25.8, frame_read)
    assert file(25.6) == "25.6 s"
    recording = SceneClock(BERLIN, datetime(2026, 11, 28, 21, 59, 40)).naming(False, 25.8, frame_read)
    assert recording(25.6) == "25.6 s (22:00:05)"


def test_the_host_s_clock_follows_its_change_to_summer_time(monkeypatch):
    """No runtime.timezone: a vigil started in winter on a Berlin host still arms a 22:00 zone at
    22:00 local in July (a fixed offset read at start would arm it at 23:00)."""
    monkeypatch.setenv("TZ", "CET-1CEST,M3.5.0,M10.5.0/3")  # Berlin's rule, no tz database needed
    time.tzset()
    try:
        host = SceneClock(time_zone(None))
        winter = datetime(2026, 1, 15, 21, 0, tzinfo=UTC).timestamp()
        summer = datetime(2026, 7, 15, 20, 0, tzinfo=UTC).timestamp()
        assert host.at(0.0, winter).strftime("%H:%M %Z") == "22:00 CET"
        assert host.at(0.0, summer).strftime("%H:%M %Z") == "22:00 CEST"
        recording = SceneClock(time_zone(None), datetime(2026, 7, 15, 21, 59, 50))  # naive: the host's time
        assert recording.at(10.0, 0.0).isoformat() == "2026-07-15T22:00:00+02:00"
        assert armed_at(parse_schedule(["22:00-06:00"]), host.at(0.0, summer))
    finally:
        monkeypatch.undo()
        time.tzset()
