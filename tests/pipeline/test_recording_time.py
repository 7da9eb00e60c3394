"""``recorded_at: auto``: when a recording began, read from a vigil segment's name or a file's
creation_time (vigil's segments and clips write it), resolved before start or refused with its line."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pipeline.commands import replay_config
from pipeline.config import ConfigError, load_config
from pipeline.record_settings import RecordConfig
from pipeline.recording_time import RecordingTimeError, creation_time, recording_start
from stages.clips import export_clip
from tests.stages.test_recording import START, record_clip


def at(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, UTC)


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory, demo_clip: Path) -> RecordConfig:
    """The demo clip recorded in 5 s segments (keyframes every 2 s: segments start at 0, 6, 12, ... s)."""
    settings = RecordConfig(folder=str(tmp_path_factory.mktemp("rec")), segment_s=5, min_free_gb=0)
    record_clip(demo_clip, settings)
    return settings


def test_a_segment_says_when_it_began_by_its_name_and_inside_it_once_renamed(recording: RecordConfig, tmp_path):
    segment = Path(recording.folder) / "door" / "door-20270115T080006.000Z.mp4"
    assert recording_start(str(segment)) == at(START + 6)
    renamed = tmp_path / "evidence.mp4"  # copied off the recorder under another name: its creation_time
    shutil.copy(segment, renamed)
    assert recording_start(str(renamed)) == at(START + 6)


def test_a_clip_carries_the_clock_time_of_its_first_frame(recording: RecordConfig, tmp_path: Path) -> None:
    clip = export_clip(recording, "door", START + 7.5, START + 10.0, tmp_path / "incident.mp4")
    assert recording_start(str(clip.path)) == at(clip.start), "the keyframe at 6 s, to the second"


def test_a_file_that_does_not_say_is_refused_before_start_with_the_settings_line(tmp_path: Path, demo_clip: Path):
    with pytest.raises(RecordingTimeError, match="does not say when it was recorded"):
        recording_start(str(demo_clip))  # made by scripts/make_demo_clip.py, with no creation_time
    config = tmp_path / "site.yaml"
    config.write_text(f"cameras:\n  plaza:\n    source: {demo_clip}\n    recorded_at: auto\n")
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    (problem,) = caught.value.problems
    assert problem.startswith(f"{config}:4: cameras.plaza.recorded_at: auto: {demo_clip} does not say when")
    assert "give the time, for example recorded_at: '2026-11-28 21:30:00'" in problem


def test_auto_is_resolved_at_load_and_for_a_replay(recording: RecordConfig, tmp_path: Path, demo_clip: Path) -> None:
    segment = Path(recording.folder) / "door" / "door-20270115T080012.000Z.mp4"
    config = tmp_path / "site.yaml"
    config.write_text(f"cameras:\n  door:\n    source: {segment}\n    recorded_at: auto\n")
    loaded = load_config(config)
    assert loaded.cameras["door"].recording_started == at(START + 12)
    replayed = replay_config(loaded, str(segment.with_name("door-20270115T080018.000Z.mp4")), "fast", None, "auto")
    assert replayed.cameras["door"].recording_started == at(START + 18)
    with pytest.raises(ConfigError, match=r"replay: cameras.door.recorded_at: auto: .* does not say"):
        replay_config(loaded, str(demo_clip), "fast", None, "auto")


def test_a_creation_time_of_zero_or_without_a_zone_is_read_as_ffmpeg_writes_it() -> None:
    assert creation_time("2026-12-04T22:15:00.000000Z") == datetime(2026, 12, 4, 22, 15, tzinfo=UTC)
    assert creation_time("2026-12-04 22:15:00") == datetime(2026, 12, 4, 22, 15, tzinfo=UTC)
    assert creation_time("1970-01-01T00:00:00.000000Z") is None, "zero: the camera did not know"
    assert creation_time("yesterday") is None
