"""Clips cut from a camera's recording (stages/clips.py), the recording made from the demo clip's real
packets at an injected clock (see tests/stages/test_recording.py)."""

from __future__ import annotations

from pathlib import Path

import av
import pytest

from pipeline.record_settings import RecordConfig
from stages.clips import ClipError, export_clip
from tests.stages.test_recording import START, record_clip, video_frames


def test_a_clip_starts_at_the_keyframe_before_it_and_runs_across_segments(tmp_path: Path, demo_clip: Path) -> None:
    settings = RecordConfig(folder=str(tmp_path / "rec"), segment_s=5, min_free_gb=0)
    record_clip(demo_clip, settings)
    clip = export_clip(settings, "door", START + 7.5, START + 19.0, tmp_path / "clips" / "incident.mp4")
    assert clip.segments == 3  # 6-12, 12-18, 18-24
    assert clip.start == pytest.approx(START + 6.0, abs=0.01), "from the keyframe at 6 s, so the clip decodes"
    frames = video_frames(clip.path)
    assert len(frames) == 130, "6.0 s to 19.0 s at 10 fps, no frame lost or doubled at the segment joins"
    assert frames == sorted(frames)
    with av.open(str(clip.path)) as container:
        assert [s.type for s in container.streams] == ["video", "audio"]
        assert sum(1 for _ in container.decode(container.streams.audio[0])) > 500  # 13 s of 1024-sample AAC frames


def test_a_clip_of_a_time_nothing_recorded_is_refused_saying_what_there_is(tmp_path: Path, demo_clip: Path) -> None:
    settings = RecordConfig(folder=str(tmp_path / "rec"), segment_s=5, min_free_gb=0)
    with pytest.raises(ClipError, match=r"camera door has no recording in .*rec/door \(is cameras.door.record set\?\)"):
        export_clip(settings, "door", START, START + 5, tmp_path / "x.mp4")
    record_clip(demo_clip, settings)
    with pytest.raises(
        ClipError, match="no recording of camera door covers 2027-01-15 07:00:00 UTC to 2027-01-15 07:00:05 UTC"
    ):
        export_clip(settings, "door", START - 3600, START - 3595, tmp_path / "x.mp4")
    assert not (tmp_path / "x.mp4").exists()
