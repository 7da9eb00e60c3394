from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest

from pipeline.config import TranscribeConfig
from pipeline.messages import Segment
from stages.speech import SpeechModelError, SpeechRecognizer, create_recognizer
from stages.speech.faster_whisper_backend import (
    MIN_CONTEXT_FRAMES,
    FasterWhisperRecognizer,
    FittedContextWhisper,
    cpu_compute_type,
    fitted_length,
)

SAMPLE_RATE = 16_000
InWindow = Callable[[Sequence[Segment], float, float], None]
WarmUpCalls = Callable[[object, str], list[dict[str, object]]]


@pytest.fixture(scope="module")
def recognizer(tiny_en_folder: Path) -> SpeechRecognizer:
    # The defaults: faster-whisper, the catalogue's whisper-tiny.en, English, VAD on, int8.
    return create_recognizer(TranscribeConfig(threads=2))


def test_default_backend_is_faster_whisper(recognizer: SpeechRecognizer) -> None:
    assert isinstance(recognizer, FasterWhisperRecognizer)


def test_transcribes_real_speech_in_media_time(
    recognizer: SpeechRecognizer, padded_speech: np.ndarray, assert_in_window: InWindow
) -> None:
    duration = padded_speech.size / SAMPLE_RATE

    segments = recognizer.transcribe(padded_speech, offset=100.0)

    text = " ".join(segment.text for segment in segments).lower()
    assert "help" in text and "police" in text, text
    assert_in_window(segments, 100.0, duration)
    words = [word for segment in segments for word in segment.words]
    help_word = next(word for word in words if "help" in word.text.lower())
    assert abs(help_word.start - 103.0) <= 1.0, help_word
    assert [w.start for w in words] == sorted(w.start for w in words)
    assert all(word.text == word.text.strip() and word.text for word in words)


def test_fitted_length_keeps_the_audio_and_a_second_of_padding() -> None:
    features = np.zeros((1, 80, 3000), np.float32)
    features[0, :, :1234] = -0.5  # 12.34 s of audio, then faster-whisper's zero padding

    assert fitted_length(features) == 1400  # 12.34 s + 1 s, rounded up to whole seconds
    assert fitted_length(features[0]) == 1400  # also without the batch axis
    assert fitted_length(np.zeros((80, 3000), np.float32)) == MIN_CONTEXT_FRAMES  # short or empty: 10 s
    features[0, 3, 2999] = 0.1  # audio to the end: nothing cut
    assert fitted_length(features) == 3000


def test_fitted_context_encodes_fewer_frames_and_hears_the_same_words(
    tiny_en_folder: Path, padded_speech: np.ndarray
) -> None:
    fitted = create_recognizer(TranscribeConfig(threads=2))
    full = create_recognizer(TranscribeConfig(threads=2, fit_context=False))
    assert isinstance(fitted, FasterWhisperRecognizer) and isinstance(full, FasterWhisperRecognizer)
    assert isinstance(fitted._model, FittedContextWhisper)
    assert not isinstance(full._model, FittedContextWhisper)
    features = np.zeros((80, 3000), np.float32)
    window = fitted._model.feature_extractor(padded_speech)
    features[:, : window.shape[1]] = window

    assert fitted._model.encode(features).shape[1] < full._model.encode(features).shape[1]  # positions

    def words(recognizer: SpeechRecognizer) -> list[tuple[str, float]]:
        segments = recognizer.transcribe(padded_speech, offset=100.0)
        return [(w.text.lower().strip(".,!?"), w.start) for s in segments for w in s.words]

    heard, expected = words(fitted), words(full)
    assert [text for text, _ in heard] == [text for text, _ in expected], (heard, expected)
    for (_, start), (_, expected_start) in zip(heard, expected, strict=True):
        assert abs(start - expected_start) <= 0.3


def test_silence_gives_no_segments(recognizer: SpeechRecognizer) -> None:
    assert recognizer.transcribe(np.zeros(2 * SAMPLE_RATE, np.float32), offset=7.0) == []
    assert recognizer.transcribe(np.zeros(0, np.float32), offset=7.0) == []


def test_rejects_non_float_audio(recognizer: SpeechRecognizer) -> None:
    with pytest.raises(ValueError, match="float"):
        recognizer.transcribe(np.zeros(SAMPLE_RATE, np.int16), offset=0.0)


def test_float16_on_cpu_falls_back_to_int8(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="stages.speech.faster_whisper_backend"):
        assert cpu_compute_type("float16") == "int8"
        assert cpu_compute_type("int8_float16") == "int8"
    assert "float16 is not supported on CPU" in caplog.text
    assert cpu_compute_type("float32") == "float32"
    assert cpu_compute_type("int8") == "int8"


def test_missing_model_path_names_it(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-model"

    with pytest.raises(SpeechModelError, match="no-such-model") as caught:
        create_recognizer(TranscribeConfig(model=str(missing)))

    assert isinstance(caught.value, FileNotFoundError)
    assert caught.value.model == str(missing)


def test_unloadable_model_folder_names_it(tmp_path: Path) -> None:
    folder = tmp_path / "empty-model"
    folder.mkdir()

    with pytest.raises(SpeechModelError, match=r"empty-model.*could not be loaded"):
        create_recognizer(TranscribeConfig(model=str(folder)))


def test_catalogue_ctranslate2_model_is_refused_by_other_backends() -> None:
    with pytest.raises(SpeechModelError, match=r"whisper-tiny\.en.*only the faster-whisper backend"):
        create_recognizer(TranscribeConfig(backend="transformers", model="whisper-tiny.en"))


def test_warm_up_runs_the_model_on_a_second_of_silence_past_the_voice_activity_check(
    recognizer: SpeechRecognizer, warm_up_calls: WarmUpCalls
) -> None:
    calls = warm_up_calls(recognizer, "transcribe")
    assert calls[0]["vad_filter"] is False
