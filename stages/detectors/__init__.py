"""Object detector backends: ``create_detector(settings)`` picks one from ``DetectConfig.backend``.

Backends live in their own modules (``opencv_dnn``, ``ultralytics_yolo``) and are imported only when
chosen, so importing this package never imports ultralytics or torch.
"""

from stages.detectors.base import (
    Detector,
    DetectorError,
    InvalidImageError,
    ModelLoadError,
    ModelNotFoundError,
    create_detector,
)

__all__ = [
    "Detector",
    "DetectorError",
    "InvalidImageError",
    "ModelLoadError",
    "ModelNotFoundError",
    "create_detector",
]
