"""What every speech backend shares: the recognizer protocol, errors, time mapping and the factory.

A recognizer turns one window of 16 kHz mono float32 audio into ``Segment``s whose ``start``/``end``
and word times are camera media time: ``offset`` (the media time of ``audio[0]``) plus the time
inside the window, clamped to the window so that a model hallucinating past the end of the audio
(Whisper always sees 30 s, the rest being padding) cannot place speech after it.

Backends are imported lazily by ``create_recognizer``: a stage that runs faster-whisper never
imports torch, and a missing optional dependency only matters to the backend that needs it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from typing import Protocol

import numpy as np

from pipeline.config import TranscribeConfig
from pipeline.messages import Segment, Word
from stages.speech.vad import speech_region

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
# Windows longer than this are transcribed by the backends' long-form (sequential) algorithms.
WHISPER_WINDOW_S = 30.0
# Whisper's decoder context is 448 tokens including the start-of-transcript prompt (at most 4 tokens
# here: no previous text is carried over): new tokens are capped to leave that room.
PROMPT_ROOM = 8


class SpeechError(RuntimeError):
    """Speech recognition failed."""


class SpeechModelError(SpeechError, FileNotFoundError):
    """A speech model could not be found or loaded; the message names the model."""

    def __init__(self, model: str, reason: str) -> None:
        super().__init__(f"speech model {model!r}: {reason}")
        self.model = model


class SpeechRecognizer(Protocol):
    """A loaded speech model; one instance per stage process (it is not thread-safe)."""

    def transcribe(self, audio: np.ndarray, offset: float) -> list[Segment]:
        """Transcribe 16 kHz mono float32 ``audio`` whose first sample is at media time ``offset`` (s)."""
        ...

    def warm_up(self) -> None:
        """Run the model once on a second of silence, past any voice activity check, and discard the
        result: a model's first run allocates (and on a GPU loads its kernels), and the first words
        someone says should not wait for that."""
        ...


WARM_UP_S = 1.0  # seconds of silence each backend's warm_up runs its model on


def warm_up_audio() -> np.ndarray:
    return np.zeros(int(WARM_UP_S * SAMPLE_RATE), np.float32)


def parse_device(device: str) -> tuple[str, int]:
    """``'cpu'`` -> ``('cpu', 0)``, ``'cuda:1'`` -> ``('cuda', 1)``."""
    kind, _, index = device.partition(":")
    if kind not in ("cpu", "cuda") or (index and not index.isdigit()):
        raise SpeechError(f"unknown device {device!r}: use 'cpu' or 'cuda:N'")
    return kind, int(index or 0)


def token_budget(max_new_tokens: int, text_context: int) -> int:
    """``max_new_tokens`` capped so that the prompt still fits in the decoder's context."""
    return max(1, min(max_new_tokens, text_context - PROMPT_ROOM))


def looks_like_path(model: str) -> bool:
    """True for a setting meant as a filesystem path rather than a hub or catalogue name."""
    return (
        os.path.isabs(model)
        or model.startswith(("./", "../", "~", ".\\", "..\\"))
        or model.endswith((".pt", ".pth", ".bin", ".safetensors"))
    )


def check_model_path(model: str) -> None:
    """Raise SpeechModelError when ``model`` is written as a path but nothing is there."""
    if looks_like_path(model) and not os.path.exists(os.path.expanduser(model)):
        raise SpeechModelError(model, "no such file or folder")


def model_load_error(model: str, exc: BaseException) -> SpeechModelError:
    """A SpeechModelError for a loader's exception, saying whether a download was attempted."""
    if os.path.exists(os.path.expanduser(model)):
        reason = f"could not be loaded: {type(exc).__name__}: {exc}"
    else:
        reason = (
            "is not a local file or folder, and loading it by name (a download where the internet "
            f"is reachable) failed: {type(exc).__name__}: {exc}"
        )
    return SpeechModelError(model, reason)


def as_mono_float32(audio: np.ndarray) -> np.ndarray:
    """Check and convert a window of audio to a contiguous 1-D float32 array."""
    array = np.asarray(audio)
    if array.ndim != 1:
        raise ValueError(f"expected 1-D mono audio, got an array of shape {array.shape}")
    if not np.issubdtype(array.dtype, np.floating):
        raise ValueError(f"expected float audio in -1..1, got dtype {array.dtype}")
    return np.ascontiguousarray(array, dtype=np.float32)


