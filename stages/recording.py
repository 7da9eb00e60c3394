"""A live camera's own stream kept on disk (``cameras.<id>.record``): the packets decode reads, copied
into fragmented MP4 segments without re-encoding (a copy costs next to no CPU, and a fragment is
written at each keyframe, so a segment cut short by a crash or a power cut still plays up to its last
whole fragment).

Each segment starts at a video keyframe, is named by the wall-clock time (UTC) of its first packet
(``<folder>/<camera>/<camera>-20261204T221500.250Z.mp4``), and has its timestamps start at 0. When a
segment has run ``segment_s``, the next keyframe starts a new one, and segments older than
``keep_hours`` are deleted. A segment that cannot be written (a full disk) is logged, closed, and
recording resumes at a later keyframe: recording never stops the camera's analysis.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from fractions import Fraction
from pathlib import Path

import av

from pipeline.logs import RateLimited
from pipeline.record_settings import RecordConfig
from pipeline.recording_time import creation_tag

logger = logging.getLogger(__name__)

SUFFIX = ".mp4"
FRAGMENTED = {"movflags": "frag_keyframe+empty_moov+default_base_moof"}  # playable however it ends
NAME_TIME = "%Y%m%dT%H%M%S.%f"
RECORDING_COUNTERS = ("recording_segments", "recording_failures", "recording_deleted_early")
RETRY_AFTER_FAILURE_S = 10.0  # after a write failed, how long before a keyframe may open a new segment


def segment_name(camera_id: str, started: float) -> str:
    """``<camera>-20261204T221500.250Z.mp4`` for a segment whose first packet came at ``started``."""
    stamp = datetime.fromtimestamp(started, UTC).strftime(NAME_TIME)[:-3]  # milliseconds
    return f"{camera_id}-{stamp}Z{SUFFIX}"


def segment_start(path: Path, camera_id: str) -> float | None:
    """The wall-clock start of a segment from its name, or None for a file that is not one."""
    stem = path.name.removesuffix(SUFFIX)
    prefix = f"{camera_id}-"
    if not path.name.endswith(SUFFIX) or not stem.startswith(prefix) or not stem.endswith("Z"):
        return None
    try:
        return datetime.strptime(stem[len(prefix) : -1] + "000", NAME_TIME).replace(tzinfo=UTC).timestamp()
    except ValueError:
        return None


def camera_folder(settings: RecordConfig, camera_id: str) -> Path:
    return Path(settings.folder) / camera_id


@dataclass(frozen=True)
class Segment:
    path: Path
    started: float  # wall-clock time of its first packet


def segments(settings: RecordConfig, camera_id: str) -> list[Segment]:
    """A camera's segments on disk, oldest first."""
    folder = camera_folder(settings, camera_id)
    if not folder.is_dir():
        return []
    found = [Segment(p, start) for p in folder.iterdir() if (start := segment_start(p, camera_id)) is not None]
    return sorted(found, key=lambda segment: segment.started)


class SegmentWriter:
    """One open segment: the output container and a stream per input stream, timestamps rebased so
    the segment starts at 0."""

    def __init__(self, path: Path, inputs: list[av.stream.Stream], origin_s: float, started: float) -> None:
        self.path = path
        self.container = av.open(str(path), "w", format="mp4", options=FRAGMENTED)
        self.container.metadata["creation_time"] = creation_tag(started)  # for recorded_at: auto (to the second)
        self.streams = {s.index: self.container.add_stream_from_template(s) for s in inputs}
        self.origin_s = origin_s  # decoding time (s) of the keyframe that starts it
        self.last_dts: dict[int, int] = {}
        self.packets = 0

    def write(self, packet: av.Packet) -> None:
        """Mux ``packet`` (after it was decoded: muxing rewrites its timestamps and stream). A packet
        without a decoding time (RTSP gives none for video with B-frames) gets one from the muxer,
        which derives it from the presentation times."""
        out = self.streams.get(packet.stream.index)
        if out is None or packet.pts is None or packet.time_base is None:
            return
        shift = round(self.origin_s / float(packet.time_base))
        pts = packet.pts - shift
        dts = None if packet.dts is None else packet.dts - shift
        if pts < 0 or (dts is not None and dts <= self.last_dts.get(out.index, -1)):
            return  # before the segment's keyframe (audio, open-GOP frames), or out of order
        packet.pts, packet.dts = pts, dts
        if dts is not None:
            self.last_dts[out.index] = dts
        packet.stream = out
        self.container.mux(packet)
        self.packets += 1

    def close(self) -> None:
        self.container.close()


