"""Voice activity detection with the Silero VAD model that faster-whisper bundles (ONNX, CPU).

``speech_spans`` is what every backend (and the transcribe stage) uses to skip silence: no speech,
no model call. Its defaults are faster-whisper's own ``vad_filter`` defaults, so the three
backends agree on what counts as speech.
"""

from __future__ import annotations

import logging

import numpy as np
from faster_whisper.vad import VadOptions, get_speech_timestamps

logger = logging.getLogger(__name__)

VAD_SAMPLE_RATE = 16_000  # the only rate faster-whisper's Silero wrapper accepts (512-sample windows)


def speech_spans(
    audio: np.ndarray,
    sample_rate: int = VAD_SAMPLE_RATE,
    *,
    threshold: float = 0.5,
    min_speech_s: float = 0.0,
    min_silence_s: float = 2.0,
    speech_pad_s: float = 0.4,
) -> list[tuple[float, float]]:
    """Spans of speech in ``audio`` as ``(start, end)`` seconds from its first sample, in order.

    ``threshold`` is the Silero speech probability above which a 32 ms window is speech; spans
    shorter than ``min_speech_s`` are dropped, pauses shorter than ``min_silence_s`` do not split a
    span and every span is widened by ``speech_pad_s`` on each side (within the audio). Audio at
    another ``sample_rate`` is resampled (linearly) to 16 kHz first.
    """
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    samples = np.asarray(audio)
    if samples.ndim != 1:
        raise ValueError(f"expected 1-D mono audio, got an array of shape {samples.shape}")
    samples = samples.astype(np.float32, copy=False)
    if sample_rate != VAD_SAMPLE_RATE:
        samples = _resample(samples, sample_rate, VAD_SAMPLE_RATE)
    if samples.size == 0:
        return []
    options = VadOptions(
        threshold=threshold,
        min_speech_duration_ms=round(min_speech_s * 1000),
        min_silence_duration_ms=round(min_silence_s * 1000),
        speech_pad_ms=round(speech_pad_s * 1000),
    )
    stamps = get_speech_timestamps(np.ascontiguousarray(samples), options, sampling_rate=VAD_SAMPLE_RATE)
    spans = [(stamp["start"] / VAD_SAMPLE_RATE, stamp["end"] / VAD_SAMPLE_RATE) for stamp in stamps]
    logger.debug("VAD found %s speech span(s) in %.2f s of audio", len(spans), samples.size / VAD_SAMPLE_RATE)
    return spans


def _resample(samples: np.ndarray, rate: int, target: int) -> np.ndarray:
    if samples.size == 0:
        return samples
    count = max(1, round(samples.size * target / rate))
    positions = np.arange(count, dtype=np.float64) * (rate / target)
    return np.interp(positions, np.arange(samples.size), samples).astype(np.float32)


def speech_region(audio: np.ndarray, sample_rate: int = VAD_SAMPLE_RATE) -> tuple[int, int] | None:
    """Sample indices ``[start, end)`` from the first speech span's start to the last one's end.

    None when there is no speech. Backends without their own VAD transcribe only this region.
    """
    spans = speech_spans(audio, sample_rate)
    if not spans:
        return None
    start = max(0, int(spans[0][0] * sample_rate))
    end = min(len(audio), int(np.ceil(spans[-1][1] * sample_rate)))
    return (start, end) if end > start else None
