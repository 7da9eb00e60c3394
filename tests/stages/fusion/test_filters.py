"""A camera's masks and object filters: which detections count for its zones, lines and crowds."""

from __future__ import annotations

from pipeline.config import CameraConfig, MaskConfig, ObjectFilter
from pipeline.messages import Box
from stages.fusion.filters import DetectionFilter

POSTER = MaskConfig(polygon=[(0.0, 0.0), (0.3, 0.0), (0.3, 0.5), (0.0, 0.5)])


def box(label: str = "person", confidence: float = 0.9, x: float = 0.5, y: float = 0.8, size: float = 0.2) -> Box:
    """A ``size`` by ``size`` box whose bottom centre is at (``x``, ``y``)."""
    return Box(label, confidence, x - size / 2, y - size, x + size / 2, y)


def test_a_mask_hides_objects_standing_in_it_and_only_the_classes_it_names():
    cars_only = MaskConfig(polygon=POSTER.polygon, classes=["car"])
    poster = DetectionFilter.of(CameraConfig(source="x.mp4", masks={"poster": POSTER}))
    parking = DetectionFilter.of(CameraConfig(source="x.mp4", masks={"parking": cars_only}))
    inside, outside = box(x=0.15, y=0.4), box(x=0.15, y=0.7)  # bottom centres in and below the mask
    straddling = box(x=0.29, y=0.45, size=0.4)  # reaches far out of the mask, but stands in it
    assert poster.why_ignored(inside) == "in mask 'poster'" and poster.why_ignored(straddling) is not None
    assert poster.why_ignored(outside) is None
    assert parking.why_ignored(inside) is None and parking.why_ignored(box("car", x=0.15, y=0.4)) is not None


def test_object_filters_judge_their_class_by_confidence_and_box_size():
    person = ObjectFilter(min_confidence=0.5, min_area=0.01, max_area=0.25)
    judge = DetectionFilter.of(CameraConfig(source="x.mp4", objects={"person": person}))
    assert judge.why_ignored(box(confidence=0.4)) == "under min_confidence"
    assert judge.why_ignored(box(size=0.05)) == "under min_area"  # 0.0025 of the picture
    assert judge.why_ignored(box(size=0.6)) == "over max_area"  # 0.36
    assert judge.why_ignored(box(size=0.2)) is None
    assert judge.why_ignored(box("car", confidence=0.4, size=0.05)) is None, "other classes are not judged"


def test_kept_boxes_keep_their_order_and_what_is_ignored_is_counted_by_class_and_reason():
    camera = CameraConfig(
        source="x.mp4", masks={"poster": POSTER}, objects={"person": ObjectFilter(min_confidence=0.5)}
    )
    judge = DetectionFilter.of(camera)
    first, second = box(x=0.6), box("car", x=0.8)
    kept = judge.keep((box(x=0.15, y=0.4), first, box(confidence=0.3), second, box("car", x=0.1, y=0.3)))
    assert kept == (first, second)
    assert dict(judge.ignored) == {
        "person in mask 'poster'": 1,
        "person under min_confidence": 1,
        "car in mask 'poster'": 1,
    }


def test_a_camera_without_masks_or_filters_keeps_every_box():
    judge = DetectionFilter.of(CameraConfig(source="x.mp4"))
    boxes = (box(confidence=0.01, size=0.001), box("car", size=1.0))
    assert not judge and judge.keep(boxes) == boxes and not judge.ignored
