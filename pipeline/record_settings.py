"""``cameras.<id>.record``: keeping a live camera's own stream on disk, in segments, for a while."""

from __future__ import annotations

from pydantic import Field

from pipeline.strict import StrictModel


class RecordConfig(StrictModel):
    folder: str = Field(
        "vigil-recordings",
        description="Where segments go, one subfolder per camera (relative paths: from the config file's "
        "folder). The camera's own video and audio, copied without re-encoding, as fragmented MP4 files named "
        "by their start time (UTC).",
    )
    segment_s: float = Field(
        60.0, ge=2.0, le=3600.0, description="Length of a segment; each starts at a keyframe, so it runs a little over."
    )
    keep_hours: float = Field(
        24.0,
        gt=0,
        description="Segments older than this are deleted (checked as each new segment starts); an alert's "
        "footage is kept only as long, so export what you need (run.py alerts clip).",
    )
    min_free_gb: float = Field(
        2.0,
        ge=0,
        description="Room to leave on the folder's disk: when a segment starts with less than this free, the "
        "camera's oldest segments are deleted first, even within keep_hours, so that a recording never fills "
        "the disk the alert files may share. 0: deleted by keep_hours only.",
    )
