"""openai-whisper backend, with a randomly initialised tiny Whisper: loading and plumbing, not accuracy."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
import whisper.model as whisper_model

from pipeline.config import TranscribeConfig
from pipeline.messages import Segment
from stages.speech import SpeechModelError, SpeechRecognizer, create_recognizer
from stages.speech.vad import speech_region

SAMPLE_RATE = 16_000
InWindow = Callable[[Sequence[Segment], float, float], None]
WarmUpCalls = Callable[[object, str], list[dict[str, object]]]


def random_checkpoint(path: Path) -> Path:
    """A 1-layer, 64-wide English-only Whisper saved the way ``whisper.load_model`` reads it."""
    dims = whisper_model.ModelDimensions(
        n_mels=80,
        n_audio_ctx=1500,
        n_audio_state=64,
        n_audio_head=2,
        n_audio_layer=1,
        n_vocab=51864,  # English-only vocabulary (the .en models): is_multilingual is False
        n_text_ctx=448,
        n_text_state=64,
        n_text_head=2,
        n_text_layer=1,
    )
    torch.manual_seed(0)
    model = whisper_model.Whisper(dims)
    # Whisper leaves the decoder's positional embedding uninitialised (torch.empty: whatever was in
    # memory, so every run would decode differently); give it seeded values like the other weights.
    torch.nn.init.normal_(model.decoder.positional_embedding, std=0.02)
    torch.save({"dims": asdict(dims), "model_state_dict": model.state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return random_checkpoint(tmp_path_factory.mktemp("openai-whisper") / "random-tiny.en.pt")


@pytest.fixture(scope="module")
def recognizer(checkpoint: Path) -> SpeechRecognizer:
    settings = TranscribeConfig(backend="openai-whisper", model=str(checkpoint), max_new_tokens=8, threads=2)
    return create_recognizer(settings)


def test_random_weights_load_and_return_segments_in_media_time(
    recognizer: SpeechRecognizer, padded_speech: np.ndarray, assert_in_window: InWindow
) -> None:
    duration = padded_speech.size / SAMPLE_RATE
    region = speech_region(padded_speech)
    assert region is not None

    segments = recognizer.transcribe(padded_speech, offset=50.0)

    # Random weights decode garbage (seed 0: a repeated word), but it is decoded, mapped to media
    # time and kept inside the window; VAD cropped the silence in front, so nothing precedes it.
    assert segments
    assert_in_window(segments, 50.0 + region[0] / SAMPLE_RATE, duration - region[0] / SAMPLE_RATE)
    assert all(segment.words for segment in segments)


def test_vad_skips_silence_without_decoding(recognizer: SpeechRecognizer) -> None:
    assert recognizer.transcribe(np.zeros(2 * SAMPLE_RATE, np.float32), offset=1.0) == []


def test_missing_checkpoint_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pt"

    with pytest.raises(SpeechModelError, match=r"missing\.pt"):
        create_recognizer(TranscribeConfig(backend="openai-whisper", model=str(missing)))


def test_unknown_name_offline_names_it() -> None:
    with pytest.raises(SpeechModelError, match=r"not-a-whisper-model.*not a local file"):
        create_recognizer(TranscribeConfig(backend="openai-whisper", model="not-a-whisper-model"))


def test_warm_up_runs_the_model_on_a_second_of_silence_past_the_voice_activity_check(
    recognizer: SpeechRecognizer, warm_up_calls: WarmUpCalls
) -> None:
    warm_up_calls(recognizer, "transcribe")
