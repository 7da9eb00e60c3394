"""Tests of the ultralytics detector with a YOLO11n built from its yaml (random weights).

No YOLO weights can be downloaded here, so these tests prove plumbing (batching, box conversion,
class filter, thread counts, errors), not accuracy.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from pipeline.config import DetectConfig
from pipeline.messages import Box
from stages.detectors.base import Detector, DetectorError, ModelLoadError, create_detector

# ultralytics is imported lazily (by the backend), never at collection: importing it changes
# OMP_NUM_THREADS for the whole process.

THREADS = 2


def settings(**changes: object) -> DetectConfig:
    base = {
        "backend": "ultralytics",
        "model": "yolo11n.yaml",
        "threads": THREADS,
        "batch": 2,
        "input_size": 320,
    }
    return DetectConfig.model_validate({**base, **changes})


@pytest.fixture(scope="module")
def omp_before() -> str | None:
    return os.environ.get("OMP_NUM_THREADS")


@pytest.fixture(scope="module")
def detector(omp_before) -> Detector:
    # Confidence 0 keeps the (low-scoring) boxes of random weights, so the conversion is exercised.
    return create_detector(settings(confidence=0.0))


@pytest.fixture(scope="module")
def images() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    shapes = [(576, 768, 3), (240, 320, 3), (500, 300, 3)]
    return [rng.integers(0, 256, shape, dtype=np.uint8) for shape in shapes]


def test_batch_of_three_with_batch_size_two_gives_three_lists(detector, images, omp_before):
    import torch

    results = detector.detect(images)

    assert len(results) == 3
    assert all(isinstance(boxes, list) for boxes in results)
    assert all(isinstance(box, Box) for boxes in results for box in boxes)
    assert torch.get_num_threads() == THREADS  # ultralytics' predict set it to its own default
    assert os.environ.get("OMP_NUM_THREADS") == omp_before  # import ultralytics set it to 1


def test_boxes_are_normalized_named_and_sorted(detector, images):
    results = detector.detect(images)

    assert len(detector.names) == 80
    assert any(results), "confidence 0 should keep some boxes even with random weights"
    for boxes in results:
        assert [b.confidence for b in boxes] == sorted((b.confidence for b in boxes), reverse=True)
        for box in boxes:
            assert 0 <= box.x1 < box.x2 <= 1 and 0 <= box.y1 < box.y2 <= 1
            assert box.label in detector.names
            assert isinstance(box.confidence, float) and 0 <= box.confidence <= 1


def test_empty_input_gives_empty_output(detector):
    assert detector.detect([]) == []


def test_class_filter_passes_class_ids_to_predict(detector, images):
    unfiltered = [box for boxes in detector.detect(images) for box in boxes]
    # Random weights score class "0" highest almost everywhere (deterministic initialisation).
    for wanted in (["0", "2"], ["1", "3"]):
        filtered = create_detector(settings(confidence=0.0, classes=wanted))

        boxes = [box for per_image in filtered.detect(images) for box in per_image]

        assert {box.label for box in boxes} <= set(wanted)
        assert len(boxes) == sum(1 for box in unfiltered if box.label in wanted)


def test_unknown_class_name_is_an_error(images):
    with pytest.raises(DetectorError, match=r"unknown class 'person' for model yolo11n\.yaml.*80 classes: 0, 1"):
        create_detector(settings(classes=["person"]))


def test_missing_model_path_names_the_path(tmp_path):
    missing = str(tmp_path / "weights" / "best.pt")

    with pytest.raises(ModelLoadError, match=r"weights/best\.pt") as excinfo:
        create_detector(settings(model=missing))

    assert isinstance(excinfo.value, FileNotFoundError)


def test_weights_that_cannot_be_downloaded_are_a_model_load_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # ultralytics would save a download in the working folder

    with pytest.raises(ModelLoadError, match=r"yolo11n-vigil-test\.pt"):
        create_detector(settings(model="yolo11n-vigil-test.pt"))


def test_cuda_device_that_torch_cannot_see_is_an_error():
    import torch

    if torch.cuda.device_count() > 3:
        pytest.skip("this machine has 4 or more CUDA devices")
    with pytest.raises(DetectorError, match="cuda:3"):
        create_detector(settings(device="cuda:3"))
