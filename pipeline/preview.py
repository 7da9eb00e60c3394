"""``run.py preview``: one frame of each camera, as vigil analyses it, with the config's zones and lines
drawn on it and a grid of normalized coordinates, so zones and tripwires can be placed by eye (their
points are fractions of the picture, 0..1, which nobody can guess)."""

from __future__ import annotations

import argparse
import sys
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from pipeline.commands import EXIT_USAGE, load_or_report
from pipeline.config import CameraConfig, DecodeConfig, VigilConfig, redact
from pipeline.messages import Box
from pipeline.schedule import SceneClock, armed_at, parse_schedule

if TYPE_CHECKING:
    from stages.detectors.base import Detector


GRID_COLOUR = (200, 200, 200)
GRID_STEP = 0.1


def grab_frame(camera: CameraConfig, decode: DecodeConfig, at_s: float) -> np.ndarray:
    """The first analysis frame (BGR, at the camera's analysis width) at or after media time ``at_s``
    (a live camera: its first frame). Raises ``stages.media.MediaError`` when the source cannot be
    read, ValueError when it ends before ``at_s``."""
    from stages.media import open_camera
    from stages.sampling import VideoSample, sample_media

    with open_camera(camera, decode) as media:
        video = media.container.streams.video[0]
        if at_s > 0 and "://" not in camera.source and video.time_base is not None:
            media.container.seek(int((media.origin + at_s) / video.time_base), stream=video, backward=True)
        last_pts = None
        for sample in sample_media(media, video, None, camera.analysis, 0.5):
            if isinstance(sample, VideoSample):
                last_pts = sample.pts
                if sample.pts >= at_s - 1e-6 or "://" in camera.source:
                    return sample.image
    ended = f"it ends at {last_pts:.1f} s" if last_pts is not None else "it has no frames"
    raise ValueError(f"{redact(camera.source)}: no frame at {at_s:.1f} s ({ended})")


def draw_grid(image: np.ndarray) -> np.ndarray:
    """``image`` with thin lines every tenth of its width and height, labelled 0.1 .. 0.9."""
    canvas = image.copy()
    height, width = canvas.shape[:2]
    for i in range(1, round(1 / GRID_STEP)):
        fraction = i * GRID_STEP
        x, y = round(fraction * width), round(fraction * height)
        cv2.line(canvas, (x, 0), (x, height - 1), GRID_COLOUR, 1)
        cv2.line(canvas, (0, y), (width - 1, y), GRID_COLOUR, 1)
        label = f"{fraction:.1f}"
        cv2.putText(canvas, label, (x + 2, 12), cv2.FONT_HERSHEY_SIMPLEX, 0.35, GRID_COLOUR, 1, cv2.LINE_AA)
        cv2.putText(canvas, label, (2, y - 3), cv2.FONT_HERSHEY_SIMPLEX, 0.35, GRID_COLOUR, 1, cv2.LINE_AA)
    return canvas


def preview_image(
    camera: CameraConfig, frame: np.ndarray, boxes: Sequence[Box] = (), moment: datetime | None = None
) -> np.ndarray:
    """The frame with the grid, the camera's masks shaded, its zones, its lines (one-way ones with
    their arrow; grey those not armed at ``moment``, the camera's clock time then) and ``boxes`` (what
    the detector found in it, when asked): those the masks and object filters ignore thin and grey,
    with why."""
    from stages.fusion.snapshot import draw

    zones = {name: zone.polygon for name, zone in camera.zones.items()}
    schedules = [("zone", name, zone.armed) for name, zone in camera.zones.items()]
    schedules += [("line", name, line.armed) for name, line in camera.lines.items()]
    disarmed = {
        (kind, name) for kind, name, armed in schedules if moment and not armed_at(parse_schedule(armed), moment)
    }
    masks = {name: mask.polygon for name, mask in camera.masks.items()}
    counted, ignored = judged(camera, boxes)
    return draw(draw_grid(frame), counted, zones, camera.lines, disarmed, masks, ignored)


def write_previews(
    config: VigilConfig, cameras: list[str], out: Path, at_s: float, detector: Detector | None = None
) -> list[str]:
    """One ``<out>/<camera>.jpg`` per camera (with ``detector``'s boxes when given); returns the
    problems of the cameras that could not be read."""
    from stages.media import MediaError

    def grab(camera_id: str) -> np.ndarray | str:
        try:
            return grab_frame(config.cameras[camera_id], config.stages.decode, at_s)
        except (MediaError, ValueError) as exc:
            return str(exc)

    out.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=min(8, len(cameras))) as pool:  # unreachable cameras time out side by side
        grabbed = dict(zip(cameras, pool.map(grab, cameras), strict=True))
    problems = []
    for camera_id, frame in grabbed.items():
        camera = config.cameras[camera_id]
        if isinstance(frame, str):
            problems.append(f"camera {camera_id}: {frame}")
            continue
        path = out / f"{camera_id}.jpg"
        found_boxes = detector.detect([frame])[0] if detector is not None else []
        boxes, ignored_boxes = judged(camera, found_boxes)
        moment = SceneClock.of(config.runtime.timezone, camera.recording_started).at(at_s, time.time())
        image = preview_image(camera, frame, found_boxes, moment)
        cv2.imwrite(str(path), image, [cv2.IMWRITE_JPEG_QUALITY, 90])
        height, width = frame.shape[:2]
        found = f", {found_text(boxes)}" if detector is not None else ""
        found += f" ({len(ignored_boxes)} more ignored by its masks and object filters)" if ignored_boxes else ""
        print(
            f"{camera_id}: {path} ({width}x{height}, {len(camera.zones)} zone(s), {len(camera.lines)} line(s){found}); "
            "coordinates are fractions of the picture: [x, y] with x to the right and y down"
        )
    return problems


def judged(camera: CameraConfig, boxes: Sequence[Box]) -> tuple[list[Box], list[tuple[Box, str]]]:
    """The boxes the camera's masks and object filters let through, as fuse counts them, and the
    others with why they are ignored."""
    from stages.fusion.filters import DetectionFilter

    judge = DetectionFilter.of(camera)
    verdicts = [(box, judge.why_ignored(box)) for box in boxes]
    return [box for box, why in verdicts if why is None], [(box, why) for box, why in verdicts if why is not None]


def found_text(boxes: Sequence[Box]) -> str:
    """``detected 3 person, 1 car`` (or ``detected nothing``)."""
    counts = Counter(box.label for box in boxes)
    return "detected " + (", ".join(f"{n} {label}" for label, n in counts.most_common()) or "nothing")


def cmd_preview(args: argparse.Namespace) -> int:
    config = load_or_report(args.config)
    if config is None:
        return EXIT_USAGE
    unknown = [camera for camera in args.camera or [] if camera not in config.cameras]
    if unknown:
        print(
            f"error: no camera {', '.join(map(repr, unknown))} in {args.config} (it has: {', '.join(config.cameras)})",
            file=sys.stderr,
        )
        return EXIT_USAGE
    detector = None
    if args.detect:
        from stages.detectors.base import DetectorError, create_detector

        try:
            detector = create_detector(config.stages.detect)  # on its device, as detect loads it
        except DetectorError as exc:
            print(f"error: stages.detect: {exc}", file=sys.stderr)
            return 1
    problems = write_previews(config, args.camera or list(config.cameras), Path(args.out), args.at, detector)
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    return 1 if problems else 0
