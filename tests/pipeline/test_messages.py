from __future__ import annotations

import numpy as np
import pytest

from pipeline.messages import (
    AlertEvent,
    AudioChunk,
    AudioLevel,
    Box,
    Detections,
    EndOfStream,
    Frame,
    MessageError,
    Segment,
    Status,
    Transcript,
    Word,
    decode,
    encode,
)


def roundtrip(message):
    return decode([bytes(part) for part in encode(message)])


def test_frame_roundtrip_keeps_pixels_shape_and_header():
    image = np.random.default_rng(1).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    back = roundtrip(Frame(camera="cam", seq=3, pts=1.25, wall_time=100.0, image=image))
    assert isinstance(back, Frame)
    assert (back.camera, back.seq, back.pts, back.wall_time) == ("cam", 3, 1.25, 100.0)
    assert back.image.shape == (48, 64, 3) and back.image.dtype == np.uint8
    assert np.array_equal(back.image, image)


def test_audio_chunk_roundtrip_keeps_float_samples():
    samples = np.linspace(-1, 1, 8000, dtype=np.float32)
    back = roundtrip(AudioChunk(camera="c", seq=0, pts=2.0, wall_time=1.0, sample_rate=16000, samples=samples))
    assert isinstance(back, AudioChunk)
    assert back.duration == 0.5
    assert np.array_equal(back.samples, samples)


def test_detections_and_transcript_keep_nested_types():
    boxes = (Box("person", 0.9, 0.1, 0.2, 0.3, 0.4),)
    image = np.zeros((4, 4, 3), np.uint8)
    det = roundtrip(Detections(camera="c", seq=1, pts=0.2, wall_time=5.0, boxes=boxes, image=image))
    assert isinstance(det, Detections) and det.boxes == boxes
    segment = Segment("help me", 1.0, 2.0, (Word("help", 1.0, 1.4, 0.9), Word("me", 1.4, 2.0)))
    tr = roundtrip(Transcript("c", 0.0, 3.0, 9.0, (segment,), (AudioLevel(0.0, -40.0),)))
    assert isinstance(tr, Transcript)
    assert tr.segments == (segment,) and tr.levels == (AudioLevel(0.0, -40.0),)


def test_alert_status_and_end_of_stream_roundtrip():
    alert = roundtrip(AlertEvent(payload={"id": "x", "nested": {"a": [1, 2]}}, snapshot=b"\xff\xd8jpeg"))
    assert isinstance(alert, AlertEvent) and alert.payload["nested"] == {"a": [1, 2]}
    assert alert.snapshot == b"\xff\xd8jpeg"
    assert roundtrip(EndOfStream("c", "video", "broken")) == EndOfStream("c", "video", "broken")
    status = roundtrip(Status("detect", "detect", 1.0, {"frames": 3}, "running"))
    assert status == Status("detect", "detect", 1.0, {"frames": 3}, "running")
    tally = {"plaza/left/walk/way": 5}  # a line's name may hold a slash; a camera's may not
    assert roundtrip(Status("fuse", "fuse", 1.0, crossings=tally)).crossings == tally
    armed = {"plaza/zone/door": 0, "plaza/line/walk/way": 1}
    assert roundtrip(Status("fuse", "fuse", 1.0, armed=armed)).armed == armed
    deliveries = {"delivered|mqtt://b:1883 topic vigil/{camera}/alerts": 3, "pending|https://h/a|b": 1}
    assert roundtrip(Status("alert", "alert", 1.0, deliveries=deliveries)).deliveries == deliveries


@pytest.mark.parametrize(
    "parts",
    [[b"not json"], [b'{"kind": "nope"}'], [b'{"kind": "frame", "camera": "c"}'], []],
)
def test_malformed_messages_raise_message_error(parts):
    with pytest.raises(MessageError):
        decode(parts)


def test_message_error_is_also_a_value_error():
    assert issubclass(MessageError, ValueError)
