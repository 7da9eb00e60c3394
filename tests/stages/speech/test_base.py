from __future__ import annotations

import pytest

from pipeline.messages import Word
from stages.speech.base import SpeechError, SpeechModelError, WindowClock, parse_device, token_budget


def test_window_clock_maps_crop_times_to_media_time_and_clamps() -> None:
    clock = WindowClock(offset=100.0, duration=5.0006875, shift=2.5)

    assert clock.media_time(0.25) == 102.75
    assert clock.media_time(-1.0) == 101.5  # before the crop, still inside the window
    assert clock.media_time(-3.0) == 100.0  # before the window
    assert clock.media_time(27.5) == 100.0 + 5.0006875  # Whisper's padding: clamped, not rounded up


def test_window_clock_segment_drops_empty_text_and_keeps_its_words_inside() -> None:
    clock = WindowClock(offset=10.0, duration=4.0)

    assert clock.segment("  ", 0.0, 1.0) is None
    segment = clock.segment(" Help. ", 1.0, 1.5, [clock.word(" Help.", 0.9, 1.6, 0.5), Word("", 1, 1)])
    assert segment is not None
    assert (segment.text, segment.start, segment.end) == ("Help.", 10.9, 11.6)
    assert segment.words == (Word("Help.", 10.9, 11.6, 0.5),)


def test_parse_device() -> None:
    assert parse_device("cpu") == ("cpu", 0)
    assert parse_device("cuda:1") == ("cuda", 1)
    with pytest.raises(SpeechError, match="unknown device"):
        parse_device("tpu:0")


def test_token_budget_leaves_room_for_the_prompt() -> None:
    assert token_budget(128, 448) == 128
    assert token_budget(448, 448) == 440


def test_speech_model_error_is_a_file_not_found_error_naming_the_model() -> None:
    error = SpeechModelError("/models/x.pt", "no such file or folder")

    assert isinstance(error, FileNotFoundError) and isinstance(error, RuntimeError)
    assert str(error) == "speech model '/models/x.pt': no such file or folder"
    assert error.model == "/models/x.pt"
