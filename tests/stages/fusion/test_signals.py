from __future__ import annotations

from pipeline.config import ZoneConfig
from pipeline.messages import AudioLevel, Box, Segment, Word
from stages.fusion.signals import (
    AudioTracker,
    ZoneTracker,
    count_reading,
    find_keywords,
    point_in_polygon,
    zone_reading,
)
from stages.fusion.tracking import Tracked

SQUARE = [(0.5, 0.5), (1.0, 0.5), (1.0, 1.0), (0.5, 1.0)]


def person(x: float, y_bottom: float, label: str = "person") -> Box:
    return Box(label, 0.9, x - 0.05, y_bottom - 0.2, x + 0.05, y_bottom)


def seen(*boxes: Box) -> list[Tracked]:
    """``boxes`` as one frame's tracked objects: the first is track 1, the next track 2, ..."""
    return [Tracked(box, index + 1) for index, box in enumerate(boxes)]


def test_point_in_polygon_handles_inside_outside_and_concave_shapes():
    assert point_in_polygon((0.75, 0.75), SQUARE)
    assert not point_in_polygon((0.25, 0.75), SQUARE)
    notch = [(0, 0), (1, 0), (1, 1), (0.5, 0.5), (0, 1)]
    assert point_in_polygon((0.2, 0.6), notch)
    assert not point_in_polygon((0.5, 0.8), notch)


def test_zone_uses_the_feet_of_the_box_and_its_class_filter():
    tracker = ZoneTracker("z", ZoneConfig(polygon=SQUARE, classes=["person"]))
    head_in_feet_out = Box("person", 0.9, 0.7, 0.55, 0.8, 0.45)
    car_inside = person(0.75, 0.8, "car")
    reading = zone_reading([tracker], 0.0, seen(head_in_feet_out, car_inside))
    assert reading.value == 0.0
    reading = zone_reading([tracker], 0.2, seen(person(0.75, 0.8)))
    assert reading.value == 1.0 and reading.evidence["zones"][0]["zone"] == "z"


def test_zone_dwell_needs_continuous_presence_tolerating_short_flicker():
    tracker = ZoneTracker("z", ZoneConfig(polygon=SQUARE, dwell_s=2.0))
    inside = seen(person(0.75, 0.8))
    values = {}
    for step in range(0, 31):  # 3 s at 10 fps, with a one-frame gap at 1.0 s
        t = step / 10
        values[t] = zone_reading([tracker], t, [] if t == 1.0 else inside).value
    assert values[1.9] == 0.0 and values[2.0] == 1.0
    tracker2 = ZoneTracker("z", ZoneConfig(polygon=SQUARE, dwell_s=2.0))
    zone_reading([tracker2], 0.0, inside)
    zone_reading([tracker2], 1.5, [])  # gone for longer than the flicker tolerance
    assert zone_reading([tracker2], 2.6, inside).value == 0.0


def test_passers_by_add_up_for_the_zone_but_not_for_an_object_dwell():
    zone_kind = ZoneTracker("z", ZoneConfig(polygon=SQUARE, dwell_s=3.0))
    object_kind = ZoneTracker("z", ZoneConfig(polygon=SQUARE, dwell_s=3.0, dwell_of="object"))
    fired = {"zone": [], "object": []}
    for step in range(41):  # 4 s; a different person walks through every second
        t = step / 10
        frame = [Tracked(person(0.75, 0.8), 1 + int(t))]
        for kind, tracker in (("zone", zone_kind), ("object", object_kind)):
            if zone_reading([tracker], t, frame).value:
                fired[kind].append(t)
    assert fired["zone"] and fired["zone"][0] == 3.0
    assert fired["object"] == []


def test_an_object_that_stays_is_named_with_its_dwell():
    tracker = ZoneTracker("door", ZoneConfig(polygon=SQUARE, dwell_s=3.0, dwell_of="object"))
    reading = None
    for step in range(31):  # track 7 stays 3 s; track 8 comes in at 2 s
        t = step / 10
        frame = [Tracked(person(0.75, 0.8), 7)] + ([Tracked(person(0.6, 0.9), 8)] if t >= 2 else [])
        reading = zone_reading([tracker], t, frame)
    assert reading is not None and reading.value == 1.0
    assert reading.reason == "person #7 in zone 'door' for 3.0 s"
    objects = reading.evidence["zones"][0]["objects"]
    assert [(o["track"], o["dwell_s"]) for o in objects] == [(7, 3.0), (8, 1.0)]


