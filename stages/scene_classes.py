"""Whether the object classes a config's cameras name (zones, lines, crowd thresholds, masks, object
filters) are ones its detector reports. A zone of ``people`` under a COCO model (whose class is
``person``) would never fire, and nothing else would say so. ``run.py check`` and the start of
``run`` refuse such a class when the model's class names can be read without loading it (a Darknet
model on disk, or a catalogue one already fetched); detect warns of it once its model is loaded,
whatever the model."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from pathlib import Path

from pipeline import catalogue
from pipeline.config import DetectConfig, VigilConfig


def scene_classes(config: VigilConfig) -> list[tuple[str, str]]:
    """``(field, class)`` for every class a camera's zones, lines, count thresholds, masks and object
    filters name."""
    named = []
    for camera_id, camera in config.cameras.items():
        prefix = f"cameras.{camera_id}"
        for zone_name, zone in camera.zones.items():
            named += [(f"{prefix}.zones.{zone_name}.classes", name) for name in zone.classes]
        for line_name, line in camera.lines.items():
            named += [(f"{prefix}.lines.{line_name}.classes", name) for name in line.classes]
        named += [(f"{prefix}.count_threshold.{name}", name) for name in camera.count_threshold]
        for mask_name, mask in camera.masks.items():
            named += [(f"{prefix}.masks.{mask_name}.classes", name) for name in mask.classes]
        named += [(f"{prefix}.objects.{name}", name) for name in camera.objects]
    return named


# what people write for a COCO class
ALIASES = {
    "people": "person",
    "human": "person",
    "humans": "person",
    "pedestrian": "person",
    "man": "person",
    "woman": "person",
    "vehicle": "car",
    "automobile": "car",
    "bike": "bicycle",
    "motorbike": "motorcycle",
}


def suggestion(name: str, names: Sequence[str]) -> str | None:
    """The class of ``names`` that ``name`` most likely meant: an everyday word for it, a plural or
    another case of it, or a close spelling; None when nothing is close."""
    lowered = {known.lower(): known for known in names}
    word = name.lower()
    for singular in (word, word.removesuffix("s"), word.removesuffix("es")):
        for guess in (singular, ALIASES.get(singular)):
            if guess and guess in lowered:
                return lowered[guess]
    close = difflib.get_close_matches(name, list(names), n=1, cutoff=0.75)
    return close[0] if close else None


def not_a_class(name: str, names: Sequence[str], model: str) -> str:
    """``'people' is not a class of model M (did you mean 'person'?)``."""
    meant = suggestion(name, names)
    return f"{name!r} is not a class of model {model}" + (f" (did you mean {meant!r}?)" if meant else "")


def class_problems(config: VigilConfig, names: Sequence[str], model: str) -> list[tuple[str, str]]:
    """``(field, problem)`` for each class of ``stages.detect.classes`` that the model (whose classes
    are ``names``) does not have, and each watched class the detector never reports."""
    kept = config.stages.detect.classes
    problems = []
    for name in kept or ():
        if name not in names:
            problems.append(("stages.detect.classes", not_a_class(name, names, model)))
    for field, name in scene_classes(config):
        if name not in names:
            problems.append((field, f"{not_a_class(name, names, model)}: it would never be seen"))
        elif kept is not None and name not in kept:
            problems.append((field, f"{name!r} is never detected: stages.detect.classes keeps only {', '.join(kept)}"))
    return problems


def names_without_loading(settings: DetectConfig) -> tuple[str, ...] | None:
    """The class names of the detector's model when they can be read from a file without loading or
    fetching anything: a Darknet model's ``.names`` (a local one, or a catalogue one already in the
    cache); None otherwise (other backends, a model not fetched yet, no names file)."""
    from stages.detectors.base import DetectorError
    from stages.detectors.opencv_dnn import find_darknet_files, read_names

    if settings.backend != "opencv":
        return None
    model = settings.model
    entry = catalogue.get_entry(model)
    if entry is not None:
        model = str(catalogue.cache_dir() / entry.name)
    if not Path(model).expanduser().exists():
        return None
    try:
        names_file = find_darknet_files(model).names
        return read_names(names_file) if names_file is not None else None
    except (DetectorError, OSError):
        return None
