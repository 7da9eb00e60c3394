"""Hugging Face transformers backend (``WhisperForConditionalGeneration``).

``model`` is a folder written by ``save_pretrained`` (model and processor) or a hub name such as
``openai/whisper-tiny.en`` where the hub is reachable. With a generation config that knows the
timestamp tokens (every Whisper checkpoint on the hub does), segments carry Whisper's own
timestamps, and with ``alignment_heads`` also word times (cross-attention DTW); otherwise one
segment spans the speech of the window. Windows up to 30 s are decoded in one ``generate`` call of
at most ``max_new_tokens`` tokens; longer ones use transformers' sequential long-form algorithm.
Silence is skipped with the shared Silero VAD. Word probabilities are the softmax of the decoder's
(processed) scores for each token, averaged over the word's tokens.
"""

from __future__ import annotations

import logging
import math
import os
from typing import Any

import numpy as np
import torch
from transformers import AutoProcessor, WhisperForConditionalGeneration

from pipeline.config import TranscribeConfig
from pipeline.messages import Segment, Word
from stages.speech.base import (
    SAMPLE_RATE,
    WHISPER_WINDOW_S,
    SpeechError,
    SpeechModelError,
    WindowClock,
    check_model_path,
    model_load_error,
    parse_device,
    speech_window,
    token_budget,
    warm_up_audio,
)

logger = logging.getLogger(__name__)

REPLACEMENT_CHAR = "\ufffd"  # what a token ending inside a multi-byte UTF-8 character decodes to


def split_words(tokenizer: Any, tokens: list[int], first_special: int) -> list[tuple[str, list[int]]]:
    """Group the text tokens of ``tokens`` into words, each with the indices of its tokens.

    A word starts at a piece of text that begins with a space (Whisper's byte-level BPE keeps the
    space at the front of a word); punctuation stays with the word before it. Tokens that end
    inside a multi-byte character are held until the character is complete. Tokens at or above
    ``first_special`` (``<|endoftext|>``, the other specials, timestamps) are skipped.
    """
    words: list[tuple[str, list[int]]] = []
    pending: list[int] = []
    for index, token in enumerate(tokens):
        if token >= first_special:
            continue
        pending.append(index)
        piece = tokenizer.decode([tokens[i] for i in pending])
        if REPLACEMENT_CHAR in piece and index != len(tokens) - 1:
            continue
        if piece.startswith(" ") or not words:
            words.append((piece, pending))
        else:
            words[-1] = (words[-1][0] + piece, words[-1][1] + pending)
        pending = []
    if pending and words:
        words[-1] = (words[-1][0], words[-1][1] + pending)
    return [(text.strip(), indices) for text, indices in words if text.strip()]