def test_count_signal_fires_at_the_threshold():
    boxes = [person(0.1 * i, 0.5) for i in range(1, 4)]
    assert count_reading({"person": 3}, boxes).value == 1.0
    assert count_reading({"person": 4}, boxes).value == 0.0
    assert count_reading({"person": 3}, boxes).evidence["counts"] == {"person": 3}


def test_keywords_and_phrases_match_words_ignoring_case_and_punctuation():
    words = (Word("Help.", 11.7, 12.6), Word("Call", 14.2, 14.5), Word("the", 14.5, 14.7), Word("police!", 14.7, 15.0))
    segment = Segment("Help. Call the police!", 11.7, 15.0, words)
    hits = find_keywords(["help", "call the police", "fire"], segment)
    assert [(h.keyword, h.time) for h in hits] == [("help", 11.7), ("call the police", 14.2)]
    assert find_keywords(["hel"], segment) == []


def test_keywords_without_word_times_use_the_segment_start():
    hits = find_keywords(["police"], Segment(" call the police", 3.0, 5.0))
    assert [(h.keyword, h.time) for h in hits] == [("police", 3.0)]


def test_keyword_signal_holds_for_the_hold_time():
    audio = AudioTracker(["help"], spike_db=20, hold_s=3.0)
    audio.add([Segment("help", 10.0, 10.5, (Word("help", 10.0, 10.5),))], [])
    assert audio.keyword_reading(9.9).value == 0.0
    assert audio.keyword_reading(10.0).value == 1.0
    assert audio.keyword_reading(12.9).value == 1.0
    assert audio.keyword_reading(13.1).value == 0.0


def test_loudness_spike_is_judged_against_the_running_baseline():
    audio = AudioTracker([], spike_db=20, hold_s=3.0)
    audio.add([], [AudioLevel(i * 0.5, -50.0) for i in range(10)])
    audio.add([], [AudioLevel(5.0, -45.0), AudioLevel(5.5, -10.0)])
    assert audio.loudness_reading(5.0).value == 0.0
    reading = audio.loudness_reading(5.6)
    assert reading.value == 1.0
    assert reading.evidence["dbfs"] == -10.0 and reading.evidence["baseline_dbfs"] < -45
    assert audio.loudness_reading(7.0).value == 0.0


def test_a_keyword_transcribed_after_its_frames_were_scored_still_counts():
    audio = AudioTracker(["help"], spike_db=20, hold_s=3.0)
    for step in range(0, 60):  # live camera: frames up to 6 s scored before the words arrive
        audio.keyword_reading(step / 10)
    audio.add([Segment("help", 1.0, 1.5, (Word("help", 1.0, 1.5),))], [])
    reading = audio.keyword_reading(6.0)
    assert reading.value == 1.0
    assert reading.evidence["keywords"][0]["time"] == 1.0, "the evidence keeps when it was said"
    assert audio.keyword_reading(8.8).value == 1.0 and audio.keyword_reading(9.0).value == 0.0


def test_a_zone_outside_its_armed_hours_is_quiet_but_times_the_dwell_it_fires_on_when_it_arms():
    from datetime import datetime, timedelta
    from zoneinfo import ZoneInfo

    tracker = ZoneTracker("door", ZoneConfig(polygon=SQUARE, dwell_s=5.0, armed=["22:00-06:00"]))
    evening = datetime(2026, 11, 30, 21, 59, 50, tzinfo=ZoneInfo("Europe/Berlin"))
    values = {}
    for step in range(13):  # someone standing in the door from 21:59:50 to 22:00:02
        t = float(step)
        values[t] = zone_reading([tracker], t, seen(person(0.75, 0.8)), moment=evening + timedelta(seconds=t))
    assert [values[t].value for t in (5.0, 9.0)] == [0.0, 0.0]  # dwell reached, but not armed yet
    assert values[10.0].value == 1.0 and values[10.0].evidence["zones"][0]["dwell_s"] == 10.0
    assert zone_reading([tracker], 13.0, seen(person(0.75, 0.8))).value == 1.0  # no clock: armed
