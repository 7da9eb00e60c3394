"""Object detection with OpenCV's DNN module: Darknet YOLO models (``.cfg`` + ``.weights``).

The model setting may be a folder holding one ``.cfg`` and one ``.weights`` (pairs are matched by
file stem when there are several), or the path of either file with the other beside it. Labels come
from ``<stem>.names``, ``coco.names`` or the only ``*.names`` file beside them (one name per line).

Darknet YOLO was trained on plain resized images, so every image is resized to
``input_size x input_size`` without letterboxing, and a whole batch goes through one forward pass.
OpenCV's YOLO layer zeroes class scores under its ``thresh`` (0.2 unless the ``.cfg`` says
otherwise); the ``.cfg`` is loaded with ``thresh`` set to the configured confidence so that
thresholds under 0.2 work too.

ONNX and TensorFlow graphs are not handled here yet: load ``.onnx`` models with the ultralytics backend.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
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

logger = logging.getLogger(__name__)

_SCALE = 1.0 / 255.0
_ROW_HEAD = 5  # cx, cy, w, h, objectness; then one score per class
_LEARNED_LAYERS = ("Convolution", "BatchNorm", "InnerProduct")  # what a Darknet .weights file holds
_THRESH_LINE = re.compile(r"^\s*thresh\s*=", re.IGNORECASE)


@dataclass(frozen=True)
class DarknetFiles:
    """The files of a Darknet model."""

    cfg: Path
    weights: Path
    names: Path | None


def find_darknet_files(model: str) -> DarknetFiles:
    """Locate the ``.cfg``, ``.weights`` and ``.names`` files of ``model`` (a folder or either file)."""
    path = Path(model).expanduser()
    if not path.exists():
        raise ModelNotFoundError(missing_model_message(model))
    if path.is_dir():
        cfg, weights = _pair_in_folder(path)
    elif path.suffix.lower() == ".cfg":
        cfg, weights = path, _companion(path, ".weights")
    elif path.suffix.lower() == ".weights":
        cfg, weights = _companion(path, ".cfg"), path
    else:
        raise ModelLoadError(
            f"the opencv backend loads Darknet models (a folder with .cfg + .weights, or either file); "
            f"cannot load {path}. Use backend 'ultralytics' for .pt, .onnx and .engine models"
        )
    return DarknetFiles(cfg=cfg, weights=weights, names=_names_file(cfg))


def _pair_in_folder(folder: Path) -> tuple[Path, Path]:
    cfgs = sorted(folder.glob("*.cfg"))
    weights = sorted(folder.glob("*.weights"))
    if len(cfgs) == 1 and len(weights) == 1:
        return cfgs[0], weights[0]
    pairs = [(c, w) for c in cfgs for w in weights if c.stem == w.stem]
    if len(pairs) == 1:
        return pairs[0]
    found = ", ".join(p.name for p in [*cfgs, *weights]) or "none"
    raise ModelLoadError(
        f"model folder {folder} must hold one Darknet .cfg and one .weights file (or one pair with the "
        f"same name); found: {found}"
    )


def _companion(path: Path, suffix: str) -> Path:
    same_stem = path.with_suffix(suffix)
    if same_stem.is_file():
        return same_stem
    others = sorted(path.parent.glob(f"*{suffix}"))
    if len(others) == 1:
        return others[0]
    raise ModelNotFoundError(
        f"model {path}: no {suffix} file beside it (looked for {same_stem.name}"
        + (f" and found several: {', '.join(p.name for p in others)})" if others else ")")
    )


def _names_file(cfg: Path) -> Path | None:
    for candidate in (cfg.with_suffix(".names"), cfg.parent / "coco.names"):
        if candidate.is_file():
            return candidate
    others = sorted(cfg.parent.glob("*.names"))
    return others[0] if len(others) == 1 else None


def read_names(path: Path) -> tuple[str, ...]:
    """Class names from a Darknet ``.names`` file: one per line, blank lines ignored."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"cannot read class names from {path}: {exc}") from exc
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def cfg_with_threshold(cfg_text: str, threshold: float) -> str:
    """The ``.cfg`` text with ``thresh=threshold`` in every ``[yolo]`` section (replacing any there)."""
    out: list[str] = []
    in_yolo = False
    for line in cfg_text.splitlines():
        stripped = line.strip()
        if stripped.startswith("["):
            in_yolo = stripped.lower() == "[yolo]"
            out.append(line)
            if in_yolo:
                out.append(f"thresh={threshold:.6g}")
            continue
        if in_yolo and _THRESH_LINE.match(line):
            continue
        out.append(line)
    return "\n".join(out) + "\n"


