"""When a recorded file began (``recorded_at: auto``): from the name of one of vigil's own segments
(``gate-20261204T221500.250Z.mp4``, to the millisecond), else from the container's ``creation_time``
(MP4 and MOV keep it to the second: vigil's segments and clips, most cameras, NVR exports and phones
write it)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

SEGMENT_NAME = re.compile(r"-(\d{8}T\d{6}\.\d{3})Z\.mp4$")  # stages.recording.segment_name
SEGMENT_TIME = "%Y%m%dT%H%M%S.%f"
EARLIEST = datetime(1971, 1, 1, tzinfo=UTC)  # a zero or 1904 creation time means "unknown"


def creation_tag(seconds: float) -> str:
    """The ``creation_time`` tag vigil writes into its segments and clips (the clock time of media time 0)."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class RecordingTimeError(ValueError):
    """The file does not say when it was recorded (or cannot be read)."""


def creation_time(text: str) -> datetime | None:
    """A ``creation_time`` tag (``2026-12-04T22:15:00.000000Z``) as an aware datetime, or None."""
    try:
        moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if moment.tzinfo is None:  # FFmpeg writes UTC; a tag without a zone is taken as UTC too
        moment = moment.replace(tzinfo=UTC)
    return moment if moment >= EARLIEST else None


def recording_start(path: str) -> datetime:
    """The clock time of ``path``'s media time 0; RecordingTimeError saying why it is not known."""
    named = SEGMENT_NAME.search(Path(path).name)
    if named:
        return datetime.strptime(named.group(1), SEGMENT_TIME).replace(tzinfo=UTC)
    import av  # only where a recording time is asked for

    try:
        with av.open(path) as container:
            tags = [container.metadata, *(stream.metadata for stream in container.streams)]
    except (av.error.FFmpegError, OSError) as exc:
        raise RecordingTimeError(f"cannot read {path}: {exc}") from None
    for tag in tags:
        moment = creation_time(tag.get("creation_time", ""))
        if moment is not None:
            return moment
    raise RecordingTimeError(
        f"{path} does not say when it was recorded (no creation_time in it, and not a vigil segment name)"
    )
