"""The alert snapshot: the analysed frame with zones, lines and boxes (with their track ids) drawn, as
a size-bounded JPEG."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence

import cv2
import numpy as np

from pipeline.config import LineConfig
from pipeline.messages import Box
from stages.fusion.tracking import Tracked

BOX_COLOUR = (0, 0, 255)
ZONE_COLOUR = (0, 200, 255)
LINE_COLOUR = (255, 0, 255)
DISARMED_COLOUR = (170, 170, 170)  # a zone or line outside its armed hours: drawn, named '(off)'
OUTLINE_COLOUR = (40, 40, 40)  # ...on a dark edge
CAPTION_COLOUR = (255, 255, 255)
MASK_COLOUR = (90, 60, 20)  # a mask (objects there ignored): darkened, outlined, named '(mask)'
MASK_SHADE = 0.45  # how much of the mask's picture the shade covers

Shapes = Mapping[str, Sequence[tuple[float, float]]]
ARROW_PX = 24  # a one-way line's arrow, from its middle the way crossings count
HEADINGS = {"down": (0, 1), "up": (0, -1), "left": (-1, 0), "right": (1, 0)}


def draw(
    image: np.ndarray,
    boxes: Iterable[Box | Tracked],
    zones: Shapes,
    lines: Mapping[str, LineConfig] | None = None,
    disarmed: Collection[tuple[str, str]] = (),
    masks: Shapes | None = None,
    ignored: Iterable[tuple[Box, str]] = (),
) -> np.ndarray:
    """``image`` with ``masks`` shaded, ``zones``, ``lines`` (grey those in ``disarmed``, as
    ``("zone", name)`` or ``("line", name)``: outside their armed hours), ``boxes`` drawn, and the
    ``ignored`` boxes thin and grey with why (a mask, an object filter)."""
    canvas = image.copy()
    height, width = canvas.shape[:2]
    for name, polygon in (masks or {}).items():
        points = np.array([[x * width, y * height] for x, y in polygon], dtype=np.int32)
        shade = canvas.copy()
        cv2.fillPoly(shade, [points], MASK_COLOUR)
        cv2.addWeighted(shade, MASK_SHADE, canvas, 1 - MASK_SHADE, 0, dst=canvas)
        cv2.polylines(canvas, [points], isClosed=True, color=MASK_COLOUR, thickness=2)
        label = f"{name} (mask)"
        cv2.putText(canvas, label, tuple(points[0]), cv2.FONT_HERSHEY_SIMPLEX, 0.5, OUTLINE_COLOUR, 3, cv2.LINE_AA)
        cv2.putText(canvas, label, tuple(points[0]), cv2.FONT_HERSHEY_SIMPLEX, 0.5, CAPTION_COLOUR, 1, cv2.LINE_AA)
    shapes = [("zone", name, zone, ZONE_COLOUR) for name, zone in zones.items()]
    shapes += [("line", name, line.points, LINE_COLOUR) for name, line in (lines or {}).items()]
    for kind, name, polygon, colour in shapes:
        off = (kind, name) in disarmed
        colour, label = (DISARMED_COLOUR, f"{name} (off)") if off else (colour, name)
        points = np.array([[x * width, y * height] for x, y in polygon], dtype=np.int32)
        closed = len(points) > 2
        if off:  # grey on a dark edge: legible on pale pavement and on grass alike
            cv2.polylines(canvas, [points], isClosed=closed, color=OUTLINE_COLOUR, thickness=4)
            cv2.putText(canvas, label, tuple(points[0]), cv2.FONT_HERSHEY_SIMPLEX, 0.5, OUTLINE_COLOUR, 3, cv2.LINE_AA)
        cv2.polylines(canvas, [points], isClosed=closed, color=colour, thickness=2)
        cv2.putText(canvas, label, tuple(points[0]), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1, cv2.LINE_AA)
    for name, line in (lines or {}).items():
        if line.direction in HEADINGS and ("line", name) not in disarmed:
            (x1, y1), (x2, y2) = line.points
            middle = (int((x1 + x2) / 2 * width), int((y1 + y2) / 2 * height))
            dx, dy = HEADINGS[line.direction]
            tip = (middle[0] + dx * ARROW_PX, middle[1] + dy * ARROW_PX)
            cv2.arrowedLine(canvas, middle, tip, LINE_COLOUR, 2, cv2.LINE_AA, tipLength=0.35)
    for box, why in ignored:
        p1 = (int(box.x1 * width), int(box.y1 * height))
        p2 = (int(box.x2 * width), int(box.y2 * height))
        cv2.rectangle(canvas, p1, p2, DISARMED_COLOUR, 1)
        at = (p1[0], max(12, p1[1] - 4))
        cv2.putText(canvas, why, at, cv2.FONT_HERSHEY_SIMPLEX, 0.35, OUTLINE_COLOUR, 3, cv2.LINE_AA)
        cv2.putText(canvas, why, at, cv2.FONT_HERSHEY_SIMPLEX, 0.35, DISARMED_COLOUR, 1, cv2.LINE_AA)
    for item in boxes:
        box = item.box if isinstance(item, Tracked) else item
        p1 = (int(box.x1 * width), int(box.y1 * height))
        p2 = (int(box.x2 * width), int(box.y2 * height))
        cv2.rectangle(canvas, p1, p2, BOX_COLOUR, 2)
        track = f" #{item.track}" if isinstance(item, Tracked) else ""
        label = f"{box.label}{track} {box.confidence:.2f}"
        cv2.putText(canvas, label, (p1[0], max(12, p1[1] - 4)), cv2.FONT_HERSHEY_SIMPLEX, 0.45, BOX_COLOUR, 1)
    return canvas


def encode_jpeg(image: np.ndarray, max_bytes: int) -> bytes:
    """JPEG at the best quality (from 90 down) that fits ``max_bytes``; halves the size if needed."""
    while True:
        for quality in (90, 80, 70, 55, 40, 25):
            ok, buffer = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
            if ok and len(buffer) <= max_bytes:
                return buffer.tobytes()
        if image.shape[1] <= 64:
            return buffer.tobytes()
        image = cv2.resize(image, (image.shape[1] // 2, image.shape[0] // 2), interpolation=cv2.INTER_AREA)


def caption(image: np.ndarray, text: str) -> np.ndarray:
    """``image`` with ``text`` in its bottom left corner, white on a dark band: the camera and when,
    kept on the picture when it is forwarded without its alert."""
    height = image.shape[0]
    (text_width, text_height), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
    band_top = height - text_height - baseline - 8
    cv2.rectangle(image, (0, band_top), (text_width + 10, height), OUTLINE_COLOUR, thickness=-1)
    cv2.putText(image, text, (5, height - baseline - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.5, CAPTION_COLOUR, 1, cv2.LINE_AA)
    return image


def snapshot(
    image: np.ndarray,
    boxes: Iterable[Box | Tracked],
    zones: Shapes,
    max_bytes: int,
    lines: Mapping[str, LineConfig] | None = None,
    disarmed: Collection[tuple[str, str]] = (),
    text: str | None = None,
) -> bytes:
    """The alert's JPEG: ``draw``, with the ``text`` caption when given."""
    drawn = draw(image, boxes, zones, lines, disarmed)
    return encode_jpeg(caption(drawn, text) if text else drawn, max_bytes)
