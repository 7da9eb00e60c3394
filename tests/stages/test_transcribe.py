from __future__ import annotations

import numpy as np
import pytest

from pipeline.config import TranscribeConfig
from pipeline.messages import AudioChunk
from stages.transcribe import AudioWindow, choose_cut, dbfs

SETTINGS = TranscribeConfig(min_window_s=2.0, max_window_s=10.0)


def chunk(pts: float, seconds: float = 0.5, amplitude: float = 0.01) -> AudioChunk:
    samples = np.full(int(seconds * 16000), amplitude, np.float32)
    return AudioChunk(camera="c", seq=0, pts=pts, wall_time=0.0, sample_rate=16000, samples=samples)


def test_dbfs_of_full_scale_and_silence():
    assert dbfs(np.ones(100, np.float32)) == pytest.approx(0.0)
    assert dbfs(np.full(100, 0.1, np.float32)) == pytest.approx(-20.0)
    assert dbfs(np.zeros(100, np.float32)) == -120.0


def test_window_cut_keeps_media_time_continuous_and_splits_levels():
    window = AudioWindow()
    for i in range(6):
        window.add(chunk(10.0 + i * 0.5))
    assert window.duration == pytest.approx(3.0)
    start, audio, levels = window.cut(1.25)
    assert start == 10.0 and len(audio) == 20000
    assert [lvl.pts for lvl in levels] == [10.0, 10.5, 11.0]
    assert window.start == pytest.approx(11.25) and window.duration == pytest.approx(1.75)
    assert [lvl.pts for lvl in window.levels] == [11.5, 12.0, 12.5]


def test_silence_is_released_except_a_short_tail():
    assert choose_cut([], 4.0, SETTINGS, final=False) == (3.5, False)


def test_open_utterance_waits_for_more_audio():
    assert choose_cut([(1.0, 3.9)], 4.0, SETTINGS, final=False) == (0.0, False)


def test_closed_utterance_is_transcribed_up_to_just_after_it():
    assert choose_cut([(1.0, 2.5)], 4.0, SETTINGS, final=False) == (2.75, True)


def test_never_longer_than_max_window_even_mid_speech():
    assert choose_cut([(0.5, 10.0)], 10.0, SETTINGS, final=False) == (10.0, True)


def test_end_of_stream_flushes_everything():
    assert choose_cut([(1.0, 3.9)], 4.0, SETTINGS, final=True) == (4.0, True)
    assert choose_cut([], 4.0, SETTINGS, final=True) == (4.0, False)
