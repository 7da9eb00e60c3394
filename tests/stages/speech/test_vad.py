from __future__ import annotations

import numpy as np
import pytest

from stages.speech.vad import StreamingVad, spans_of, speech_region, speech_spans

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


@pytest.fixture(scope="module")
def demo_audio() -> np.ndarray:
    """The demo clip's 30 s of sound: a plaza's noise and a shouted sentence at 12 s."""
    from pathlib import Path

    from tests.stages.speech.conftest import read_mono_16k

    return read_mono_16k(Path(__file__).resolve().parents[3] / "media" / "demo.mp4")


@pytest.mark.parametrize(
    "options",
    [{}, {"min_silence_s": 0.25, "speech_pad_s": 0.0}, {"threshold": 0.3, "min_speech_s": 0.25, "speech_pad_s": 0.1}],
)
def test_spans_are_faster_whisper_own(demo_audio: np.ndarray, padded_speech: np.ndarray, options: dict) -> None:
    """The port of faster-whisper's get_speech_timestamps finds the very same spans."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    theirs_options = VadOptions(
        threshold=options.get("threshold", 0.5),
        min_speech_duration_ms=round(options.get("min_speech_s", 0.0) * 1000),
        min_silence_duration_ms=round(options.get("min_silence_s", 2.0) * 1000),
        speech_pad_ms=round(options.get("speech_pad_s", 0.4) * 1000),
    )
    speech_twice = np.concatenate([padded_speech, np.zeros(SAMPLE_RATE, np.float32), padded_speech[: 5 * 8000 + 77]])
    for audio in (demo_audio, padded_speech, speech_twice, demo_audio[: 512 * 400]):
        stamps = get_speech_timestamps(audio.copy(), theirs_options)
        theirs = [(s["start"] / SAMPLE_RATE, s["end"] / SAMPLE_RATE) for s in stamps]
        assert speech_spans(audio, **options) == theirs
        assert theirs


def test_a_growing_buffer_gets_the_probabilities_of_the_whole(demo_audio: np.ndarray) -> None:
    """Half-second chunks as transcribe gets them: each call computes only the new windows, and
    what it returns equals one pass over the whole buffer; a cut buffer starts afresh."""
    whole = StreamingVad().probabilities(demo_audio)
    vad = StreamingVad()
    for end in range(8000, len(demo_audio) + 1, 8000):
        probabilities = vad.probabilities(demo_audio[:end])
        assert len(probabilities) == end // 512 + 1
    assert np.array_equal(probabilities[:-1], whole[: len(probabilities) - 1])
    assert np.array_equal(vad.probabilities(demo_audio), whole)
    tail = demo_audio[len(demo_audio) // 2 :]
    assert np.array_equal(vad.probabilities(tail), StreamingVad().probabilities(tail)), "cut: starts afresh"
    assert spans_of(whole, len(demo_audio)) == speech_spans(demo_audio)
