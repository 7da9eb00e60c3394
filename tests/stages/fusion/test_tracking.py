"""The tracker joins successive frames' boxes into tracks: people walking past each other, flicker,
low analysis rates, classes."""

from __future__ import annotations

from pipeline.messages import Box
from stages.fusion.tracking import ObjectTracker, iou, track_gap_s


def walker(x: float, y_bottom: float = 0.8, label: str = "person", height: float = 0.3) -> Box:
    """A box ``height`` tall, a third as wide, its bottom centre at (x, y_bottom)."""
    half = height / 6
    return Box(label, 0.8, x - half, y_bottom - height, x + half, y_bottom)


def ids(tracker: ObjectTracker, pts: float, *boxes: Box) -> list[int]:
    return [t.track for t in tracker.update(pts, boxes)]


def test_iou_of_identical_disjoint_and_half_overlapping_boxes():
    a = Box("person", 0.9, 0.0, 0.0, 0.2, 0.2)
    assert iou(a, a) == 1.0
    assert iou(a, Box("person", 0.9, 0.5, 0.5, 0.6, 0.6)) == 0.0
    assert abs(iou(a, Box("person", 0.9, 0.1, 0.0, 0.3, 0.2)) - 1 / 3) < 1e-9


def test_a_walking_person_keeps_one_id():
    tracker = ObjectTracker()
    seen = [tracker.update(i / 5, [walker(0.1 + 0.02 * i)]) for i in range(25)]
    assert {t[0].track for t in seen} == {1}


def test_two_people_walking_past_each_other_keep_their_ids():
    tracker = ObjectTracker()
    for i in range(21):  # one walks right, the other left; they meet at x = 0.5 at 2 s
        t = i / 5
        left_to_right, right_to_left = walker(0.3 + 0.1 * t, 0.8), walker(0.7 - 0.1 * t, 0.82)
        assert ids(tracker, t, left_to_right, right_to_left) == [1, 2], f"at {t} s"


def test_flicker_keeps_the_id_and_a_long_absence_starts_a_new_one():
    tracker = ObjectTracker(gap_s=1.0)
    assert ids(tracker, 0.0, walker(0.5)) == [1]
    assert ids(tracker, 0.2) == []  # missed by the detector for a frame
    assert ids(tracker, 0.4, walker(0.51)) == [1]
    assert ids(tracker, 2.0, walker(0.52)) == [2]  # gone for longer than gap_s: someone new


def test_at_one_frame_a_second_a_walker_moving_most_of_its_height_keeps_its_id():
    tracker = ObjectTracker(gap_s=track_gap_s(1.0))
    boxes = [walker(0.1 + 0.15 * i, height=0.2) for i in range(6)]  # 3/4 of its height a frame: no overlap
    assert iou(boxes[0], boxes[1]) == 0.0
    assert [ids(tracker, float(i), box)[0] for i, box in enumerate(boxes)] == [1] * 6
    assert track_gap_s(1.0) == 3.0 and track_gap_s(10.0) == 1.0


def test_different_classes_never_share_a_track_and_ids_are_never_reused():
    tracker = ObjectTracker(gap_s=0.5)
    assert ids(tracker, 0.0, walker(0.5), walker(0.5, label="dog")) == [1, 2]
    assert ids(tracker, 0.2, walker(0.5, label="dog"), walker(0.5)) == [2, 1]
    assert ids(tracker, 5.0, walker(0.5)) == [3]


def test_a_newcomer_far_from_every_track_starts_its_own():
    tracker = ObjectTracker()
    assert ids(tracker, 0.0, walker(0.2)) == [1]
    assert ids(tracker, 0.2, walker(0.2), walker(0.9)) == [1, 2]


def test_frames_coming_slower_than_the_analysis_rate_stretch_how_long_a_track_survives():
    tracker = ObjectTracker(gap_s=track_gap_s(5.0))  # 5 fps asked, but a busy detector gets to it every 1.5 s
    assert [ids(tracker, 1.5 * i, walker(0.2 + 0.05 * i))[0] for i in range(6)] == [1] * 6
    assert tracker.survives_s == 4.5
    assert ids(tracker, 7.5 + 20.0, walker(0.5)) == [2]  # a long outage: never more than MAX_GAP_S
