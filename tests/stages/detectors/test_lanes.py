"""Batch parallelism: copies of the real YOLOv3-tiny detector on real frames of the demo clip, each
running its own batch on its own thread, delivered in the order the batches were given."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import av
import numpy as np
import pytest

from pipeline.config import DetectConfig
from stages.detectors.base import InvalidImageError, create_detector
from stages.detectors.lanes import DetectorLanes, LaneResult

DEMO = Path(__file__).resolve().parents[3] / "media" / "demo.mp4"


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    """Nine frames, a second apart, at the demo's analysis size."""
    images = []
    with av.open(str(DEMO)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index % 10 == 0:
                images.append(frame.to_ndarray(format="bgr24", width=640, height=480))
            if len(images) == 9:
                break
    return images


def single_thread() -> DetectConfig:
    return DetectConfig(backend="opencv", threads=1, batch=4)


@pytest.fixture(scope="module")
def lanes() -> Iterator[DetectorLanes]:
    copies = DetectorLanes([create_detector(single_thread()) for _ in range(2)])
    yield copies
    copies.close()


def test_lanes_find_the_same_boxes_as_one_detector_and_deliver_batches_in_order(lanes, frames) -> None:
    batches = [frames[0:4], frames[4:5], frames[5:9]]  # the short batch finishes before the long one
    delivered: list[tuple[int, LaneResult | None]] = []
    for number, batch in enumerate(batches):
        assert lanes.submit(batch, lambda result, number=number: delivered.append((number, result)), wait_s=30)
    assert lanes.drain(60)
    assert [number for number, _ in delivered] == [0, 1, 2]
    alone = create_detector(single_thread())
    for (_, result), batch in zip(delivered, batches, strict=True):
        assert result is not None
        assert result.boxes == alone.detect(batch)
    first, second = delivered[0][1], delivered[1][1]
    assert first is not None and second is not None
    assert second.began < first.began + first.run_s, "the second batch ran while the first was running"
    assert any(boxes for _, result in delivered if result for boxes in result.boxes), "people on the plaza"


def test_an_empty_batch_is_delivered_in_its_turn(lanes, frames) -> None:
    order: list[str] = []
    lanes.submit(frames[:4], lambda result: order.append("frames"), wait_s=30)
    lanes.submit([], lambda result: order.append(f"end {result}"), wait_s=30)
    assert lanes.drain(60)
    assert order == ["frames", "end None"]


def test_submit_waits_while_every_lane_and_the_spare_place_are_taken(frames) -> None:
    one = DetectorLanes([create_detector(single_thread())])
    release = threading.Event()
    try:
        # a batch held in its delivery keeps its place; a second waits as the spare
        assert one.submit(frames[:1], lambda result: release.wait(30), wait_s=30)
        assert one.submit(frames[:1], lambda result: None, wait_s=30)
        assert not one.submit(frames[:1], lambda result: None, wait_s=0.2)
        release.set()
        assert one.submit(frames[:1], lambda result: None, wait_s=30)
        assert one.drain(60)
    finally:
        release.set()
        one.close()


def test_a_failed_batch_is_raised_to_the_caller_and_later_batches_are_not_delivered(frames) -> None:
    broken = DetectorLanes([create_detector(single_thread()) for _ in range(2)])
    delivered: list[str] = []
    try:
        broken.submit(frames[:4], lambda result: delivered.append("before"), wait_s=30)
        # its failure counts in its turn, after the batch before it: the next batch is still taken
        broken.submit([np.zeros((480, 640), np.uint8)], lambda result: delivered.append("grey"), wait_s=30)
        broken.submit(frames[:1], lambda result: delivered.append("after"), wait_s=30)
        with pytest.raises(InvalidImageError):
            broken.drain(60)
        with pytest.raises(InvalidImageError):
            broken.check()
        with pytest.raises(InvalidImageError):
            broken.submit(frames[:1], lambda result: None)
        assert delivered == ["before"]
    finally:
        broken.close()
