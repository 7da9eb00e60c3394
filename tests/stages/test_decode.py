from __future__ import annotations

import random
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from pipeline.config import AnalysisConfig, is_live
from stages.decode import Backoff, LiveClock
from stages.media import MediaError, open_media
from stages.sampling import AudioSample, VideoSample, analysis_size, sample_media

ROOT = Path(__file__).resolve().parents[2]


def samples_of(path: Path, fps: float = 5, width: int = 640, audio: bool = True):
    with open_media(str(path), timeout_s=5) as media:
        video = media.container.streams.video[0]
        stream = media.container.streams.audio[0] if audio and media.container.streams.audio else None
        return list(sample_media(media, video, stream, AnalysisConfig(fps=fps, width=width), 0.5))


def test_demo_clip_is_sampled_at_the_analysis_fps_and_width(demo_clip):
    out = samples_of(demo_clip)
    frames = [s for s in out if isinstance(s, VideoSample)]
    assert len(frames) == 150  # 30 s at 5 fps from a 10 fps source
    assert frames[0].image.shape == (480, 640, 3) and frames[0].image.dtype == np.uint8
    gaps = np.diff([f.pts for f in frames])
    assert np.allclose(gaps, 0.2, atol=1e-3)
    assert frames[0].pts == pytest.approx(0.0, abs=1e-6)


def test_audio_is_16k_mono_chunks_covering_the_clip_with_speech_where_it_was_mixed(demo_clip, demo_meta):
    chunks = [s for s in samples_of(demo_clip) if isinstance(s, AudioSample)]
    assert all(c.samples.dtype == np.float32 and c.samples.ndim == 1 for c in chunks)
    assert all(len(c.samples) == 8000 for c in chunks[:-1])
    total = sum(len(c.samples) for c in chunks) / 16000
    assert total == pytest.approx(30.0, abs=0.1)
    assert np.allclose(np.diff([c.pts for c in chunks]), 0.5, atol=1e-3)
    loudest = max(chunks, key=lambda c: float(np.abs(c.samples).max()))
    assert demo_meta["speech"]["start_s"] - 0.5 <= loudest.pts <= demo_meta["speech"]["end_s"]


def write_video_only(path: Path, frames: int = 20, size: tuple[int, int] = (320, 240)) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for i in range(frames):
            image = np.full((size[1], size[0], 3), i * 10 % 255, np.uint8)
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            frame.pts, frame.time_base = i, Fraction(1, 10)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def test_source_without_audio_yields_video_only_and_never_upscales(tmp_path):
    path = tmp_path / "silent.mp4"
    write_video_only(path)
    out = samples_of(path, fps=10, width=640)
    assert out and all(isinstance(s, VideoSample) for s in out)
    assert out[0].image.shape == (240, 320, 3)


def write_ts_part(path: Path, size: tuple[int, int], bgr: tuple[int, int, int], first: int, frames: int = 10) -> None:
    with av.open(str(path), "w", format="mpegts") as container:
        stream = container.add_stream("libx264", rate=10)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for i in range(first, first + frames):
            image = np.empty((size[1], size[0], 3), np.uint8)
            image[:] = bgr
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            frame.pts, frame.time_base = i, Fraction(1, 10)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def test_a_resolution_change_mid_stream_rescales_the_new_frames_to_the_analysis_width(tmp_path):
    # One scaler serves the whole stream: after the change it must scale the new size, not the old.
    write_ts_part(tmp_path / "a.ts", (320, 240), (0, 0, 200), first=0)
    write_ts_part(tmp_path / "b.ts", (480, 270), (200, 0, 0), first=10)
    joined = tmp_path / "joined.ts"  # MPEG-TS parts concatenate into one stream
    joined.write_bytes((tmp_path / "a.ts").read_bytes() + (tmp_path / "b.ts").read_bytes())
    frames = [s for s in samples_of(joined, fps=10, width=400) if isinstance(s, VideoSample)]
    before = [f for f in frames if f.pts < 0.95]
    after = [f for f in frames if f.pts > 0.95]
    assert len(before) == 10 and len(after) >= 5
    assert all(f.image.shape == (240, 320, 3) for f in before)  # never upscaled
    assert all(f.image.shape == (224, 400, 3) for f in after)
    assert all(np.allclose(f.image.reshape(-1, 3).mean(0), (0, 0, 200), atol=8) for f in before)
    assert all(np.allclose(f.image.reshape(-1, 3).mean(0), (200, 0, 0), atol=8) for f in after)


def test_analysis_size_keeps_aspect_and_even_dimensions():
    assert analysis_size(1920, 1080, 1280) == (1280, 720)
    assert analysis_size(768, 576, 641) == (640, 480)
    assert analysis_size(320, 240, 640) == (320, 240)


def test_live_sources_are_recognised():
    assert is_live("rtsp://cam/1") and is_live("RTSP://cam/1")
    assert not is_live("/videos/a.mp4")


def open_error(path: str) -> MediaError:
    with pytest.raises(MediaError) as caught, open_media(path, timeout_s=5):
        pass
    return caught.value


def test_missing_file_is_a_permanent_clear_error(tmp_path):
    error = open_error(str(tmp_path / "nope.mp4"))
    assert error.permanent and str(error) == f"cannot open {tmp_path / 'nope.mp4'}: no such file"


def test_file_that_is_not_video_is_a_permanent_clear_error(tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("this is not a video\n" * 100)
    error = open_error(str(path))
    assert error.permanent
    assert "not a readable video file" in str(error) and str(path) in str(error)


def test_audio_only_file_is_refused_for_having_no_video(tmp_path):
    path = tmp_path / "voice.m4a"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000, layout="mono")
        samples = np.zeros((1, 16000), np.float32)
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate = 16000
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    assert "has no video stream" in str(open_error(str(path)))


def test_truncated_file_is_reported_as_unreadable(tmp_path, demo_clip):
    data = demo_clip.read_bytes()
    path = tmp_path / "cut.mp4"
    path.write_bytes(data[: len(data) // 3])
    with pytest.raises(MediaError) as caught:
        samples_of(path)
    assert caught.value.permanent
    assert str(path) in str(caught.value)
    assert "truncated" in str(caught.value) or "not a readable video file" in str(caught.value)


def test_folder_given_as_a_video_is_a_clear_error(tmp_path):
    error = open_error(str(tmp_path))
    assert error.permanent and "it is a folder" in str(error)


def test_backoff_doubles_its_cap_with_full_jitter_and_resets() -> None:
    backoff = Backoff(first_s=0.5, max_s=4.0, rng=random.Random(7))
    delays = [backoff.next_delay() for _ in range(200)]
    caps = [min(4.0, 0.5 * 2**n) for n in range(200)]
    assert all(0 <= d <= cap for d, cap in zip(delays, caps, strict=True))
    assert max(delays[5:]) > 3.0, "the cap is reached"
    assert len({round(d, 3) for d in delays[5:]}) > 100, "jittered, not a fixed delay"
    backoff.reset()
    assert backoff.next_delay() <= 0.5


def test_live_clock_keeps_media_time_running_across_a_reconnect() -> None:
    clock = LiveClock()
    assert [clock.place(p) for p in (0.0, 0.5, 1.0)] == [0.0, 0.5, 1.0]
    time.sleep(0.2)
    clock.reconnected()  # the new connection's media time starts near zero again
    first, second = clock.place(0.1), clock.place(0.6)
    assert 1.15 <= first <= 1.6
    assert second == pytest.approx(first + 0.5)
