"""Tripwires: a tracked object whose bottom centre crosses a camera's line raises the ``line`` signal
for ``crossing_hold_s``. A crossing's direction is said in picture terms: a line across the picture is
crossed going down or up, one running up it going left or right, a slanted one both ways at once
(``down`` and ``right``, say), and a line set to one direction counts only crossings that go that way.

Each track's side of the line is settled only when its bottom centre is at least ``SIDE_MARGIN``
from the line, so a person standing on it (whose box wobbles by a few pixels) does not cross it back
and forth; a crossing is a change of settled side whose path passes between the line's two ends."""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from pipeline.config import MIN_AXIS_SHARE, CameraConfig, LineConfig
from pipeline.schedule import ArmedWindow, armed_at, media_seconds, parse_schedule
from stages.fusion.signals import SignalReading
from stages.fusion.tracking import Tracked

SIDE_MARGIN = 0.01  # image fractions (about 6 px at 640 px) an anchor must be off the line to be on a side
FORGET_SIDE_S = 10.0  # a track unseen this long has ended: its side is forgotten

Point = tuple[float, float]


def side_of(point: Point, start: Point, end: Point) -> float:
    """Signed distance of ``point`` from the line through ``start`` and ``end``: positive on its right
    as seen walking from ``start`` to ``end`` in the picture (y down), negative on its left."""
    (ax, ay), (bx, by), (px, py) = start, end, point
    length = ((bx - ax) ** 2 + (by - ay) ** 2) ** 0.5
    return ((bx - ax) * (py - ay) - (by - ay) * (px - ax)) / length


def directions(onto_right: bool, start: Point, end: Point) -> list[str]:
    """The picture directions of a crossing onto the right side of the line (``onto_right``) or onto
    its left: the main one first, then the other where the line is slanted enough to have both."""
    (ax, ay), (bx, by) = start, end
    length = ((bx - ax) ** 2 + (by - ay) ** 2) ** 0.5
    sign = 1.0 if onto_right else -1.0
    nx, ny = sign * -(by - ay) / length, sign * (bx - ax) / length  # the way the crossing went
    vertical = ("down" if ny > 0 else "up", abs(ny))
    horizontal = ("right" if nx > 0 else "left", abs(nx))
    ranked = sorted((vertical, horizontal), key=lambda named: -named[1])
    return [name for name, share in ranked if share >= MIN_AXIS_SHARE]


def passes_between(p0: Point, p1: Point, start: Point, end: Point) -> bool:
    """Whether the path ``p0`` -> ``p1`` (on two sides of the line) meets it between its two ends."""
    d0, d1 = side_of(p0, start, end), side_of(p1, start, end)
    if d0 == d1:
        return False
    t = d0 / (d0 - d1)  # where along the path it meets the line
    x, y = p0[0] + t * (p1[0] - p0[0]), p0[1] + t * (p1[1] - p0[1])
    (ax, ay), (bx, by) = start, end
    along = ((x - ax) * (bx - ax) + (y - ay) * (by - ay)) / ((bx - ax) ** 2 + (by - ay) ** 2)
    return 0.0 <= along <= 1.0


@dataclass(frozen=True)
class Crossing:
    line: str
    track: int
    label: str
    direction: str  # down | up | left | right: the way the crossing went (the line's own when it has one)
    time: float  # media time of the first frame on the new side


@dataclass
class LineWatch:
    """One line of one camera: each track's settled side, and the crossings that count (all of them in
    ``counted``; in ``crossings``, which raise the signal, those made while the line was armed)."""

    name: str
    line: LineConfig
    hold_s: float  # how long a crossing keeps the signal raised (stages.fuse.crossing_hold_s)
    sides: dict[int, tuple[float, Point, float]] = field(default_factory=dict)  # track -> sign, anchor, when
    crossings: deque[Crossing] = field(default_factory=deque)
    counted: Counter[str] = field(default_factory=Counter)  # every crossing that counted, by direction
    schedule: tuple[ArmedWindow, ...] = field(init=False)

    def __post_init__(self) -> None:
        self.schedule = parse_schedule(self.line.armed)

    def update(self, pts: float, tracked: Sequence[Tracked], moment: datetime | None = None) -> None:
        """The frame at ``pts`` (the camera's clock showing ``moment``; None: armed): each tracked
        object's side, and the crossings that count."""
        armed = moment is None or armed_at(self.schedule, moment)
        start, end = self.line.points[0], self.line.points[1]
        for item in tracked:
            if item.box.label not in self.line.classes:
                continue
            anchor = item.box.anchor
            distance = side_of(anchor, start, end)
            if abs(distance) < SIDE_MARGIN:
                continue  # on the line: its side is not settled yet
            sign = 1.0 if distance > 0 else -1.0
            before = self.sides.get(item.track)
            self.sides[item.track] = (sign, anchor, pts)
            if before is None or before[0] == sign or not passes_between(before[1], anchor, start, end):
                continue
            went = directions(sign > 0, start, end)
            wanted = self.line.direction
            if wanted == "both" or wanted in went:
                direction = went[0] if wanted == "both" else wanted
                if armed:
                    self.crossings.append(Crossing(self.name, item.track, item.box.label, direction, pts))
                self.counted[direction] += 1
        while self.crossings and self.crossings[0].time <= pts - self.hold_s:
            self.crossings.popleft()
        self.sides = {track: side for track, side in self.sides.items() if pts - side[2] <= FORGET_SIDE_S}


def line_watches(camera: CameraConfig, hold_s: float) -> list[LineWatch]:
    return [LineWatch(name, line, hold_s) for name, line in camera.lines.items()]


def line_reading(
    watches: Sequence[LineWatch],
    pts: float,
    tracked: Sequence[Tracked],
    moment: datetime | None = None,
    when: Callable[[float], str] = media_seconds,
) -> SignalReading:
    """The ``line`` signal at ``pts``: 1 while a crossing of each watch's last ``hold_s`` counts
    (``moment``: the camera's clock time, which armed schedules are judged by; ``when`` names a media
    time in the reason)."""
    recent: list[Crossing] = []
    for watch in watches:
        watch.update(pts, tracked, moment)
        recent.extend(c for c in watch.crossings if c.time <= pts)
    evidence = [
        {"line": c.line, "track": c.track, "label": c.label, "direction": c.direction, "time": round(c.time, 2)}
        for c in recent
    ]
    reason = "; ".join(
        f"{c.label} #{c.track} crossed line '{c.line}' going {c.direction} at {when(c.time)}" for c in recent
    )
    return SignalReading("line", 1.0 if recent else 0.0, {"crossings": evidence}, reason)
