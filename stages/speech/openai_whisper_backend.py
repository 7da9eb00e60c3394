"""openai-whisper (PyTorch) backend: the reference implementation.

``model`` is a checkpoint path (``.pt`` holding ``dims`` and ``model_state_dict``) or an official
name (``tiny``, ``base.en``, ...) that ``whisper.load_model`` downloads where the internet is
reachable. Decoding is greedy with a single temperature, each window on its own, capped at
``max_new_tokens`` tokens per 30 s window; silence is skipped with the shared Silero VAD.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
import torch
import whisper

from pipeline.config import TranscribeConfig
from pipeline.messages import Segment
from stages.speech.base import (
    SpeechError,
    check_model_path,
    model_load_error,
    parse_device,
    speech_window,
    token_budget,
    warm_up_audio,
)

logger = logging.getLogger(__name__)


class OpenAIWhisperRecognizer:
    """Transcribes windows of audio with ``whisper.load_model(...).transcribe``."""

    def __init__(self, model: str, settings: TranscribeConfig) -> None:
        check_model_path(model)
        device, _ = parse_device(settings.device)
        torch.set_num_threads(settings.threads)
        try:
            self._model = whisper.load_model(os.path.expanduser(model), device=settings.device)
        except Exception as exc:  # RuntimeError for unknown names, URLError offline, pickling errors...
            raise model_load_error(model, exc) from exc
        self._model.eval()
        self._vad = settings.vad
        self._fp16 = device == "cuda"
        self._language = settings.language
        if not self._model.is_multilingual and self._language not in (None, "en"):
            logger.warning("model %s is English-only; language %s is ignored", model, self._language)
            self._language = "en"
        self._sample_len = token_budget(settings.max_new_tokens, self._model.dims.n_text_ctx)
        logger.info("openai-whisper model %s loaded on %s (%s thread(s))", model, settings.device, settings.threads)

    def transcribe(self, audio: np.ndarray, offset: float) -> list[Segment]:
        window = speech_window(audio, offset, vad=self._vad)
        if window is None:
            return []
        samples, clock = window
        duration = clock.duration
        try:
            result = self._run(samples)
        except (RuntimeError, ValueError) as exc:
            raise SpeechError(f"openai-whisper failed on {duration:.2f} s of audio: {exc}") from exc
        segments = []
        for item in result["segments"]:
            if not isinstance(item, dict):
                continue
            words = [
                clock.word(str(w["word"]), w["start"], w["end"], w.get("probability", 1.0))
                for w in item.get("words", ())
            ]
            made = clock.segment(str(item["text"]), item["start"], item["end"], words)
            if made is not None:
                segments.append(made)
        return segments

    def warm_up(self) -> None:
        try:
            self._run(warm_up_audio())
        except (RuntimeError, ValueError) as exc:
            raise SpeechError(f"openai-whisper failed its warm-up run: {exc}") from exc

    def _run(self, samples: np.ndarray) -> dict[str, Any]:
        with torch.inference_mode():
            return self._model.transcribe(
                samples,
                language=self._language,
                task="transcribe",
                word_timestamps=True,
                fp16=self._fp16,
                condition_on_previous_text=False,
                temperature=0.0,
                sample_len=self._sample_len,
                verbose=None,
            )
