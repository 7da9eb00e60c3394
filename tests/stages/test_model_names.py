"""Model settings judged before anything starts: what each backend can load (a file, a catalogue
name of the right kind, its own library's names) passes; what it could never load is named."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import DetectConfig, TranscribeConfig
from stages.model_names import detector_model_problem, speech_model_problem


@pytest.mark.parametrize(
    ("backend", "model"),
    [
        ("opencv", "yolov3-tiny-coco"),
        ("ultralytics", "yolo11n.pt"),
        ("ultralytics", "yolo11n.yaml"),
        ("ultralytics", "yolo11n"),
        ("ultralytics", "https://example.com/models/best.pt"),
    ],
)
def test_a_detector_name_its_backend_loads_passes(backend: str, model: str) -> None:
    assert detector_model_problem(DetectConfig(backend=backend, model=model)) is None


def test_an_existing_detector_file_passes_whatever_its_name(tmp_path: Path) -> None:
    weights = tmp_path / "best.onnx"
    weights.write_bytes(b"onnx")
    for backend in ("opencv", "ultralytics"):
        assert detector_model_problem(DetectConfig(backend=backend, model=str(weights))) is None


@pytest.mark.parametrize(
    ("backend", "model", "says"),
    [
        ("opencv", "yolov9-nonsense", "no such file or folder, and not a catalogue name (yolov3-tiny"),
        ("opencv", "whisper-tiny.en", "'whisper-tiny.en' is a ctranslate2-whisper model, which the opencv"),
        ("ultralytics", "yolov3-tiny-coco", "is a darknet model, which the ultralytics backend does not load"),
        ("ultralytics", "models/best.pt", "'models/best.pt': no such file or folder, and not a name ultralytics"),
        ("ultralytics", "best.onnx", "'best.onnx': no such file or folder, and not a name ultralytics downloads"),
    ],
)
def test_a_detector_model_no_backend_could_load_is_named(backend: str, model: str, says: str) -> None:
    problem = detector_model_problem(DetectConfig(backend=backend, model=model))
    assert problem is not None and says in problem, problem


@pytest.mark.parametrize(
    ("backend", "model"),
    [
        ("faster-whisper", "whisper-tiny.en"),
        ("faster-whisper", "tiny.en"),
        ("faster-whisper", "large-v3"),
        ("faster-whisper", "Systran/faster-whisper-small"),
        ("openai-whisper", "tiny"),
        ("transformers", "openai/whisper-tiny.en"),
    ],
)
def test_a_speech_model_name_its_backend_loads_passes(backend: str, model: str) -> None:
    assert speech_model_problem(TranscribeConfig(backend=backend, model=model)) is None


@pytest.mark.parametrize(
    ("backend", "model", "says"),
    [
        ("faster-whisper", "whisper-huge", "not a faster-whisper size (tiny.en, tiny,"),
        ("faster-whisper", "./models/whisper", "'./models/whisper': no such file or folder"),
        ("openai-whisper", "whisper-tiny.en", "is a ctranslate2-whisper model, which the openai-whisper backend"),
        ("openai-whisper", "huge", "'huge': no such file, and not an openai-whisper size (tiny.en,"),
        ("transformers", "whisper-tiny", "not a Hugging Face model id (org/name"),
    ],
)
def test_a_speech_model_no_backend_could_load_is_named(backend: str, model: str, says: str) -> None:
    problem = speech_model_problem(TranscribeConfig(backend=backend, model=model))
    assert problem is not None and says in problem, problem
