"""A camera's recording (stages/recording.py) made from the real packets of the demo clip: segments
that start at keyframes and play from 0, deletion after keep_hours or for room on the disk, a folder
that cannot be written. The wall clock is injected (a recorder's clock follows the clip's media
time from an arbitrary start, and jumps hours for keep_hours): hours cannot pass in a test."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import av

from pipeline.record_settings import RecordConfig
from stages.recording import Recorder, segment_start, segments
from tests.support.small_disk import small_disk

START = 1_800_000_000.0  # 2027-01-15 08:00:00 UTC


def record_clip(clip: Path, settings: RecordConfig, clock: Callable[[float], float] = lambda t: START + t) -> Recorder:
    """Feed every packet of ``clip`` to a Recorder as decode does (decoded first), the wall clock at
    ``clock(media time of the latest video packet)``."""
    now = [START]
    with av.open(str(clip)) as source:
        video, audio = source.streams.video[0], source.streams.audio[0]
        recorder = Recorder("door", settings, video, audio, clock=lambda: now[0])
        for packet in source.demux(video, audio):
            packet.decode()
            if packet.stream.index == video.index and packet.pts is not None:
                now[0] = clock(float(packet.pts * packet.time_base))
            recorder.write(packet)
        recorder.close()
    return recorder


def video_frames(path: Path) -> list[float]:
    """The times of the frames a player shows: up to the first packet it cannot decode."""
    times = []
    with av.open(str(path)) as container:
        try:
            for frame in container.decode(container.streams.video[0]):
                times.append(frame.time)
        except av.error.InvalidDataError:  # a torn fragment at the end of a file cut short
            pass
    return times


def test_segments_start_at_keyframes_play_from_zero_and_hold_every_frame(tmp_path: Path, demo_clip: Path) -> None:
    settings = RecordConfig(folder=str(tmp_path / "rec"), segment_s=5, min_free_gb=0)
    recorder = record_clip(demo_clip, settings)
    found = segments(settings, "door")
    # the clip has a keyframe every 2 s: a 5 s segment runs to the keyframe at 6 s
    assert [round(s.started - START, 1) for s in found] == [0.0, 6.0, 12.0, 18.0, 24.0]
    assert recorder.segments_started == 5 and recorder.failures == 0
    assert found[1].path.name == "door-20270115T080006.000Z.mp4"
    frames = [video_frames(s.path) for s in found]
    assert sum(len(f) for f in frames) == 300, "every frame of the 30 s clip at 10 fps is kept"
    assert all(abs(f[0] - 0.2) < 0.05 for f in frames), (
        "each plays from 0 (its first frame shown after 0.2 s of B-frame delay)"
    )
    with av.open(str(found[2].path)) as container:
        assert [s.type for s in container.streams] == ["video", "audio"]
        first = next(container.demux(container.streams.video[0]))
        assert first.is_keyframe


def test_a_segment_cut_short_still_plays_up_to_its_last_fragment(tmp_path: Path, demo_clip: Path) -> None:
    settings = RecordConfig(folder=str(tmp_path / "rec"), segment_s=10, min_free_gb=0)
    record_clip(demo_clip, settings)
    whole = segments(settings, "door")[0].path
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size * 6 // 10])  # the power went off mid-write
    assert 20 <= len(video_frames(cut)) < len(video_frames(whole))


def test_segments_older_than_keep_hours_are_deleted_as_new_ones_start(tmp_path: Path, demo_clip: Path) -> None:
    settings = RecordConfig(folder=str(tmp_path / "rec"), segment_s=2, keep_hours=3, min_free_gb=0)
    record_clip(demo_clip, settings, clock=lambda t: START + t * 1800)  # each 2 s segment an hour apart
    hours = [round((s.started - START) / 3600, 1) for s in segments(settings, "door")]
    # the newest started 14 h in; what ended 3 h before it (where the next began) is gone
    assert hours == [11.0, 12.0, 13.0, 14.0]


def test_the_oldest_segments_make_room_when_the_disk_runs_low_and_recording_goes_on(
    tmp_path: Path, demo_clip: Path, caplog
) -> None:
    with small_disk(tmp_path / "disk", size="2m") as disk:  # the 30 s clip takes about 2 MB
        settings = RecordConfig(folder=str(disk.path / "rec"), segment_s=5, min_free_gb=0.0012)  # 1.2 MB
        recorder = record_clip(demo_clip, settings)
        kept = [round(s.started - START) for s in segments(settings, "door")]
        free = shutil.disk_usage(disk.path).free
    assert recorder.failures == 0 and recorder.segments_started == 5
    assert recorder.deleted_early >= 1 and kept == [0, 6, 12, 18, 24][recorder.deleted_early :], "the oldest went first"
    assert free > 0.5e6, "room is left however long the camera records"
    assert "deleted the 1 oldest segment(s) before keep_hours: the disk of" in caplog.text


def test_a_folder_that_cannot_be_written_is_logged_and_recording_never_raises(
    tmp_path: Path, demo_clip: Path, caplog
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    settings = RecordConfig(folder=str(blocker / "rec"), segment_s=2, min_free_gb=0)
    recorder = record_clip(demo_clip, settings)  # 30 s at one clock: retried after 10 s, twice more
    assert recorder.failures == 3 and recorder.segments_started == 0
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert len(errors) == 1, "logged once a minute at most"
    assert errors[0].startswith(f"camera door: recording into {blocker / 'rec' / 'door'} failed: Not a directory")


def test_a_segment_name_gives_back_its_start_and_other_files_are_not_segments(tmp_path: Path) -> None:
    assert segment_start(Path("door-20270115T080006.250Z.mp4"), "door") == START + 6.25
    assert segment_start(Path("door-notes.mp4"), "door") is None
    assert segment_start(Path("yard-20270115T080006.250Z.mp4"), "door") is None