def _read_net(files: DarknetFiles, threshold: float) -> cv2.dnn.Net:
    try:
        cfg_text = files.cfg.read_text(encoding="utf-8")
        weights = np.fromfile(files.weights, dtype=np.uint8)
    except (OSError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"cannot read Darknet model {files.cfg} / {files.weights}: {exc}") from exc
    cfg = np.frombuffer(cfg_with_threshold(cfg_text, threshold).encode("utf-8"), dtype=np.uint8)
    try:
        net = cv2.dnn.readNetFromDarknet(cfg, weights)
    except cv2.error as exc:
        raise ModelLoadError(
            f"OpenCV could not load Darknet model {files.cfg.name} + {files.weights.name} "
            f"from {files.cfg.parent}: {exc.msg if hasattr(exc, 'msg') else exc}"
        ) from exc
    if net.empty():
        raise ModelLoadError(f"OpenCV loaded an empty network from {files.cfg} + {files.weights}")
    _check_weights_size(net, files, weights)
    return net


def _check_weights_size(net: cv2.dnn.Net, files: DarknetFiles, weights: np.ndarray) -> None:
    """Refuse a ``.weights`` file too short for the ``.cfg`` (OpenCV reads past its end silently)."""
    params = 0
    for name in net.getLayerNames():
        layer = net.getLayer(net.getLayerId(name))
        if layer.type in _LEARNED_LAYERS:
            params += sum(int(blob.size) for blob in layer.blobs)
    major, minor = (int(v) for v in weights[:8].view(np.int32)) if weights.size >= 8 else (0, 0)
    header = 20 if major * 10 + minor >= 2 and major < 1000 and minor < 1000 else 16
    expected = header + 4 * params
    if weights.size < expected:
        raise ModelLoadError(
            f"Darknet weights {files.weights} hold {weights.size} bytes, but {files.cfg.name} needs "
            f"{expected} ({params} parameters): the file is truncated or belongs to another .cfg"
        )
    if weights.size > expected:
        logger.warning(
            "Darknet weights %s hold %s bytes, %s more than %s needs: do they belong to it?",
            files.weights,
            weights.size,
            weights.size - expected,
            files.cfg.name,
        )


def _cuda_devices() -> int:
    try:
        return int(cv2.cuda.getCudaEnabledDeviceCount())
    except (AttributeError, cv2.error):
        return 0


def _select_device(net: cv2.dnn.Net, device: str) -> str:
    """Set the DNN backend and target for ``device``; return the device actually used."""
    index = cuda_index(device)
    if index is not None:
        count = _cuda_devices()
        if index < count:
            cv2.cuda.setDevice(index)
            net.setPreferableBackend(cv2.dnn.DNN_BACKEND_CUDA)
            net.setPreferableTarget(cv2.dnn.DNN_TARGET_CUDA)
            return device
        logger.warning(
            "device %s requested, but this OpenCV build sees %s CUDA device(s) (pip wheels have no CUDA); "
            "the opencv detector runs on the CPU",
            device,
            count,
        )
    net.setPreferableBackend(cv2.dnn.DNN_BACKEND_OPENCV)
    net.setPreferableTarget(cv2.dnn.DNN_TARGET_CPU)
    return "cpu"


