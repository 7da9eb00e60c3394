from __future__ import annotations

import numpy as np
import pytest

from stages.speech.vad import speech_region, speech_spans

SAMPLE_RATE = 16_000


def test_one_span_around_the_spoken_phrase(padded_speech: np.ndarray) -> None:
    spans = speech_spans(padded_speech)

    assert len(spans) == 1
    start, end = spans[0]
    duration = padded_speech.size / SAMPLE_RATE
    assert 2.0 <= start <= 3.2  # speech at 3.0 s, widened by the 0.4 s pad
    assert duration - 0.6 <= end <= duration


def test_no_span_in_silence_or_low_noise() -> None:
    noise = np.random.default_rng(0).normal(0.0, 0.003, 3 * SAMPLE_RATE).astype(np.float32)

    assert speech_spans(np.zeros(3 * SAMPLE_RATE, np.float32)) == []
    assert speech_spans(noise) == []
    assert speech_spans(np.zeros(0, np.float32)) == []
    assert speech_region(noise) is None


def test_other_sample_rates_are_resampled(padded_speech: np.ndarray) -> None:
    at_8k = padded_speech[::2].copy()  # crude decimation is enough for a VAD

    spans = speech_spans(at_8k, sample_rate=8000)

    assert len(spans) == 1
    assert 2.0 <= spans[0][0] <= 3.2


def test_speech_region_covers_all_spans(padded_speech: np.ndarray) -> None:
    region = speech_region(padded_speech)

    assert region is not None
    start, end = region
    assert 2.0 * SAMPLE_RATE <= start <= 3.2 * SAMPLE_RATE
    assert end <= padded_speech.size


def test_rejects_stereo() -> None:
    with pytest.raises(ValueError, match="1-D"):
        speech_spans(np.zeros((2, 1600), np.float32))
