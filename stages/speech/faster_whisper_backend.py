"""faster-whisper (CTranslate2) backend: the default, fastest on CPU.

Decoding is greedy (``beam_size=1``, a single temperature, no fallback) and each window is decoded
on its own (``condition_on_previous_text=False``): latency stays bounded and one bad window cannot
poison the next. Voice activity detection is faster-whisper's own ``vad_filter`` (Silero).

With ``fit_context`` (the default) the encoder runs on the window's own length, at least
``MIN_CONTEXT_FRAMES``, instead of on Whisper's 30 s. faster-whisper pads every window's features to
30 s with zero columns; ``FittedContextWhisper.encode`` cuts those columns off again, keeping a
second of them. CTranslate2's encoder takes any length up to 30 s, and the decoder then attends to
that many positions: on the demo's speech a 4.5 s window took 0.14 s instead of 0.46 s, and the
words and their times came out the same (Whisper.cpp's ``audio_ctx`` is the same idea).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from typing import Any

import ctranslate2
import numpy as np
from faster_whisper import WhisperModel

from pipeline.config import TranscribeConfig
from pipeline.messages import Segment
from stages.speech.base import (
    SAMPLE_RATE,
    SpeechError,
    WindowClock,
    as_mono_float32,
    check_model_path,
    model_load_error,
    parse_device,
    token_budget,
    warm_up_audio,
)

logger = logging.getLogger(__name__)

CPU_FALLBACK_COMPUTE_TYPE = "int8"
FRAMES_PER_S = 100  # Whisper's log-mel frames
MIN_CONTEXT_FRAMES = 10 * FRAMES_PER_S  # shorter encoder inputs drift further from Whisper's training
CONTEXT_MARGIN_FRAMES = FRAMES_PER_S  # silence kept after the audio


def fitted_length(features: np.ndarray) -> int:
    """Frames of ``features`` (``(..., mels, frames)``, zero-padded at the end) worth encoding: the
    audio (its last frame with any non-zero value) plus a margin, rounded up to a whole second, at
    least ``MIN_CONTEXT_FRAMES`` and at most what is there. A log-mel frame of real audio, even of
    digital silence, is never all zeros after Whisper's normalisation."""
    total = features.shape[-1]
    frames_with_audio = np.flatnonzero(np.any(features.reshape(-1, features.shape[-2], total) != 0, axis=(0, 1)))
    content = int(frames_with_audio[-1]) + 1 if frames_with_audio.size else 0
    wanted = -(-(content + CONTEXT_MARGIN_FRAMES) // FRAMES_PER_S) * FRAMES_PER_S
    return min(total, max(MIN_CONTEXT_FRAMES, wanted))


class FittedContextWhisper(WhisperModel):
    """``WhisperModel`` whose encoder sees each window's own length rather than 30 s (module docstring)."""

    def encode(self, features: np.ndarray) -> ctranslate2.StorageView:
        length = fitted_length(features)
        return super().encode(np.ascontiguousarray(features[..., :length]))


def cpu_compute_type(compute_type: str) -> str:
    """The compute type to use on CPU: types CTranslate2 cannot run there fall back to int8."""
    if compute_type in ("default", "auto") or compute_type in ctranslate2.get_supported_compute_types("cpu"):
        return compute_type
    logger.warning("compute type %s is not supported on CPU; using %s instead", compute_type, CPU_FALLBACK_COMPUTE_TYPE)
    return CPU_FALLBACK_COMPUTE_TYPE


class FasterWhisperRecognizer:
    """Transcribes windows of audio with ``faster_whisper.WhisperModel``."""

    def __init__(self, model: str, settings: TranscribeConfig) -> None:
        check_model_path(model)
        device, index = parse_device(settings.device)
        compute_type = cpu_compute_type(settings.compute_type) if device == "cpu" else settings.compute_type
        self._settings = settings
        try:
            model_class = FittedContextWhisper if settings.fit_context else WhisperModel
            self._model = model_class(
                os.path.expanduser(model),
                device=device,
                device_index=index,
                compute_type=compute_type,
                cpu_threads=settings.threads,
            )
        except Exception as exc:  # CTranslate2 and huggingface_hub raise many types
            raise model_load_error(model, exc) from exc
        logger.info(
            "faster-whisper model %s loaded on %s (compute type %s, %s thread(s), %s encoder context)",
            model,
            settings.device,
            compute_type,
            settings.threads,
            "fitted" if settings.fit_context else "30 s",
        )

    def transcribe(self, audio: np.ndarray, offset: float) -> list[Segment]:
        samples = as_mono_float32(audio)
        if samples.size == 0:
            return []
        clock = WindowClock(offset, samples.size / SAMPLE_RATE)
        try:
            segments = self._segments(samples, vad=self._settings.vad)
            results = []
            for segment in segments:  # a generator: decoding happens while it is consumed
                words = [clock.word(w.word, w.start, w.end, w.probability) for w in segment.words or ()]
                made = clock.segment(segment.text, segment.start, segment.end, words)
                if made is not None:
                    results.append(made)
        except (RuntimeError, ValueError) as exc:
            raise SpeechError(f"faster-whisper failed on {clock.duration:.2f} s of audio: {exc}") from exc
        return results

    def warm_up(self) -> None:
        try:
            for _segment in self._segments(warm_up_audio(), vad=False):  # decoding runs as it is consumed
                pass
        except (RuntimeError, ValueError) as exc:
            raise SpeechError(f"faster-whisper failed its warm-up run: {exc}") from exc

    def _segments(self, samples: np.ndarray, *, vad: bool) -> Iterator[Any]:
        segments, _info = self._model.transcribe(
            samples,
            language=self._settings.language,
            word_timestamps=True,
            vad_filter=vad,
            beam_size=1,
            temperature=0.0,
            condition_on_previous_text=False,
            max_new_tokens=token_budget(self._settings.max_new_tokens, self._model.max_length),
        )
        return iter(segments)