class OpenCVDetector:
    """A Darknet YOLO model run by ``cv2.dnn``; see the module docstring."""

    def __init__(self, model: str, settings: DetectConfig) -> None:
        self.model = model
        self._settings = settings
        files = find_darknet_files(model)
        cv2.setNumThreads(settings.threads)
        self._net = _read_net(files, settings.confidence)
        self.device = _select_device(self._net, settings.device)
        self._outputs = list(self._net.getUnconnectedOutLayersNames())
        size = settings.input_size
        # One forward pass checks the model end to end and pays OpenCV's first-run set-up cost now.
        try:
            rows = self._forward([np.zeros((size, size, 3), np.uint8)])
        except DetectorError as exc:
            raise ModelLoadError(f"model {model} loads but cannot run: {exc}") from exc
        classes = rows.shape[2] - _ROW_HEAD
        if files.names is None:
            logger.warning("no .names file beside %s: classes are named by their index", files.cfg)
            self.names: tuple[str, ...] = tuple(str(i) for i in range(classes))
        else:
            self.names = read_names(files.names)
            if len(self.names) != classes:
                raise ModelLoadError(
                    f"{files.names} lists {len(self.names)} class names but {files.cfg.name} predicts {classes} classes"
                )
        ids = class_ids(self.names, settings.classes, model)
        self._wanted = None if ids is None else np.asarray(ids)
        logger.info(
            "opencv detector ready: %s (%s classes) at %s px on %s, %s thread(s)",
            files.cfg,
            classes,
            size,
            self.device,
            settings.threads,
        )

    def detect(self, images: Sequence[np.ndarray]) -> list[list[Box]]:
        """Boxes per image; images go through the network ``settings.batch`` at a time."""
        check_images(images)
        results: list[list[Box]] = []
        for batch in chunks(images, self._settings.batch):
            rows = self._forward(batch)
            for image, image_rows in zip(batch, rows, strict=True):
                height, width = image.shape[:2]
                results.append(self._boxes(image_rows, width, height))
        return results

    def _forward(self, images: Sequence[np.ndarray]) -> np.ndarray:
        """Raw YOLO rows, shape ``(len(images), rows, 5 + classes)``."""
        size = self._settings.input_size
        blob = cv2.dnn.blobFromImages(list(images), _SCALE, (size, size), swapRB=True, crop=False)
        try:
            self._net.setInput(blob)
            outputs = self._net.forward(self._outputs)
        except cv2.error as exc:
            raise DetectorError(f"OpenCV forward pass of {self.model} failed: {exc}") from exc
        # A batch of one comes back as (rows, 5 + classes) per output layer, larger batches as
        # (batch, rows, 5 + classes): reshape both to the latter.
        return np.concatenate([out.reshape(len(images), -1, out.shape[-1]) for out in outputs], axis=1)

    def _boxes(self, rows: np.ndarray, width: int, height: int) -> list[Box]:
        scores = rows[:, _ROW_HEAD:]
        class_id = scores.argmax(axis=1)
        confidence = scores[np.arange(len(rows)), class_id]
        keep = (confidence >= self._settings.confidence) & (confidence > 0)
        if self._wanted is not None:
            keep &= np.isin(class_id, self._wanted)
        if not keep.any():
            return []
        rows, class_id, confidence = rows[keep], class_id[keep], confidence[keep]
        # Centre and size are fractions of the (plainly resized) input, so of the image too.
        x1 = rows[:, 0] - rows[:, 2] / 2
        y1 = rows[:, 1] - rows[:, 3] / 2
        x2 = rows[:, 0] + rows[:, 2] / 2
        y2 = rows[:, 1] + rows[:, 3] / 2
        # Suppression runs in image pixels so that IoU is judged on the image's real aspect ratio.
        pixels = np.stack([x1 * width, y1 * height, rows[:, 2] * width, rows[:, 3] * height], axis=1)
        kept = cv2.dnn.NMSBoxesBatched(
            pixels.astype(np.float64).tolist(),
            confidence.astype(np.float64).tolist(),
            class_id.astype(np.int64).tolist(),
            0.0,
            self._settings.nms,
        )
        boxes = []
        for i in sorted(np.asarray(kept, dtype=np.int64).reshape(-1), key=lambda j: -confidence[j]):
            box = make_box(
                self.names[class_id[i]],
                float(confidence[i]),
                float(x1[i]),
                float(y1[i]),
                float(x2[i]),
                float(y2[i]),
            )
            if box is not None:
                boxes.append(box)
        return boxes
