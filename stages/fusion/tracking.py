"""Object tracking for one camera: the boxes of successive analysed frames joined into tracks, so that
fuse can judge one object (how long *it* stayed in a zone, whether *it* crossed a line) rather than
whatever boxes a frame holds.

Association is greedy, per class, on the box each track is expected to be at (its last box moved by
its recent velocity): first by overlap (IoU), then, for what is left, by how far the centres are apart
in box heights, allowing more the longer a track has not been seen. Low analysis rates (a walking
person moves most of a body height between frames at 1 fps) are why overlap alone is not enough. A
track not seen for ``gap_s`` ends; a box that matches none starts a new track. Ids count up per camera
from 1 and are not reused while the tracker lives (fuse's process: a restarted fuse counts from 1 again)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from pipeline.messages import Box

MIN_IOU = 0.2  # overlap with the expected box that joins a box to a track at once
BASE_STEP = 0.6  # box heights a centre may be off the expected place, however soon it is seen again
STEP_PER_S = 1.5  # and this many more per second unseen (a brisk walk, seen from a few metres)
VELOCITY_ALPHA = 0.5  # weight of the newest displacement in a track's velocity
MIN_GAP_S = 1.0  # the least time a track survives unseen (detector flicker)
GAP_FRAMES = 3  # ...or this many analysis intervals, when those are longer
MAX_GAP_S = 10.0  # however far apart frames come: an object unseen this long is someone new
INTERVAL_ALPHA = 0.2  # weight of the newest interval between frames in their running average


def track_gap_s(analysis_fps: float) -> float:
    """How long a track survives unseen at ``analysis_fps``: a second, or three frames at low rates."""
    return max(MIN_GAP_S, GAP_FRAMES / analysis_fps)


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes (0 when they do not touch)."""
    width = min(a.x2, b.x2) - max(a.x1, b.x1)
    height = min(a.y2, b.y2) - max(a.y1, b.y1)
    if width <= 0 or height <= 0:
        return 0.0
    inter = width * height
    union = (a.x2 - a.x1) * (a.y2 - a.y1) + (b.x2 - b.x1) * (b.y2 - b.y1) - inter
    return inter / union if union > 0 else 0.0


def centre(box: Box) -> tuple[float, float]:
    return (box.x1 + box.x2) / 2, (box.y1 + box.y2) / 2


@dataclass(frozen=True)
class Tracked:
    """A box of the current frame and the id of the track it belongs to."""

    box: Box
    track: int


@dataclass
class Track:
    id: int
    label: str
    box: Box
    seen: float  # media time of its latest box
    velocity: tuple[float, float] = (0.0, 0.0)  # of its centre, image fractions per second

    def expected(self, pts: float) -> Box:
        """Its latest box moved by its velocity to media time ``pts``."""
        dt = max(0.0, pts - self.seen)
        dx, dy = self.velocity[0] * dt, self.velocity[1] * dt
        b = self.box
        return replace(b, x1=b.x1 + dx, y1=b.y1 + dy, x2=b.x2 + dx, y2=b.y2 + dy)

    def move_to(self, box: Box, pts: float) -> None:
        dt = pts - self.seen
        if dt > 0:
            (ox, oy), (nx, ny) = centre(self.box), centre(box)
            vx, vy = (nx - ox) / dt, (ny - oy) / dt
            a = VELOCITY_ALPHA
            self.velocity = (a * vx + (1 - a) * self.velocity[0], a * vy + (1 - a) * self.velocity[1])
        self.box = box
        self.seen = pts


@dataclass
class ObjectTracker:
    """The tracks of one camera, fed its frames' boxes in media-time order."""

    gap_s: float = MIN_GAP_S
    tracks: list[Track] = field(default_factory=list)
    next_id: int = 1
    last_pts: float | None = None
    interval_s: float | None = None  # running average of the time between this camera's analysed frames

    @property
    def survives_s(self) -> float:
        """How long a track survives unseen: ``gap_s``, or three of the intervals at which frames
        really come (a live detector shared by many cameras analyses each less often than its fps)."""
        return min(MAX_GAP_S, max(self.gap_s, GAP_FRAMES * (self.interval_s or 0.0)))

    def update(self, pts: float, boxes: Sequence[Box]) -> list[Tracked]:
        """The frame's boxes (in their order), each with its track."""
        if self.last_pts is not None and pts > self.last_pts:
            step = pts - self.last_pts
            average = self.interval_s
            self.interval_s = step if average is None else average + INTERVAL_ALPHA * (step - average)
        self.last_pts = pts
        self.tracks = [t for t in self.tracks if pts - t.seen <= self.survives_s]
        match = self._associate(pts, boxes)
        out = []
        for index, box in enumerate(boxes):
            track = match.get(index)
            if track is None:
                track = Track(self.next_id, box.label, box, seen=pts)
                self.next_id += 1
                self.tracks.append(track)
            else:
                track.move_to(box, pts)
            out.append(Tracked(box, track.id))
        return out

    def _associate(self, pts: float, boxes: Sequence[Box]) -> dict[int, Track]:
        """Box index -> the track it continues: best overlaps first, then nearest centres (each
        list in order of its measure, then of box index, then of track age). Every box is measured
        against every track at once (numpy): a crowd of 60 is 3600 pairs a frame."""
        if not boxes or not self.tracks:
            return {}
        tracks = self.tracks
        found = np.array([(b.x1, b.y1, b.x2, b.y2) for b in boxes])
        guesses = [t.expected(pts) for t in tracks]
        expected = np.array([(g.x1, g.y1, g.x2, g.y2) for g in guesses])
        same_class = np.array([b.label for b in boxes])[:, None] == np.array([t.label for t in tracks])[None, :]
        fx1, fy1, fx2, fy2 = (found[:, i, None] for i in range(4))
        ex1, ey1, ex2, ey2 = (expected[None, :, i] for i in range(4))
        width = np.minimum(fx2, ex2) - np.maximum(fx1, ex1)
        height = np.minimum(fy2, ey2) - np.maximum(fy1, ey1)
        inter = np.where((width > 0) & (height > 0), width * height, 0.0)
        union = (fx2 - fx1) * (fy2 - fy1) + (ex2 - ex1) * (ey2 - ey1) - inter
        overlap = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        heights = np.array([max(t.box.y2 - t.box.y1, 1e-6) for t in tracks])[None, :]
        steps = np.hypot((fx1 + fx2) / 2 - (ex1 + ex2) / 2, (fy1 + fy2) / 2 - (ey1 + ey2) / 2) / heights
        reach = BASE_STEP + STEP_PER_S * np.maximum(0.0, pts - np.array([t.seen for t in tracks]))[None, :]
        match: dict[int, Track] = {}
        taken: set[int] = set()
        for measure, allowed in ((-overlap, same_class & (overlap >= MIN_IOU)), (steps, same_class & (steps <= reach))):
            index, position = np.nonzero(allowed)  # in box order, then track order
            order = np.lexsort((position, index, measure[index, position]))
            for i, p in zip(index[order].tolist(), position[order].tolist(), strict=True):
                if i not in match and p not in taken:
                    match[i] = tracks[p]
                    taken.add(p)
        return match
