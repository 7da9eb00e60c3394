"""faster-whisper (CTranslate2) backend: the default, fastest on CPU.

Decoding is greedy (``beam_size=1``, a single temperature, no fallback) and each window is decoded
on its own (``condition_on_previous_text=False``): latency stays bounded and one bad window cannot
poison the next. Voice activity detection is faster-whisper's own ``vad_filter`` (Silero).
"""

from __future__ import annotations

import logging
import os

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
)

logger = logging.getLogger(__name__)

CPU_FALLBACK_COMPUTE_TYPE = "int8"


def cpu_compute_type(compute_type: str) -> str:
    """The compute type to use on CPU: types CTranslate2 cannot run there fall back to int8."""
    import ctranslate2

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
            self._model = WhisperModel(
                os.path.expanduser(model),
                device=device,
                device_index=index,
                compute_type=compute_type,
                cpu_threads=settings.threads,
            )
        except Exception as exc:  # CTranslate2 and huggingface_hub raise many types
            raise model_load_error(model, exc) from exc
        logger.info(
            "faster-whisper model %s loaded on %s (compute type %s, %s thread(s))",
            model,
            settings.device,
            compute_type,
            settings.threads,
        )

    def transcribe(self, audio: np.ndarray, offset: float) -> list[Segment]:
        samples = as_mono_float32(audio)
        if samples.size == 0:
            return []
        clock = WindowClock(offset, samples.size / SAMPLE_RATE)
        try:
            segments, _info = self._model.transcribe(
                samples,
                language=self._settings.language,
                word_timestamps=True,
                vad_filter=self._settings.vad,
                beam_size=1,
                temperature=0.0,
                condition_on_previous_text=False,
                max_new_tokens=token_budget(self._settings.max_new_tokens, self._model.max_length),
            )
            results = []
            for segment in segments:  # a generator: decoding happens while it is consumed
                words = [clock.word(w.word, w.start, w.end, w.probability) for w in segment.words or ()]
                made = clock.segment(segment.text, segment.start, segment.end, words)
                if made is not None:
                    results.append(made)
        except (RuntimeError, ValueError) as exc:
            raise SpeechError(f"faster-whisper failed on {clock.duration:.2f} s of audio: {exc}") from exc
        return results
