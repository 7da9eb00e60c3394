"""Tripwires: a tracked object's bottom centre crossing a line, its direction, the line's ends,
wobble on the line, the hold time and the class filter."""

from __future__ import annotations

from pipeline.config import LineConfig
from pipeline.messages import Box
from stages.fusion.lines import LineWatch, directions, line_reading, passes_between, side_of
from stages.fusion.tracking import ObjectTracker

# A line across the lower half of the picture, drawn left to right: its right side is below it.
ACROSS = [(0.2, 0.6), (0.8, 0.6)]


def feet_at(x: float, y: float, label: str = "person") -> Box:
    return Box(label, 0.9, x - 0.03, y - 0.2, x + 0.03, y)


def walk(watch: LineWatch, path: list[tuple[float, float]], label: str = "person", every_s: float = 0.2) -> None:
    tracker = ObjectTracker()
    for i, (x, y) in enumerate(path):
        watch.update(i * every_s, tracker.update(i * every_s, [feet_at(x, y, label)]))


def test_right_of_a_line_is_as_seen_walking_it_from_its_first_point():
    assert side_of((0.5, 0.7), *ACROSS) > 0  # below a line drawn left to right
    assert side_of((0.5, 0.5), *ACROSS) < 0
    assert side_of((0.5, 0.5), (0.8, 0.6), (0.2, 0.6)) > 0  # the same line drawn the other way


def test_a_crossing_direction_is_said_in_picture_terms():
    assert directions(True, *ACROSS) == ["down"] and directions(False, *ACROSS) == ["up"]
    down_the_picture = ((0.5, 0.1), (0.5, 0.9))
    assert directions(True, *down_the_picture) == ["left"] and directions(False, *down_the_picture) == ["right"]
    assert directions(True, (0.1, 0.1), (0.9, 0.5)) == ["down", "left"]  # slanted: mostly across
    assert passes_between((0.5, 0.5), (0.5, 0.7), *ACROSS)
    assert not passes_between((0.9, 0.5), (0.9, 0.7), *ACROSS)  # beyond its right end


def test_crossings_are_counted_with_their_direction():
    watch = LineWatch("gate", LineConfig(points=ACROSS), hold_s=60.0)
    walk(watch, [(0.5, 0.40 + 0.05 * i) for i in range(8)])  # down the picture, across the line
    walk(watch, [(0.4, 0.80 - 0.05 * i) for i in range(8)])  # and another one back up
    assert [(c.track, c.direction) for c in watch.crossings] == [(1, "down"), (1, "up")]
    assert watch.counted == {"down": 1, "up": 1}
    assert watch.crossings[0].time == 1.0  # the first frame below the line (y 0.60 at 0.8 s is on it)


def test_a_one_way_line_counts_only_its_direction():
    watch = LineWatch("exit", LineConfig(points=ACROSS, direction="up"), hold_s=60.0)
    walk(watch, [(0.5, 0.40 + 0.05 * i) for i in range(8)])
    assert list(watch.crossings) == []
    walk(watch, [(0.5, 0.80 - 0.05 * i) for i in range(8)])
    assert [c.direction for c in watch.crossings] == ["up"]


def test_a_slanted_line_set_to_its_lesser_direction_counts_and_names_that_one():
    slanted = [(0.1, 0.2), (0.9, 0.6)]  # mostly across the picture, partly down it
    watch = LineWatch("ramp", LineConfig(points=slanted, direction="left"), hold_s=60.0)
    walk(watch, [(0.5, 0.2 + 0.05 * i) for i in range(10)])  # straight down across it
    assert [c.direction for c in watch.crossings] == ["left"]


def test_walking_past_the_end_of_the_line_is_no_crossing():
    watch = LineWatch("gate", LineConfig(points=ACROSS), hold_s=60.0)
    walk(watch, [(0.9, 0.40 + 0.05 * i) for i in range(8)])
    assert list(watch.crossings) == []


def test_standing_on_the_line_and_wobbling_is_no_crossing():
    watch = LineWatch("gate", LineConfig(points=ACROSS), hold_s=60.0)
    wobble = [(0.5, 0.6 + (0.004 if i % 2 else -0.004)) for i in range(20)]
    walk(watch, [(0.5, 0.5), *wobble, (0.5, 0.5)])  # up to the line, a wobble there, and back
    assert list(watch.crossings) == []


def test_only_the_line_classes_count():
    watch = LineWatch("gate", LineConfig(points=ACROSS, classes=["car"]), hold_s=60.0)
    walk(watch, [(0.5, 0.40 + 0.05 * i) for i in range(8)], label="person")
    assert list(watch.crossings) == []
    walk(watch, [(0.5, 0.40 + 0.05 * i) for i in range(8)], label="car")
    assert len(watch.crossings) == 1


def test_the_line_signal_holds_for_the_hold_time_with_its_evidence():
    watch = LineWatch("gate", LineConfig(points=ACROSS), hold_s=2.0)
    tracker = ObjectTracker()
    values = {}
    for i in range(30):
        t = round(i * 0.2, 1)
        y = 0.5 + 0.05 * min(i, 4)  # on the line at 0.4 s, below it from 0.6 s on
        reading = line_reading([watch], t, tracker.update(t, [feet_at(0.5, y)]))
        values[t] = reading.value
        if t == 1.0:
            assert reading.evidence == {
                "crossings": [{"line": "gate", "track": 1, "label": "person", "direction": "down", "time": 0.6}]
            }
            assert reading.reason == "person #1 crossed line 'gate' going down at 0.6 s"
    assert values[0.4] == 0.0 and values[0.6] == 1.0 and values[2.4] == 1.0 and values[2.6] == 0.0


def test_a_line_outside_its_armed_hours_counts_crossings_without_raising_the_signal():
    from datetime import datetime, timedelta
    from zoneinfo import ZoneInfo

    watch = LineWatch("gate", LineConfig(points=ACROSS, armed=["mon-fri 08:00-18:00"]), hold_s=60.0)
    saturday = datetime(2026, 11, 28, 12, 0, tzinfo=ZoneInfo("Europe/Berlin"))
    tracker = ObjectTracker()
    for i in range(8):  # down the picture, across the line
        pts = i * 0.2
        tracked = tracker.update(pts, [feet_at(0.5, 0.40 + 0.05 * i)])
        reading = line_reading([watch], pts, tracked, moment=saturday + timedelta(seconds=pts))
        assert reading.value == 0.0
    assert watch.counted == {"down": 1} and list(watch.crossings) == []
    monday = saturday + timedelta(days=2)
    tracker = ObjectTracker()
    for i in range(8):  # and back up on Monday at noon
        pts = 10 + i * 0.2
        tracked = tracker.update(pts, [feet_at(0.5, 0.80 - 0.05 * i)])
        reading = line_reading([watch], pts, tracked, moment=monday + timedelta(seconds=pts))
    assert reading.value == 1.0 and reading.evidence["crossings"][0]["direction"] == "up"
    assert watch.counted == {"down": 1, "up": 1}
