"""Typed messages between stages and their multipart wire encoding.

A message travels as ZeroMQ multipart: frame 0 is a small JSON header (``kind`` plus the scalar
fields), the following frames are raw payloads (numpy arrays or bytes) sent without copying.
End of stream travels in band as an ``EndOfStream`` message.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np


class MessageError(ValueError):
    """A multipart message that cannot be decoded."""


@dataclass(frozen=True)
class Box:
    """One detected object; coordinates are normalized to 0..1 of the analysed frame."""

    label: str
    confidence: float
    x1: float
    y1: float
    x2: float
    y2: float

    @property
    def anchor(self) -> tuple[float, float]:
        """Bottom centre: where a walking object touches the ground."""
        return ((self.x1 + self.x2) / 2, self.y2)


@dataclass(frozen=True)
class Word:
    text: str
    start: float
    end: float
    probability: float = 1.0


@dataclass(frozen=True)
class Segment:
    """Transcribed speech; ``start``/``end`` and word times are camera media time in seconds."""

    text: str
    start: float
    end: float
    words: tuple[Word, ...] = ()


@dataclass(frozen=True)
class AudioLevel:
    pts: float
    dbfs: float


@dataclass(frozen=True)
class Message:
    kind: ClassVar[str] = "message"
    arrays: ClassVar[tuple[str, ...]] = ()
    blobs: ClassVar[tuple[str, ...]] = ()


@dataclass(frozen=True)
class Frame(Message):
    """A decoded video frame at analysis size, BGR uint8 (H, W, 3)."""

    kind: ClassVar[str] = "frame"
    arrays: ClassVar[tuple[str, ...]] = ("image",)
    camera: str
    seq: int
    pts: float
    wall_time: float
    image: np.ndarray = field(repr=False, compare=False)


@dataclass(frozen=True)
class AudioChunk(Message):
    """16 kHz mono float32 samples starting at media time ``pts``."""

    kind: ClassVar[str] = "audio"
    arrays: ClassVar[tuple[str, ...]] = ("samples",)
    camera: str
    seq: int
    pts: float
    wall_time: float
    sample_rate: int
    samples: np.ndarray = field(repr=False, compare=False)

    @property
    def duration(self) -> float:
        return len(self.samples) / self.sample_rate


@dataclass(frozen=True)
class Detections(Message):
    """Detector output for one frame; the frame travels along for the alert snapshot."""

    kind: ClassVar[str] = "detections"
    arrays: ClassVar[tuple[str, ...]] = ("image",)
    camera: str
    seq: int
    pts: float
    wall_time: float
    boxes: tuple[Box, ...]
    image: np.ndarray = field(repr=False, compare=False)


@dataclass(frozen=True)
class Transcript(Message):
    """Audio analysis of media time ``[start, end)``: speech segments and loudness.

    ``end`` is also a watermark: no later Transcript of this camera covers time before it. A
    ``partial`` transcript is what was said so far in an utterance still going on: its segments
    come early (keywords before the sentence ends) and come again in the final transcript; it
    carries no levels and moves no watermark (``end == start``).
    """

    kind: ClassVar[str] = "transcript"
    camera: str
    start: float
    end: float
    wall_time: float
    segments: tuple[Segment, ...] = ()
    levels: tuple[AudioLevel, ...] = ()
    partial: bool = False


@dataclass(frozen=True)
class AlertEvent(Message):
    """An alert as delivered: the JSON payload plus the JPEG snapshot bytes."""

    kind: ClassVar[str] = "alert"
    blobs: ClassVar[tuple[str, ...]] = ("snapshot",)
    payload: dict[str, Any]
    snapshot: bytes = field(repr=False, compare=False)


@dataclass(frozen=True)
class EndOfStream(Message):
    """No more messages for ``camera`` on this path; ``error`` says why when it ended badly."""

    kind: ClassVar[str] = "eos"
    camera: str
    stream: str
    error: str | None = None


def crossing_key(camera: str, direction: str, line: str) -> str:
    """A key of ``Status.crossings``: ``camera/direction/line`` (a line's name may hold a slash)."""
    return f"{camera}/{direction}/{line}"


def split_crossing_key(key: str) -> tuple[str, str, str]:
    """``(camera, direction, line)`` of a ``Status.crossings`` key."""
    camera, direction, line = key.split("/", 2)
    return camera, direction, line


def rule_key(camera: str, kind: str, name: str) -> str:
    """A key of ``Status.armed``: ``camera/kind/name``, kind ``zone`` or ``line`` (a name may hold a slash)."""
    return f"{camera}/{kind}/{name}"


def split_rule_key(key: str) -> tuple[str, str, str]:
    """``(camera, kind, name)`` of a ``Status.armed`` key."""
    camera, kind, name = key.split("/", 2)
    return camera, kind, name


DELIVERY_MEASURES = ("delivered", "failed", "dead", "pending")  # see Status.deliveries


def delivery_key(destination: str, measure: str) -> str:
    """A key of ``Status.deliveries``: ``measure|destination`` (a destination's URL may hold anything)."""
    return f"{measure}|{destination}"


def split_delivery_key(key: str) -> tuple[str, str]:
    """``(destination, measure)`` of a ``Status.deliveries`` key."""
    measure, destination = key.split("|", 1)
    return destination, measure


@dataclass(frozen=True)
class Status(Message):
    """Stage → supervisor: heartbeat, counters and camera state."""

    kind: ClassVar[str] = "status"
    stage: str
    instance: str
    wall_time: float
    counters: dict[str, int] = field(default_factory=dict)
    state: str = "running"
    detail: str | None = None
    camera: str | None = None
    histograms: dict[str, list[float]] = field(default_factory=dict)  # see pipeline.metrics.Histogram
    crossings: dict[str, int] = field(default_factory=dict)  # fuse: "camera/direction/line" -> line crossings
    armed: dict[str, int] = field(default_factory=dict)  # fuse: "camera/kind/name" -> 1 armed, 0 not (scheduled rules)
    deliveries: dict[str, int] = field(default_factory=dict)  # alert: "measure|destination" -> count (delivery_key)


@dataclass(frozen=True)
class Ack(Message):
    """Alert sink → fuse: these alerts (by id) and ends of stream (``eos:<camera>``) are stored
    durably; fuse may forget them."""

    kind: ClassVar[str] = "ack"
    ids: tuple[str, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "ids", tuple(self.ids))  # a list after decoding


MESSAGE_TYPES: dict[str, type[Message]] = {
    cls.kind: cls for cls in (Frame, AudioChunk, Detections, Transcript, AlertEvent, EndOfStream, Status, Ack)
}
_NESTED: dict[str, Any] = {"boxes": Box, "segments": Segment, "levels": AudioLevel, "words": Word}


def encode(message: Message) -> list[Any]:
    """Encode to multipart frames: JSON header, then arrays/blobs in declaration order."""
    header: dict[str, Any] = {"kind": message.kind}
    payloads: list[Any] = []
    for f in dataclasses.fields(message):
        value = getattr(message, f.name)
        if f.name in message.arrays:
            array = np.ascontiguousarray(value)
            header[f.name] = {"dtype": array.dtype.str, "shape": list(array.shape)}
            payloads.append(array.data)
        elif f.name in message.blobs:
            payloads.append(value)
        elif isinstance(value, tuple):
            header[f.name] = [_plain(item) for item in value]
        else:
            header[f.name] = value
    return [json.dumps(header, separators=(",", ":")).encode(), *payloads]


def _plain(item: Any) -> Any:
    """A tuple item as JSON: nested dataclasses become dicts, strings and numbers stay."""
    if dataclasses.is_dataclass(item) and not isinstance(item, type):
        return dataclasses.asdict(item)
    return item


def _nested(name: str, items: list[Any]) -> tuple[Any, ...]:
    cls = _NESTED[name]
    out = []
    for item in items:
        kwargs = {k: (_nested(k, v) if k in _NESTED else v) for k, v in item.items()}
        out.append(cls(**kwargs))
    return tuple(out)


def decode(parts: Sequence[bytes | memoryview | Any]) -> Message:
    """Inverse of ``encode``; raises MessageError on anything malformed."""
    try:
        header = json.loads(bytes(parts[0]))
        cls = MESSAGE_TYPES[header.pop("kind")]
        payload_index = 1
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name in cls.arrays:
                meta = header.pop(f.name)
                buffer = parts[payload_index]
                buffer = getattr(buffer, "buffer", buffer)
                kwargs[f.name] = np.frombuffer(buffer, dtype=np.dtype(meta["dtype"])).reshape(meta["shape"])
                payload_index += 1
            elif f.name in cls.blobs:
                kwargs[f.name] = bytes(parts[payload_index])
                payload_index += 1
            elif f.name in _NESTED and f.name in header:
                kwargs[f.name] = _nested(f.name, header.pop(f.name))
        kwargs.update(header)
        return cls(**kwargs)
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise MessageError(f"malformed message: {exc!r}") from exc
