"""The classes a config watches for, against the classes its detector reports."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import VigilConfig
from stages.scene_classes import class_problems, names_without_loading, scene_classes, suggestion

COCO_SOME = ("person", "bicycle", "car", "motorcycle", "dog")


def site(detect: dict[str, object] | None = None) -> VigilConfig:
    camera = {
        "source": "x.mp4",
        "zones": {"door": {"polygon": [[0, 0], [1, 0], [1, 1]], "classes": ["person", "dog"]}},
        "lines": {"gate": {"points": [[0, 0.5], [1, 0.5]], "classes": ["car"]}},
        "count_threshold": {"person": 5},
    }
    return VigilConfig.model_validate({"cameras": {"yard": camera}, "stages": {"detect": detect or {}}})


def test_every_watched_class_is_listed_with_its_setting():
    assert scene_classes(site()) == [
        ("cameras.yard.zones.door.classes", "person"),
        ("cameras.yard.zones.door.classes", "dog"),
        ("cameras.yard.lines.gate.classes", "car"),
        ("cameras.yard.count_threshold.person", "person"),
    ]


def test_the_classes_masks_and_object_filters_name_are_judged_too():
    camera = {
        "source": "x.mp4",
        "masks": {"tv": {"polygon": [[0, 0], [0.2, 0], [0.2, 0.2]], "classes": ["people"]}},
        "objects": {"motorcycle": {"min_area": 0.01}, "bikes": {"min_confidence": 0.5}},
    }
    config = VigilConfig.model_validate({"cameras": {"yard": camera}})
    assert class_problems(config, COCO_SOME, "m") == [
        (
            "cameras.yard.masks.tv.classes",
            "'people' is not a class of model m (did you mean 'person'?): it would never be seen",
        ),
        (
            "cameras.yard.objects.bikes",
            "'bikes' is not a class of model m (did you mean 'bicycle'?): it would never be seen",
        ),
    ]


@pytest.mark.parametrize(
    ("written", "meant"),
    [
        ("people", "person"),
        ("Persons", "person"),
        ("cars", "car"),
        ("bikes", "bicycle"),
        ("motorbike", "motorcycle"),
        ("bicycel", "bicycle"),
        ("apple", None),
    ],
)
def test_what_a_user_meant_is_suggested(written: str, meant: str | None) -> None:
    assert suggestion(written, COCO_SOME) == meant


def test_classes_the_model_has_and_the_detector_keeps_pass():
    assert class_problems(site(), COCO_SOME, "m") == []
    assert class_problems(site({"classes": ["person", "dog", "car"]}), COCO_SOME, "m") == []


def test_a_class_the_detector_filters_out_is_named_with_what_it_keeps():
    assert class_problems(site({"classes": ["person", "dog"]}), COCO_SOME, "m") == [
        ("cameras.yard.lines.gate.classes", "'car' is never detected: stages.detect.classes keeps only person, dog")
    ]


def test_a_model_with_numbered_classes_reports_every_named_one():
    numbered = tuple(str(i) for i in range(80))  # a model built from a yaml, as the GPU bench uses
    problems = class_problems(site(), numbered, "yolo11n.yaml")
    assert len(problems) == 4
    assert problems[0] == (
        "cameras.yard.zones.door.classes",
        "'person' is not a class of model yolo11n.yaml: it would never be seen",
    )


def test_names_are_read_from_a_cached_darknet_model_without_loading_it():
    names = names_without_loading(site().stages.detect)  # the shipped catalogue model, fetched for the tests
    assert names is not None and len(names) == 80 and names[0] == "person"


def test_names_are_not_guessed_where_reading_them_needs_a_load_or_a_fetch(tmp_path, monkeypatch):
    assert names_without_loading(site({"backend": "ultralytics", "model": "yolo11n.yaml"}).stages.detect) is None
    assert names_without_loading(site({"model": str(tmp_path / "missing.cfg")}).stages.detect) is None
    monkeypatch.setenv("VIGIL_CACHE_DIR", str(tmp_path / "empty-cache"))
    assert names_without_loading(site().stages.detect) is None  # not fetched yet: nothing is downloaded here
    assert not (tmp_path / "empty-cache").exists()


def test_a_local_darknet_folder_gives_its_names_file(tmp_path: Path):
    (tmp_path / "tiny.cfg").write_text("[net]\n")
    (tmp_path / "tiny.weights").write_bytes(b"\0")
    (tmp_path / "tiny.names").write_text("forklift\npallet\n\n")
    assert names_without_loading(site({"model": str(tmp_path)}).stages.detect) == ("forklift", "pallet")
