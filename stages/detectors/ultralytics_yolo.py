"""Object detection with ultralytics: any model ``YOLO()`` loads (``.pt``, ``.onnx``, ``.engine``, ``.yaml``).

Importing ultralytics changes the process: it sets ``OMP_NUM_THREADS=1`` when unset (inherited by
child processes), ``cv2.setNumThreads(0)``, and its first predict calls ``torch.set_num_threads(1)``
on machines with two cores (35 to 50% of CPU throughput lost). This backend restores
``OMP_NUM_THREADS`` after the import and sets torch's thread count back to ``settings.threads``
after every predict. Before the import it sets ``YOLO_OFFLINE=1`` (no online checks or automatic
package installs; downloads of named weights such as ``yolo11n.pt`` are still tried, once) and, when
unset, ``YOLO_CONFIG_DIR`` to a writable cache folder. ``pil=True`` is never used (it makes
ultralytics fetch a font online).
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.config import DetectConfig
from pipeline.messages import Box
from stages.detectors.base import (
    DetectorError,
    ModelLoadError,
    ModelNotFoundError,
    check_images,
    chunks,
    class_ids,
    cuda_index,
    make_box,
    missing_model_message,
)

if TYPE_CHECKING:
    from ultralytics import YOLO

logger = logging.getLogger(__name__)

_BOX_TASKS = ("detect", "segment", "pose")


def _config_dir() -> Path:
    """A writable folder for ultralytics' settings file."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    for candidate in (
        Path(base) / "vigil" / "ultralytics",
        Path(tempfile.gettempdir()) / "vigil-ultralytics",
    ):
        try:
            candidate.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(candidate, os.W_OK):
            return candidate
    return Path(tempfile.mkdtemp(prefix="vigil-ultralytics-"))


def prepare_environment() -> None:
    """Environment ultralytics reads at import time; call before ``import ultralytics``."""
    os.environ.setdefault("YOLO_OFFLINE", "1")
    if not os.environ.get("YOLO_CONFIG_DIR"):
        os.environ["YOLO_CONFIG_DIR"] = str(_config_dir())


def _import_yolo() -> type[YOLO]:
    """``ultralytics.YOLO``, imported without leaving ``OMP_NUM_THREADS=1`` behind."""
    prepare_environment()
    previous = os.environ.get("OMP_NUM_THREADS")
    try:
        from ultralytics import YOLO
    except ImportError as exc:
        raise ModelLoadError(
            f"the ultralytics backend needs the ultralytics package: pip install 'vigil[ultralytics]' ({exc})"
        ) from exc
    finally:
        _restore_env("OMP_NUM_THREADS", previous)
    return YOLO


def _restore_env(name: str, value: str | None) -> None:
    if value is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = value


def _looks_like_path(model: str) -> bool:
    """True for a local path (a name without folders may be one ultralytics downloads, or a URL)."""
    return "://" not in model and ("/" in model or os.sep in model or model.startswith("~"))


class UltralyticsDetector:
    """A model run by ultralytics' ``YOLO.predict``; see the module docstring."""

    def __init__(self, model: str, settings: DetectConfig) -> None:
        self.model = model
        self._settings = settings
        index = cuda_index(settings.device)
        if _looks_like_path(model) and not os.path.exists(os.path.expanduser(model)):
            raise ModelNotFoundError(missing_model_message(model))
        yolo_class = _import_yolo()
        import torch

        if index is not None and index >= torch.cuda.device_count():
            raise DetectorError(
                f"device {settings.device} requested, but torch sees {torch.cuda.device_count()} CUDA "
                f"device(s) (torch {torch.__version__}, CUDA available: {torch.cuda.is_available()})"
            )
        self._device: str | int = "cpu" if index is None else index
        self._yolo = self._load(yolo_class, model)
        names = self._yolo.names
        self.names: tuple[str, ...] = tuple(str(names[i]) for i in range(len(names)))
        self._classes = class_ids(self.names, settings.classes, model)
        # The first predict sets the model up (and resets torch's thread count): do it now.
        size = settings.input_size
        self._predict([np.zeros((size, size, 3), np.uint8)])
        logger.info(
            "ultralytics detector ready: %s (%s, %s classes) at %s px on %s, %s thread(s)",
            model,
            self._yolo.task,
            len(self.names),
            size,
            settings.device,
            settings.threads,
        )

    def _load(self, yolo_class: type[YOLO], model: str) -> YOLO:
        try:
            yolo = yolo_class(model)
        except FileNotFoundError as exc:
            raise ModelNotFoundError(f"ultralytics could not find model {model!r}: {exc}") from exc
        except ConnectionError as exc:
            raise ModelLoadError(
                f"model {model!r} is not a local file and ultralytics could not download it: {exc}"
            ) from exc
        except Exception as exc:  # ultralytics raises many kinds (TypeError, KeyError, RuntimeError, ...)
            raise ModelLoadError(f"ultralytics could not load model {model!r}: {exc}") from exc
        if yolo.task not in _BOX_TASKS:
            raise ModelLoadError(
                f"model {model!r} is a {yolo.task!r} model; the detector needs one of {', '.join(_BOX_TASKS)}"
            )
        return yolo

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Box]]:
        """Boxes per image; images go through the model ``settings.batch`` at a time."""
        check_images(images)
        results: list[list[Box]] = []
        for batch in chunks(images, self._settings.batch):
            results.extend(self._boxes(result) for result in self._predict(batch))
        return results

    def _predict(self, images: Sequence[np.ndarray]) -> list[Any]:
        import torch

        settings = self._settings
        omp = os.environ.get("OMP_NUM_THREADS")
        try:
            results: list[Any] = list(
                self._yolo.predict(
                    list(images),
                    imgsz=settings.input_size,
                    conf=settings.confidence,
                    iou=settings.nms,
                    device=self._device,
                    classes=self._classes,
                    verbose=False,
                )
            )
        except Exception as exc:
            raise DetectorError(f"ultralytics predict with {self.model} failed: {exc}") from exc
        finally:
            torch.set_num_threads(settings.threads)
            _restore_env("OMP_NUM_THREADS", omp)
        if len(results) != len(images):
            raise DetectorError(f"ultralytics returned {len(results)} results for {len(images)} images")
        return results

    def _boxes(self, result: Any) -> list[Box]:
        boxes = result.boxes
        if boxes is None or len(boxes) == 0:
            return []
        xyxyn = boxes.xyxyn.cpu().numpy().astype(np.float64)
        confidence = boxes.conf.cpu().numpy().astype(np.float64)
        class_id = boxes.cls.cpu().numpy().astype(np.int64)
        names = result.names
        out = []
        for i in np.argsort(-confidence, kind="stable"):
            x1, y1, x2, y2 = (float(v) for v in xyxyn[i])
            box = make_box(str(names[int(class_id[i])]), float(confidence[i]), x1, y1, x2, y2)
            if box is not None:
                out.append(box)
        return out