class WindowClock:
    """Maps times relative to a window (or to a crop starting ``shift`` s into it) to media time."""

    def __init__(self, offset: float, duration: float, shift: float = 0.0) -> None:
        self.offset = offset
        self.duration = duration
        self.shift = shift

    def media_time(self, relative: float) -> float:
        inside = min(max(float(relative) + self.shift, 0.0), self.duration)
        # Millisecond precision, but rounding must not push a time out of the window.
        return min(max(round(self.offset + inside, 3), self.offset), self.offset + self.duration)

    def word(self, text: str, start: float, end: float, probability: float = 1.0) -> Word:
        media_start = self.media_time(start)
        media_end = max(self.media_time(end), media_start)
        return Word(text.strip(), media_start, media_end, float(probability))

    def segment(self, text: str, start: float, end: float, words: Iterable[Word] = ()) -> Segment | None:
        """A Segment in media time, or None when it holds no text (nothing worth sending on)."""
        kept = tuple(w for w in words if w.text)
        text = text.strip()
        if not text and not kept:
            return None
        media_start = self.media_time(start)
        media_end = max(self.media_time(end), media_start)
        if kept:  # segment bounds never cut their own words
            media_start = min(media_start, kept[0].start)
            media_end = max(media_end, kept[-1].end)
        return Segment(text, media_start, media_end, kept)


def speech_window(audio: np.ndarray, offset: float, *, vad: bool) -> tuple[np.ndarray, WindowClock] | None:
    """The samples worth decoding (cropped to the speech when ``vad``) and the clock mapping their
    times to media time; None when there is nothing to decode (empty, or no speech found)."""
    samples = as_mono_float32(audio)
    if samples.size == 0:
        return None
    clock = WindowClock(offset, samples.size / SAMPLE_RATE)
    if vad:
        region = speech_region(samples)
        if region is None:
            return None
        samples, clock.shift = samples[region[0] : region[1]], region[0] / SAMPLE_RATE
    return samples, clock


def create_recognizer(settings: TranscribeConfig) -> SpeechRecognizer:
    """Resolve ``settings.model`` through the catalogue and load it with ``settings.backend``.

    Raises SpeechModelError when the model cannot be fetched, found or loaded.
    """
    from pipeline import catalogue

    entry = catalogue.get_entry(settings.model)
    if entry is not None and entry.kind == "ctranslate2-whisper" and settings.backend != "faster-whisper":
        raise SpeechModelError(
            settings.model,
            f"is a CTranslate2 model that only the faster-whisper backend loads; backend "
            f"{settings.backend!r} needs its own model (a checkpoint path or a name it downloads)",
        )
    try:
        model = catalogue.resolve(settings.model)
    except catalogue.CatalogueError as exc:
        raise SpeechModelError(settings.model, f"could not be fetched: {exc}") from exc
    logger.info(
        "loading speech model %s (%s) with backend %s on %s", settings.model, model, settings.backend,
        settings.device,
    )  # fmt: skip
    try:
        backend = _backend_class(settings.backend)
    except ImportError as exc:
        extra = "faster-whisper" if settings.backend == "faster-whisper" else f"'vigil[{settings.backend}]'"
        raise SpeechError(
            f"speech backend {settings.backend!r} is not installed ({exc}); install it with: pip install {extra}"
        ) from exc
    return backend(model, settings)


def _backend_class(backend: str) -> Callable[[str, TranscribeConfig], SpeechRecognizer]:
    """The recognizer class of ``backend``, imported only now (its libraries are heavy)."""
    if backend == "faster-whisper":
        from stages.speech.faster_whisper_backend import FasterWhisperRecognizer

        return FasterWhisperRecognizer
    if backend == "openai-whisper":
        from stages.speech.openai_whisper_backend import OpenAIWhisperRecognizer

        return OpenAIWhisperRecognizer
    if backend == "transformers":
        from stages.speech.transformers_backend import TransformersRecognizer

        return TransformersRecognizer
    raise SpeechError(f"unknown speech backend {backend!r}")
