"""Whether the ``model`` settings of detect and transcribe name something their backend can load,
judged before anything starts (``run.py check``, ``run``, ``replay``, ``stage``): a file or folder
that exists, a catalogue name of the right kind, or a name the backend's own library downloads or
builds. Nothing is loaded or downloaded here, so a name that passes can still fail in its stage (a
corrupt file, a hub name without the internet), which the stage then reports; a name that fails
here would have failed there for certain, after every process had started."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Collection
from pathlib import PurePath

from pipeline import catalogue
from pipeline.config import DetectConfig, TranscribeConfig, VigilConfig

# what ultralytics downloads (``yolo11n.pt``) or builds (``yolo11n.yaml``) from a bare name; other
# formats (.onnx, .engine, ...) are exports, which only a file on disk provides
ULTRALYTICS_NAME_SUFFIXES = frozenset({"", ".pt", ".yaml", ".yml"})


def model_problems(config: VigilConfig, stages: Collection[str]) -> list[tuple[str, str]]:
    """``(field, problem)`` for the model settings of those of ``stages`` (stage names: detect,
    transcribe) that cannot name a loadable model; empty when they all can."""
    problems = []
    if "detect" in stages and (problem := detector_model_problem(config.stages.detect)):
        problems.append(("stages.detect.model", problem))
    if "transcribe" in stages and (problem := speech_model_problem(config.stages.transcribe)):
        problems.append(("stages.transcribe.model", problem))
    return problems


def detector_model_problem(settings: DetectConfig) -> str | None:
    model, backend = settings.model, settings.backend
    decided, problem = local_or_catalogue(model, backend, "darknet" if backend == "opencv" else None)
    if decided:
        return problem
    if backend == "ultralytics" and "://" in model:
        return None  # a URL ultralytics downloads
    if backend == "ultralytics" and "/" not in model and PurePath(model).suffix in ULTRALYTICS_NAME_SUFFIXES:
        return None  # ultralytics' own name: it downloads the weights (or builds the model) itself
    if backend == "ultralytics":
        return (
            f"{model!r}: no such file or folder, and not a name ultralytics downloads or builds "
            "(yolo11n.pt, yolo11n.yaml, ...)"
        )
    return f"{model!r}: no such file or folder, and not a catalogue name ({catalogue_names('darknet')})"


def speech_model_problem(settings: TranscribeConfig) -> str | None:
    model, backend = settings.model, settings.backend
    decided, problem = local_or_catalogue(
        model, backend, "ctranslate2-whisper" if backend == "faster-whisper" else None
    )
    if decided:
        return problem
    if is_path(model):
        return f"{model!r}: no such file or folder"
    if backend == "faster-whisper":
        from faster_whisper.utils import available_models

        if model in available_models() or "/" in model:  # a size, or a Hugging Face repository id
            return None
        return (
            f"{model!r}: no such file or folder, not a catalogue name ({catalogue_names('ctranslate2-whisper')}), "
            f"and not a faster-whisper size ({', '.join(available_models())}) or a Hugging Face id (org/name)"
        )
    if backend == "openai-whisper":
        if importlib.util.find_spec("whisper") is None:
            return None  # the stage says how to install the backend
        import whisper

        if model in whisper.available_models():
            return None
        return f"{model!r}: no such file, and not an openai-whisper size ({', '.join(whisper.available_models())})"
    if "/" in model:  # transformers: a Hugging Face repository id
        return None
    return f"{model!r}: no such file or folder, and not a Hugging Face model id (org/name, e.g. openai/whisper-tiny.en)"


def local_or_catalogue(model: str, backend: str, loads: str | None) -> tuple[bool, str | None]:
    """``(decided, problem)``: an existing path passes, and a catalogue name passes when it is of the
    kind the backend ``loads`` (None: no catalogue model); any other name is left to the backend."""
    if os.path.exists(model):
        return True, None
    entry = catalogue.get_entry(model)
    if entry is None:
        return False, None
    if entry.kind == loads:
        return True, None
    return True, f"catalogue model {model!r} is a {entry.kind} model, which the {backend} backend does not load"


def is_path(model: str) -> bool:
    """``model`` is written as a path (so it must exist), not as a speech model's name or
    Hugging Face id (``org/name``)."""
    return model.startswith(("/", "./", "../", "~"))


def catalogue_names(kind: str) -> str:
    return ", ".join(entry.name for entry in catalogue.CATALOGUE if entry.kind == kind)