class TransformersRecognizer:
    """Transcribes windows of audio with a transformers Whisper model and its processor."""

    def __init__(self, model: str, settings: TranscribeConfig) -> None:
        check_model_path(model)
        device, _ = parse_device(settings.device)
        torch.set_num_threads(settings.threads)
        source = os.path.expanduser(model)
        try:
            processor = AutoProcessor.from_pretrained(source)
            network = WhisperForConditionalGeneration.from_pretrained(source)
        except Exception as exc:  # OSError for missing files, ValueError/KeyError for wrong configs
            raise model_load_error(model, exc) from exc
        if not hasattr(processor, "feature_extractor") or not hasattr(processor, "tokenizer"):
            raise SpeechModelError(model, f"has no Whisper processor (got {type(processor).__name__})")
        self._extractor: Any = processor.feature_extractor
        self._tokenizer: Any = processor.tokenizer
        self._device = torch.device(settings.device)
        self._model: Any = network
        if device == "cuda":
            self._model = self._model.half()
        self._model = self._model.to(self._device).eval()
        self._vad = settings.vad

        generation = self._model.generation_config
        self._multilingual = bool(getattr(generation, "is_multilingual", False))
        self._language = settings.language
        if not self._multilingual and self._language not in (None, "en"):
            logger.warning("model %s is English-only; language %s is ignored", model, self._language)
        eos = getattr(generation, "eos_token_id", None)
        if eos is None:
            eos = self._tokenizer.eos_token_id
        # Whisper vocabularies put every special and timestamp token after <|endoftext|>.
        self._first_special = int(min(eos) if isinstance(eos, list) else eos)
        self._timestamps = getattr(generation, "no_timestamps_token_id", None) is not None
        self._word_times = self._timestamps and getattr(generation, "alignment_heads", None) is not None
        if not self._timestamps:
            logger.warning("model %s has no timestamp tokens: one segment per window, no word times", model)
        elif not self._word_times:
            logger.warning("model %s has no alignment_heads in its generation config: no word times", model)
        # Whisper's generate() reads max_length as "new tokens after the prompt" (it adds the prompt
        # length itself); max_new_tokens would work too but logs a warning on every window.
        generation.max_new_tokens = None
        generation.max_length = token_budget(settings.max_new_tokens, self._model.config.max_target_positions)
        logger.info("transformers model %s loaded on %s (%s thread(s))", model, settings.device, settings.threads)

    def transcribe(self, audio: np.ndarray, offset: float) -> list[Segment]:
        window = speech_window(audio, offset, vad=self._vad)
        if window is None:
            return []
        samples, clock = window
        duration = clock.duration
        try:
            with torch.inference_mode():
                output = self._generate(samples)
        except (RuntimeError, ValueError) as exc:
            raise SpeechError(f"transformers failed on {duration:.2f} s of audio: {exc}") from exc
        if not self._timestamps:
            text = self._tokenizer.decode(self._text_tokens(output[0].tolist()))
            made = clock.segment(text, 0.0, samples.size / SAMPLE_RATE)
            return [made] if made is not None else []
        segments = []
        for item in output["segments"][0]:
            made = self._segment(item, clock)
            if made is not None:
                segments.append(made)
        return segments

    def warm_up(self) -> None:
        try:
            with torch.inference_mode():
                self._generate(warm_up_audio())
        except (RuntimeError, ValueError) as exc:
            raise SpeechError(f"transformers failed its warm-up run: {exc}") from exc

    def _generate(self, samples: np.ndarray) -> Any:
        long_form = samples.size > WHISPER_WINDOW_S * SAMPLE_RATE
        extra: dict[str, Any] = {"truncation": False, "padding": "longest"} if long_form else {}
        inputs = self._extractor(
            samples, sampling_rate=SAMPLE_RATE, return_tensors="pt", return_attention_mask=True, **extra
        )
        options: dict[str, Any] = {}
        if self._multilingual and self._language:
            options.update(language=self._language, task="transcribe")
        if self._timestamps:
            options.update(return_timestamps=True, return_segments=True)
            if not long_form:  # one decoding pass per window: bounded latency
                options["force_unique_generate_call"] = True
        if self._word_times:
            options["return_token_timestamps"] = True
        return self._model.generate(
            inputs.input_features.to(self._device, dtype=self._model.dtype),
            attention_mask=inputs.attention_mask.to(self._device),
            **options,
        )

    def _text_tokens(self, tokens: list[int]) -> list[int]:
        return [token for token in tokens if token < self._first_special]

    def _segment(self, item: dict[str, Any], clock: WindowClock) -> Segment | None:
        tokens = [int(t) for t in item["tokens"].tolist()]
        start, end = float(item["start"]), float(item["end"])
        text = self._tokenizer.decode(self._text_tokens(tokens))
        words: list[Word] = []
        times = item.get("token_timestamps")
        if times is not None and len(times) == len(tokens):
            ends = [float(t) for t in times.tolist()]
            probabilities = self._token_probabilities(item, tokens)
            for word_text, indices in split_words(self._tokenizer, tokens, self._first_special):
                first, last = indices[0], indices[-1]
                word_start = ends[first - 1] if first > 0 else start
                chosen = [probabilities[i] for i in indices if not math.isnan(probabilities[i])]
                probability = sum(chosen) / len(chosen) if chosen else 1.0
                words.append(clock.word(word_text, word_start, ends[last], probability))
        return clock.segment(text, start, end, words)

    def _token_probabilities(self, item: dict[str, Any], tokens: list[int]) -> list[float]:
        """Probability of each segment token from the decoding pass's scores (NaN where unknown)."""
        unknown = [math.nan] * len(tokens)
        result = item.get("result")
        if not isinstance(result, dict) or result.get("scores") is None or result.get("sequences") is None:
            return unknown
        scores, sequence = result["scores"], result["sequences"]
        first_generated = len(sequence) - len(scores)  # the decoder prompt has no scores
        begin = int(item["idxs"][0])
        probabilities = []
        for k, token in enumerate(tokens):
            step = begin + k - first_generated
            if 0 <= step < len(scores):
                logits = scores[step].float()
                probabilities.append(float(torch.softmax(logits, dim=-1)[token]))
            else:
                probabilities.append(math.nan)
        return probabilities
