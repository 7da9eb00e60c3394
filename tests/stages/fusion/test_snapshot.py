from __future__ import annotations

import cv2
import numpy as np

from pipeline.config import LineConfig
from pipeline.messages import Box
from stages.fusion.snapshot import DISARMED_COLOUR, LINE_COLOUR, ZONE_COLOUR, caption, draw, snapshot
from stages.fusion.tracking import Tracked


def test_snapshot_is_a_jpeg_with_boxes_drawn_and_fits_the_size_limit():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)  # noise compresses badly
    boxes = [Box("person", 0.8, 0.1, 0.1, 0.3, 0.6)]
    jpeg = snapshot(image, boxes, {"door": [(0.5, 0.5), (0.9, 0.5), (0.9, 0.9)]}, max_bytes=40_000)
    assert jpeg[:2] == b"\xff\xd8" and len(jpeg) <= 40_000
    decoded = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert decoded is not None and decoded.ndim == 3


def test_draw_marks_the_box_edges_in_red():
    image = np.zeros((100, 100, 3), np.uint8)
    drawn = draw(image, [Box("person", 0.9, 0.2, 0.2, 0.8, 0.8)], {})
    assert tuple(drawn[50, 20]) == (0, 0, 255)
    assert tuple(drawn[50, 50]) == (0, 0, 0)
    assert image.sum() == 0, "the frame itself is not modified"


def test_draw_marks_a_line_and_a_tracked_box_with_its_id():
    image = np.zeros((100, 200, 3), np.uint8)
    tracked = Tracked(Box("person", 0.9, 0.1, 0.2, 0.3, 0.8), track=12)
    gate = {"gate": LineConfig(points=[(0.5, 0.1), (0.5, 0.9)])}
    drawn = draw(image, [tracked], {}, gate)
    assert tuple(drawn[50, 100]) == LINE_COLOUR
    assert tuple(drawn[50, 20]) == (0, 0, 255)
    untracked = draw(image, [tracked.box], {}, gate)
    label_row = drawn[5:20, 20:80]  # the label above the box: "person #12 0.90" is longer than "person 0.90"
    assert (label_row != 0).any(axis=2).sum() > (untracked[5:20, 20:80] != 0).any(axis=2).sum()


def test_a_one_way_line_gets_an_arrow_the_way_it_counts():
    image = np.zeros((100, 200, 3), np.uint8)
    both = draw(image, [], {}, {"gate": LineConfig(points=[(0.5, 0.1), (0.5, 0.9)])})
    left = draw(image, [], {}, {"gate": LineConfig(points=[(0.5, 0.1), (0.5, 0.9)], direction="left")})
    assert (both[50, 80:95] == 0).all()  # nothing left of the line's middle
    assert (left[50, 80:95] == LINE_COLOUR).all(axis=1).sum() >= 10  # the arrow's shaft


def test_a_zone_or_line_outside_its_armed_hours_is_drawn_grey_without_its_arrow():
    image = np.zeros((100, 200, 3), np.uint8)
    door = {"door": [(0.1, 0.1), (0.4, 0.1), (0.4, 0.9), (0.1, 0.9)]}
    gate = {"gate": LineConfig(points=[(0.7, 0.1), (0.7, 0.9)], direction="right")}
    armed = draw(image, [], door, gate)
    assert tuple(armed[50, 20]) == ZONE_COLOUR and tuple(armed[50, 140]) == LINE_COLOUR
    assert tuple(armed[50, 150]) == LINE_COLOUR  # the arrow, the way crossings count
    off = draw(image, [], door, gate, disarmed={("zone", "door"), ("line", "gate")})
    assert tuple(off[50, 20]) == DISARMED_COLOUR and tuple(off[50, 140]) == DISARMED_COLOUR
    assert not off[45:55, 145:160].any()  # no arrow


def test_a_caption_is_written_white_on_a_dark_band_in_the_bottom_left_corner():
    image = np.full((120, 320, 3), 200, np.uint8)
    captioned = caption(image.copy(), "plaza  2026-11-28 22:00:05 CET")
    band = captioned[100:120, 0:200]
    assert (band == 40).all(axis=2).mean() > 0.6  # mostly the band
    assert (band > 220).all(axis=2).sum() > 20  # and white text on it
    assert (captioned[0:90] == 200).all(), "nothing else is touched"
