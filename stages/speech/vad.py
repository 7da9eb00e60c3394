"""Voice activity detection with the Silero VAD model that faster-whisper bundles (ONNX, CPU).

``speech_spans`` is what every backend (and the transcribe stage) uses to skip silence: no speech,
no model call. Its defaults are faster-whisper's own ``vad_filter`` defaults, so the three
backends agree on what counts as speech. ``StreamingVad`` and ``spans_of`` do the same for audio that
arrives in chunks (the transcribe stage's open windows): each 32 ms of it goes through Silero once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from faster_whisper.vad import get_vad_model

logger = logging.getLogger(__name__)

VAD_SAMPLE_RATE = 16_000  # the only rate faster-whisper's Silero wrapper accepts (512-sample windows)
WINDOW = 512  # samples per Silero window (32 ms)
CONTEXT = 64  # samples of the previous window each window is given


@dataclass(frozen=True)
class VadSettings:
    """What counts as speech (faster-whisper's ``vad_filter`` defaults)."""

    threshold: float = 0.5  # Silero's speech probability above which a window is speech
    min_speech_s: float = 0.0  # spans shorter than this are dropped
    min_silence_s: float = 2.0  # pauses shorter than this do not split a span
    speech_pad_s: float = 0.4  # every span is widened by this on each side (within the audio)


class StreamingVad:
    """Silero's speech probability of every window of a buffer that grows at its end, each complete
    window computed once: the model carries its state from one window to the next, so the windows
    already seen keep their probabilities and the new ones start from the state after them. A
    buffer that is not a continuation of the last one (shorter: it was cut) starts afresh.

    The transcribe stage looks at a camera's open window after every 0.5 s chunk; running Silero
    over the whole window each time processed 2.7 times the audio on the demo (82 s for 30 s).
    The probabilities are exactly those of faster-whisper's ``get_speech_timestamps``, which pads
    the audio to whole windows and zeroes the last window's final ``CONTEXT`` samples."""

    def __init__(self) -> None:
        self._session = get_vad_model().session
        self.reset()

    def reset(self) -> None:
        self._probabilities: list[float] = []
        self._state = (np.zeros((1, 1, 128), np.float32), np.zeros((1, 1, 128), np.float32))
        self._tail = np.zeros(CONTEXT, np.float32)  # the end of the last complete window
        self._seen = 0

    def probabilities(self, audio: np.ndarray) -> np.ndarray:
        """One probability per window of ``audio`` (16 kHz, the last window padded with zeros)."""
        if len(audio) < self._seen:
            self.reset()
        self._seen = len(audio)
        complete = len(audio) // WINDOW
        done = len(self._probabilities)
        if complete > done:
            windows = audio[done * WINDOW : complete * WINDOW].reshape(-1, WINDOW)
            contexts = np.concatenate([self._tail[None, :], windows[:-1, -CONTEXT:]])
            probabilities, h, c = self._run(np.concatenate([contexts, windows], axis=1))
            self._state = (h, c)
            self._probabilities.extend(probabilities.reshape(-1).tolist())
            self._tail = windows[-1, -CONTEXT:].copy()
        last = np.zeros(WINDOW, np.float32)
        rest = audio[complete * WINDOW :]
        last[: len(rest)] = rest
        last[-CONTEXT:] = 0.0
        final, _, _ = self._run(np.concatenate([self._tail, last])[None, :])
        return np.array([*self._probabilities, float(final.reshape(-1)[0])], np.float32)

    def _run(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        h, c = self._state
        probabilities, h, c = self._session.run(None, {"input": rows.astype(np.float32, copy=False), "h": h, "c": c})
        return probabilities, h, c


def spans_of(
    probabilities: np.ndarray, samples: int, settings: VadSettings = VadSettings()
) -> list[tuple[float, float]]:
    """Spans of speech (seconds) from Silero's window probabilities over ``samples`` 16 kHz samples:
    faster-whisper's ``get_speech_timestamps`` without a maximum span length."""
    neg_threshold = max(settings.threshold - 0.15, 0.01)
    min_speech = VAD_SAMPLE_RATE * settings.min_speech_s
    min_silence = VAD_SAMPLE_RATE * settings.min_silence_s
    pad = VAD_SAMPLE_RATE * settings.speech_pad_s
    speeches: list[list[int]] = []
    start: int | None = None
    silence_from = 0  # where the current silence began (0: none yet)
    for i, probability in enumerate(probabilities):
        at = WINDOW * i
        if probability >= settings.threshold:
            silence_from = 0
            if start is None:
                start = at
                continue
        if start is not None and probability < neg_threshold:
            silence_from = silence_from or at
            if at - silence_from < min_silence:
                continue
            if silence_from - start > min_speech:
                speeches.append([start, silence_from])
            start, silence_from = None, 0
    if start is not None and samples - start > min_speech:
        speeches.append([start, samples])
    for i, speech in enumerate(speeches):
        if i == 0:
            speech[0] = int(max(0, speech[0] - pad))
        if i != len(speeches) - 1:
            gap = speeches[i + 1][0] - speech[1]
            if gap < 2 * pad:
                speech[1] += int(gap // 2)
                speeches[i + 1][0] = int(max(0, speeches[i + 1][0] - gap // 2))
            else:
                speech[1] = int(min(samples, speech[1] + pad))
                speeches[i + 1][0] = int(max(0, speeches[i + 1][0] - pad))
        else:
            speech[1] = int(min(samples, speech[1] + pad))
    return [(begin / VAD_SAMPLE_RATE, end / VAD_SAMPLE_RATE) for begin, end in speeches]


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
    settings = VadSettings(threshold, min_speech_s, min_silence_s, speech_pad_s)
    spans = spans_of(StreamingVad().probabilities(samples), samples.size, settings)
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
