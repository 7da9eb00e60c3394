"""An alert's footage cut out of its camera's recording (``run.py alerts clip``): the segments
``stages.recording`` wrote that overlap a span of wall-clock time, copied without re-encoding into
one MP4 from the keyframe at or before the span's start, timestamps continued across segments by the
segments' wall-clock starts."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import av

from pipeline.record_settings import RecordConfig
from pipeline.recording_time import creation_tag
from stages.recording import Segment, camera_folder, segments

logger = logging.getLogger(__name__)


class ClipError(Exception):
    """A clip that cannot be made: no recording covers the time asked for, or none can be read."""


@dataclass(frozen=True)
class Clip:
    path: Path
    start: float  # wall-clock time of its first frame (a keyframe at or before the time asked for)
    duration_s: float
    segments: int


def export_clip(settings: RecordConfig, camera_id: str, start: float, end: float, out: Path) -> Clip:
    """Copy a camera's recording from ``start`` to ``end`` (wall-clock seconds) into one MP4 at
    ``out``, without re-encoding: from the last keyframe at or before ``start``, through every segment
    that overlaps, to the last packet before ``end``. ClipError when nothing recorded covers it."""
    found = segments(settings, camera_id)
    if not found:
        raise ClipError(no_recording(settings, camera_id, found, start, end))
    ends = [following.started for following in found[1:]] + [float("inf")]
    chosen = [seg for seg, ending in zip(found, ends, strict=True) if seg.started < end and ending > start]
    if not chosen:
        raise ClipError(no_recording(settings, camera_id, found, start, end))
    try:
        writer = ClipWriter(out, chosen[0].path)
    except (av.error.FFmpegError, OSError) as exc:
        raise ClipError(f"cannot make {out} from {chosen[0].path}: {exc}") from exc
    try:
        for number, seg in enumerate(chosen):
            skip_to = max(0.0, start - seg.started) if number == 0 else 0.0
            try:
                if not writer.append(seg, skip_to, end):
                    break  # its streams differ (the camera changed its settings): the clip ends before it
            except av.error.InvalidDataError:
                logger.warning(
                    "recording %s is cut short (a crash or power cut?); the clip takes what it holds", seg.path
                )
    finally:
        writer.close()
    if writer.packets == 0:
        out.unlink(missing_ok=True)
        raise ClipError(
            f"the recording of camera {camera_id} between {clock_text(start)} and {clock_text(end)} holds no frames"
        )
    return Clip(out, writer.origin or start, writer.last_time, len(chosen))


def no_recording(settings: RecordConfig, camera_id: str, found: list[Segment], start: float, end: float) -> str:
    asked = f"{clock_text(start)} to {clock_text(end)}"
    if not found:
        folder = camera_folder(settings, camera_id)
        return f"camera {camera_id} has no recording in {folder} (is cameras.{camera_id}.record set?)"
    return (
        f"no recording of camera {camera_id} covers {asked}: its segments start from "
        f"{clock_text(found[0].started)} to {clock_text(found[-1].started)} (older ones than keep_hours "
        f"{settings.keep_hours:g} h are deleted)"
    )


def clock_text(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


class ClipWriter:
    """The MP4 a clip is copied into; timestamps continue across segments by their wall-clock starts."""

    def __init__(self, out: Path, first: Path) -> None:
        out.parent.mkdir(parents=True, exist_ok=True)
        self.container = av.open(str(out), "w", format="mp4", options={"movflags": "+faststart"})
        with av.open(str(first)) as template:
            self.layout = [(s.type, s.codec_context.name) for s in template.streams]
            self.streams = [self.container.add_stream_from_template(s) for s in template.streams]
        self.origin: float | None = None  # wall-clock time of the clip's first packet
        self.last_dts: dict[int, float] = {}
        self.last_time = 0.0
        self.packets = 0

    def append(self, seg: Segment, skip_to: float, end: float) -> bool:
        """Copy ``seg`` from its last keyframe at or before ``skip_to`` (seconds into it) to ``end``;
        False (nothing copied) when its streams are not the clip's."""
        with av.open(str(seg.path)) as scan:
            if [(s.type, s.codec_context.name) for s in scan.streams] != self.layout:
                return False
            begin = last_keyframe_before(scan, scan.streams.video[0], skip_to)
        with av.open(str(seg.path)) as source:  # read again from the start (fragmented MP4 may not seek)
            video = source.streams.video[0]
            for packet in source.demux():
                if packet.pts is None or packet.dts is None or packet.time_base is None:
                    continue
                local = float(packet.dts * packet.time_base)
                wall = seg.started + local
                if wall >= end:
                    if packet.stream.index == video.index:
                        break
                    continue
                if local < begin:
                    continue
                self._mux(packet, wall)
        return True

    def _mux(self, packet: av.Packet, wall: float) -> None:
        assert packet.pts is not None and packet.dts is not None and packet.time_base is not None  # append checked
        if self.origin is None:
            self.origin = wall
            self.container.metadata["creation_time"] = creation_tag(wall)  # written with the header, at the first mux
        base = float(packet.time_base)
        at = wall - self.origin
        index = packet.stream.index
        if at <= self.last_dts.get(index, -1.0):
            return  # overlaps the previous segment's tail
        shift = round(at / base) - packet.dts
        packet.dts += shift
        packet.pts += shift
        self.last_dts[index] = at
        packet.stream = self.streams[index]
        self.container.mux(packet)
        self.packets += 1
        self.last_time = max(self.last_time, at)

    def close(self) -> None:
        self.container.close()


def last_keyframe_before(source: av.container.InputContainer, video: av.VideoStream, seconds: float) -> float:
    """Decoding time (s) of the last keyframe at or before ``seconds`` (the first one if none is)."""
    begin = 0.0
    for packet in source.demux(video):
        if packet.dts is None or packet.time_base is None or not packet.is_keyframe:
            continue
        at = float(packet.dts * packet.time_base)
        if at > seconds:
            break
        begin = at
    return begin
