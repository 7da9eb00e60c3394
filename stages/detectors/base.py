"""What every object detector backend offers, its errors, and the factory that picks a backend.

A backend takes a batch of BGR ``uint8`` images (``H x W x 3``, possibly of different sizes, from
different cameras) and returns, per image, the boxes that survived non-maximum suppression, the
confidence threshold and the class filter, with coordinates normalized to that image (0..1).
"""

from __future__ import annotations

import difflib
import logging
import re
from collections.abc import Sequence
from typing import Protocol

import numpy as np

from pipeline.catalogue import CATALOGUE, CatalogueError, resolve
from pipeline.config import DetectConfig
from pipeline.messages import Box

logger = logging.getLogger(__name__)

_CUDA_DEVICE = re.compile(r"^cuda:(\d+)$")


class DetectorError(RuntimeError):
    """A detector cannot be built or cannot run."""


class ModelLoadError(DetectorError):
    """The model could not be loaded (unsupported format, corrupt file, missing companion file...)."""


class ModelNotFoundError(ModelLoadError, FileNotFoundError):
    """The model path does not exist (and is not a catalogue name)."""


class InvalidImageError(DetectorError, ValueError):
    """An image handed to ``detect`` is not a BGR ``uint8`` ``H x W x 3`` array."""


class Detector(Protocol):
    """An object detector; build one with ``create_detector``."""

    names: tuple[str, ...]
    """Class names of the model, indexed by class id."""

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Box]]:
        """One list of boxes per image, normalized to that image, strongest first."""
        ...


def create_detector(settings: DetectConfig) -> Detector:
    """Resolve ``settings.model`` through the catalogue and load it with ``settings.backend``.

    The backend module is imported here, so ``ultralytics`` (and torch) are only imported when that
    backend is chosen. Raises ModelNotFoundError / ModelLoadError when the model cannot be found or
    loaded, and DetectorError for an unknown class name in ``settings.classes``.
    """
    try:
        model = resolve(settings.model)
    except CatalogueError as exc:
        raise ModelLoadError(f"could not fetch model {settings.model!r}: {exc}") from exc
    if model != settings.model:
        logger.info("model %s resolved to %s", settings.model, model)
    if settings.backend == "opencv":
        from stages.detectors.opencv_dnn import OpenCVDetector

        return OpenCVDetector(model, settings)
    if settings.backend == "ultralytics":
        from stages.detectors.ultralytics_yolo import UltralyticsDetector

        return UltralyticsDetector(model, settings)
    raise DetectorError(f"unknown detector backend {settings.backend!r}: use 'opencv' or 'ultralytics'")


def class_ids(names: Sequence[str], wanted: Sequence[str] | None, model: str) -> list[int] | None:
    """Ids of the ``wanted`` class names in ``names`` (None when every class is wanted).

    Raises DetectorError naming the model, the unknown class, a close match if any and a few valid names.
    """
    if wanted is None:
        return None
    index = {name: i for i, name in enumerate(names)}
    ids = []
    for name in wanted:
        if name not in index:
            close = difflib.get_close_matches(name, list(names), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            examples = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
            raise DetectorError(
                f"unknown class {name!r} for model {model}{hint}; it knows {len(names)} classes: {examples}"
            )
        ids.append(index[name])
    return sorted(set(ids))


def cuda_index(device: str) -> int | None:
    """The N of ``cuda:N``; None for ``cpu``."""
    if device == "cpu":
        return None
    match = _CUDA_DEVICE.match(device)
    if match is None:
        raise DetectorError(f"unknown device {device!r}: use 'cpu' or 'cuda:N'")
    return int(match.group(1))


def check_images(images: Sequence[np.ndarray]) -> None:
    """Raise InvalidImageError unless every image is a non-empty BGR ``uint8`` ``H x W x 3`` array."""
    for i, image in enumerate(images):
        if not isinstance(image, np.ndarray):
            raise InvalidImageError(f"image {i} is a {type(image).__name__}, not a numpy array")
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or image.size == 0:
            raise InvalidImageError(
                f"image {i} has shape {image.shape} and dtype {image.dtype}; expected H x W x 3 uint8 (BGR)"
            )


def missing_model_message(model: str) -> str:
    """Explain a model setting that is neither an existing path nor a catalogue name."""
    known = ", ".join(entry.name for entry in CATALOGUE)
    return f"model {model!r} not found: no such file or folder, and not a catalogue name ({known})"


def chunks(images: Sequence[np.ndarray], size: int) -> list[Sequence[np.ndarray]]:
    """Split ``images`` into consecutive runs of at most ``size`` images."""
    return [images[start : start + size] for start in range(0, len(images), size)]


def make_box(label: str, confidence: float, x1: float, y1: float, x2: float, y2: float) -> Box | None:
    """A Box with coordinates clipped to 0..1, or None when nothing of it is left inside the image."""
    x1, x2 = min(max(x1, 0.0), 1.0), min(max(x2, 0.0), 1.0)
    y1, y2 = min(max(y1, 0.0), 1.0), min(max(y2, 0.0), 1.0)
    if x2 <= x1 or y2 <= y1:
        return None
    return Box(label=label, confidence=confidence, x1=x1, y1=y1, x2=x2, y2=y2)