class Recorder:
    """Copies one connection's packets into segments (a new connection gets a new Recorder)."""

    def __init__(
        self,
        camera_id: str,
        settings: RecordConfig,
        video: av.VideoStream,
        audio: av.AudioStream | None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.camera_id = camera_id
        self.settings = settings
        self.video = video
        self.inputs: list[av.stream.Stream] = [video] if audio is None else [video, audio]
        self.folder = camera_folder(settings, camera_id)
        self.clock = clock
        self.segment: SegmentWriter | None = None
        self.segments_started = 0
        self.failures = 0
        self.deleted_early = 0  # segments deleted before keep_hours, for room on the disk
        self._failed_at: float | None = None
        self._warned = RateLimited(60.0)
        self._room_warned = RateLimited(600.0)

    def tally(self) -> dict[str, int]:
        """This recorder's counters, by their names in decode's counters (RECORDING_COUNTERS)."""
        return {
            "recording_segments": self.segments_started,
            "recording_failures": self.failures,
            "recording_deleted_early": self.deleted_early,
        }

    def write(self, packet: av.Packet) -> None:
        """Record ``packet`` (call it after the packet was decoded); never raises for a write failure."""
        try:
            keyframe = packet.stream.index == self.video.index and packet.is_keyframe and packet.pts is not None
            if keyframe and self._starts_segment(packet):  # a keyframe RTSP has not timed yet cannot start one
                self._open(packet)
            if self.segment is not None:
                self.segment.write(packet)
        except (av.error.FFmpegError, OSError, ValueError) as exc:
            self._fail(exc)

    def close(self) -> None:
        if self.segment is not None:
            segment, self.segment = self.segment, None
            try:
                segment.close()
            except (av.error.FFmpegError, OSError, ValueError) as exc:
                self._fail(exc)

    def _starts_segment(self, keyframe: av.Packet) -> bool:
        if self._failed_at is not None and self.clock() - self._failed_at < RETRY_AFTER_FAILURE_S:
            return False
        if self.segment is None:
            return True
        return media_time(keyframe) - self.segment.origin_s >= self.settings.segment_s

    def _open(self, keyframe: av.Packet) -> None:
        self.close()
        self.folder.mkdir(parents=True, exist_ok=True)
        started = self.clock()
        self._delete_expired(started)
        self._keep_room()
        # Timestamps start at the keyframe's decoding time: every packet decoded after it keeps pts >= dts >= 0.
        path = self.folder / segment_name(self.camera_id, started)
        self.segment = SegmentWriter(path, self.inputs, decode_time(keyframe), started)
        self.segments_started += 1
        if self._failed_at is not None:
            logger.warning("camera %s: recording again, into %s", self.camera_id, self.segment.path.name)
            self._failed_at = None

    def _delete_expired(self, now: float) -> None:
        oldest = now - self.settings.keep_hours * 3600.0
        for old in expired(segments(self.settings, self.camera_id), oldest):
            self._delete(old, "older than keep_hours")

    def _keep_room(self) -> None:
        """Delete the oldest segments while the disk has less than ``min_free_gb`` free."""
        wanted = self.settings.min_free_gb * 1e9
        deleted = 0
        for old in segments(self.settings, self.camera_id):
            free = shutil.disk_usage(self.folder).free
            if free >= wanted:
                break
            if self._delete(old, "the disk is nearly full"):
                deleted += 1
        if deleted:
            self.deleted_early += deleted
            if self._room_warned.due():
                logger.warning(
                    "camera %s: deleted the %d oldest segment(s) before keep_hours: the disk of %s has less than "
                    "min_free_gb %g GB free (%.2f GB now)",
                    self.camera_id,
                    deleted,
                    self.folder,
                    self.settings.min_free_gb,
                    shutil.disk_usage(self.folder).free / 1e9,
                )

    def _delete(self, segment: Segment, why: str) -> bool:
        try:
            segment.path.unlink()
        except FileNotFoundError:
            return False
        except OSError as exc:
            logger.warning("camera %s: cannot delete old recording %s: %s", self.camera_id, segment.path, exc)
            return False
        logger.debug("camera %s: deleted recording %s (%s)", self.camera_id, segment.path.name, why)
        return True

    def _fail(self, exc: BaseException) -> None:
        self.failures += 1
        self._failed_at = self.clock()
        segment, self.segment = self.segment, None
        if segment is not None:
            with contextlib.suppress(av.error.FFmpegError, OSError, ValueError):
                segment.close()
        if self._warned.due():
            reason = getattr(exc, "strerror", None) or str(exc)
            logger.error(
                "camera %s: recording into %s failed: %s; analysis goes on, recording is tried again at a "
                "keyframe in %.0f s (%d failure(s) so far)",
                self.camera_id,
                self.folder,
                reason,
                RETRY_AFTER_FAILURE_S,
                self.failures,
            )


def expired(found: list[Segment], oldest: float) -> Iterator[Segment]:
    """The segments that ended before ``oldest`` (a segment ends where the next one starts)."""
    for segment, following in itertools.pairwise(found):
        if following.started <= oldest:
            yield segment


def decode_time(packet: av.Packet) -> float:
    """When ``packet`` is decoded, in seconds (its presentation time where it has no decoding time)."""
    return seconds(packet, packet.dts, packet.pts)


def media_time(packet: av.Packet) -> float:
    """When ``packet`` is shown, in seconds (its decoding time where it has no presentation time)."""
    return seconds(packet, packet.pts, packet.dts)


def seconds(packet: av.Packet, ticks: int | None, fallback: int | None) -> float:
    base = packet.time_base or Fraction(1, 1)
    return float((ticks if ticks is not None else fallback or 0) * base)
