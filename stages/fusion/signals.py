"""The signals fuse turns into a score: zone intrusion (with dwell), object count, spoken keywords,
loudness spikes (line crossings: ``stages.fusion.lines``). Each tracker is per camera and is fed in media-time order."""

from __future__ import annotations

import math
import re
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from pipeline.config import CameraConfig, ZoneConfig
from pipeline.messages import AudioLevel, Box, Segment
from pipeline.schedule import ArmedWindow, armed_at, media_seconds, parse_schedule
from stages.fusion.tracking import Tracked

ZONE_GAP_S = 1.0  # a zone emptied for less than this (detector flicker) keeps its dwell clock
LOUDNESS_HOLD_S = 1.0
LOUDNESS_WARMUP = 4  # levels seen before a spike can be judged against the baseline
BASELINE_ALPHA = 0.05
_WORD = re.compile(r"[a-z0-9']+")


def point_in_polygon(point: tuple[float, float], polygon: Sequence[tuple[float, float]]) -> bool:
    """Even-odd ray casting; points on the edge may fall either way."""
    x, y = point
    inside = False
    j = len(polygon) - 1
    for i, (xi, yi) in enumerate(polygon):
        xj, yj = polygon[j]
        if (yi > y) != (yj > y) and x < (xj - xi) * (y - yi) / (yj - yi) + xi:
            inside = not inside
        j = i
    return inside


@dataclass(frozen=True)
class SignalReading:
    """One signal at one media time: ``value`` in 0..1 and what supports it."""

    name: str
    value: float
    evidence: dict[str, object]
    reason: str


@dataclass
class ZoneTracker:
    """One zone of one camera. Its dwell is how long it has held objects of its classes without a
    break (``dwell_of: zone``), or, per tracked object, how long that object has stayed in it
    (``dwell_of: object``); a gap shorter than ``gap_s`` (detector flicker: ``ZONE_GAP_S``, or longer
    where the camera's frames come further apart) is no break. Dwell is timed whether or not the zone
    is armed (someone who came at 21:50 has loitered 10 minutes when the zone arms at 22:00)."""

    name: str
    zone: ZoneConfig
    since: float | None = None
    last_seen: float | None = None
    stays: dict[int, tuple[float, float]] = field(default_factory=dict)  # track -> (since, last seen) inside
    schedule: tuple[ArmedWindow, ...] = field(init=False)

    def __post_init__(self) -> None:
        self.schedule = parse_schedule(self.zone.armed)

    def update(self, pts: float, tracked: Iterable[Tracked], gap_s: float = ZONE_GAP_S) -> tuple[list[Tracked], float]:
        """The objects inside the zone now, and the zone's dwell (see the class)."""
        inside = [
            t for t in tracked if t.box.label in self.zone.classes and point_in_polygon(t.box.anchor, self.zone.polygon)
        ]
        if inside:
            if self.since is None or self.last_seen is None or pts - self.last_seen > gap_s:
                self.since = pts
            self.last_seen = pts
        elif self.last_seen is not None and pts - self.last_seen > gap_s:
            self.since = None
        for t in inside:
            since, last = self.stays.get(t.track, (pts, pts))
            self.stays[t.track] = (since if pts - last <= gap_s else pts, pts)
        self.stays = {track: stay for track, stay in self.stays.items() if pts - stay[1] <= gap_s}
        if self.zone.dwell_of == "object":
            return inside, max((self.stay_of(t, pts) for t in inside), default=0.0)
        dwell = pts - self.since if (inside and self.since is not None) else 0.0
        return inside, dwell

    def stay_of(self, tracked: Tracked, pts: float) -> float:
        """How long the object of ``tracked`` has been in the zone (0 when it is not)."""
        stay = self.stays.get(tracked.track)
        return pts - stay[0] if stay is not None else 0.0


def zone_reading(
    trackers: Sequence[ZoneTracker],
    pts: float,
    tracked: Sequence[Tracked],
    gap_s: float = ZONE_GAP_S,
    moment: datetime | None = None,
) -> SignalReading:
    """The ``zone`` signal at ``pts``; ``gap_s``: the longest absence that is no break (see ZoneTracker);
    ``moment``: the camera's clock time then, which each zone's armed schedule is judged by (None: armed)."""
    hits: list[dict[str, object]] = []
    reasons: list[str] = []
    for tracker in trackers:
        inside, dwell = tracker.update(pts, tracked, gap_s)
        if not inside or dwell < tracker.zone.dwell_s:
            continue
        if moment is not None and not armed_at(tracker.schedule, moment):
            continue
        objects = tracked_dicts(inside)
        if tracker.zone.dwell_of == "object":
            for obj, item in zip(objects, inside, strict=True):
                obj["dwell_s"] = round(tracker.stay_of(item, pts), 2)
            stayed = [t for t in inside if tracker.stay_of(t, pts) >= tracker.zone.dwell_s]
            reasons.extend(
                f"{t.box.label} #{t.track} in zone '{tracker.name}' for {tracker.stay_of(t, pts):.1f} s" for t in stayed
            )
        else:
            reasons.append(f"{len(inside)} object(s) in zone '{tracker.name}' for {dwell:.1f} s")
        hits.append({"zone": tracker.name, "objects": objects, "dwell_s": round(dwell, 2)})
    reason = "; ".join(reasons)
    return SignalReading("zone", 1.0 if hits else 0.0, {"zones": hits}, reason)


def count_reading(thresholds: dict[str, int], boxes: Sequence[Box]) -> SignalReading:
    counts = Counter(b.label for b in boxes)
    over = {label: counts[label] for label, limit in thresholds.items() if counts[label] >= limit}
    reason = ", ".join(f"{n} x {label} (threshold {thresholds[label]})" for label, n in over.items())
    return SignalReading("count", 1.0 if over else 0.0, {"counts": dict(counts), "over": over}, reason)


def normalize_words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


@dataclass(frozen=True)
class KeywordHit:
    keyword: str
    time: float
    segment: Segment
    active_from: float = -1.0  # when the signal counts from: ``time``, or later if it arrived late

    def __post_init__(self) -> None:
        if self.active_from < 0:
            object.__setattr__(self, "active_from", self.time)


def find_keywords(keywords: Sequence[str], segment: Segment) -> list[KeywordHit]:
    """Every occurrence of a keyword or phrase in a segment, timed by its first word."""
    hits = []
    words = [(normalize_words(w.text), w.start) for w in segment.words]
    flat = [(token, start) for tokens, start in words for token in tokens]
    if not flat:
        tokens = normalize_words(segment.text)
        flat = [(token, segment.start) for token in tokens]
    for keyword in keywords:
        wanted = normalize_words(keyword)
        if not wanted:
            continue
        for i in range(len(flat) - len(wanted) + 1):
            if [token for token, _ in flat[i : i + len(wanted)]] == wanted:
                hits.append(KeywordHit(keyword, flat[i][1], segment))
    return hits


SAME_WORD_S = 0.5  # one keyword timed this close in two transcripts (partial, final) was said once


@dataclass
class AudioTracker:
    """Keeps recent keyword hits, transcript segments and loudness spikes of one camera."""

    keywords: Sequence[str]
    spike_db: float
    hold_s: float
    hits: deque[KeywordHit] = field(default_factory=deque)
    segments: deque[Segment] = field(default_factory=deque)
    spikes: deque[tuple[float, float, float]] = field(default_factory=deque)  # pts, dbfs, baseline
    baseline: float | None = None
    levels_seen: int = 0
    scored_until: float = -math.inf  # media time of the latest frame scored

    def add(self, segments: Sequence[Segment], levels: Sequence[AudioLevel], *, partial: bool = False) -> None:
        """A transcript's segments and levels; a partial one's segments only count for their keywords
        (the final transcript repeats them, and a keyword heard twice counts once)."""
        for segment in segments:
            if not partial:
                self.segments.append(segment)
            for hit in find_keywords(self.keywords, segment):
                if any(h.keyword == hit.keyword and abs(h.time - hit.time) < SAME_WORD_S for h in self.hits):
                    continue  # already heard in a partial transcript
                # A live camera may have scored past this word already (Whisper was slower than
                # max_audio_lag_s): the keyword then counts from the next scored frame on.
                self.hits.append(replace(hit, active_from=max(hit.time, self.scored_until)))
        for level in levels:
            self._add_level(level)

    def _add_level(self, level: AudioLevel) -> None:
        self.levels_seen += 1
        if self.baseline is None:
            self.baseline = level.dbfs
            return
        if self.levels_seen > LOUDNESS_WARMUP and level.dbfs - self.baseline >= self.spike_db:
            self.spikes.append((max(level.pts, self.scored_until), level.dbfs, self.baseline))
            return  # spikes do not raise the baseline
        self.baseline += BASELINE_ALPHA * (level.dbfs - self.baseline)

    def prune(self, before: float) -> None:
        for queue in (self.hits, self.segments, self.spikes):
            while queue and _time_of(queue[0]) < before:
                queue.popleft()

    def keyword_reading(self, pts: float, when: Callable[[float], str] = media_seconds) -> SignalReading:
        """The ``keyword`` signal at ``pts``; ``when`` names a media time in the reason."""
        self.scored_until = max(self.scored_until, pts)
        recent = [h for h in self.hits if pts - self.hold_s < h.active_from <= pts]
        evidence = [{"keyword": h.keyword, "time": round(h.time, 2), "text": h.segment.text.strip()} for h in recent]
        reason = ", ".join(f"spoken '{h.keyword}' at {when(h.time)}" for h in recent)
        return SignalReading("keyword", 1.0 if recent else 0.0, {"keywords": evidence}, reason)

    def loudness_reading(self, pts: float) -> SignalReading:
        recent = [s for s in self.spikes if pts - LOUDNESS_HOLD_S < s[0] <= pts]
        if not recent:
            return SignalReading("loudness", 0.0, {}, "")
        spike_pts, dbfs, baseline = max(recent, key=lambda s: s[1])
        evidence: dict[str, object] = {
            "time": round(spike_pts, 2),
            "dbfs": round(dbfs, 1),
            "baseline_dbfs": round(baseline, 1),
        }
        return SignalReading("loudness", 1.0, evidence, f"loudness {dbfs - baseline:.0f} dB above baseline")

    def transcript_between(self, start: float, end: float) -> list[dict[str, object]]:
        return [
            {"text": s.text.strip(), "start": round(s.start, 2), "end": round(s.end, 2)}
            for s in self.segments
            if s.end >= start and s.start <= end
        ]


def _time_of(item: KeywordHit | Segment | tuple[float, float, float]) -> float:
    if isinstance(item, KeywordHit):
        return item.active_from
    if isinstance(item, Segment):
        return item.end
    return item[0]


def _box_dict(box: Box) -> dict[str, object]:
    return {
        "label": box.label,
        "confidence": round(box.confidence, 3),
        "box": [round(box.x1, 4), round(box.y1, 4), round(box.x2, 4), round(box.y2, 4)],
    }


def tracked_dicts(tracked: Iterable[Tracked]) -> list[dict[str, object]]:
    """Boxes as the payload shows them, each with its track id."""
    return [{**_box_dict(t.box), "track": t.track} for t in tracked]


def camera_trackers(camera: CameraConfig) -> list[ZoneTracker]:
    return [ZoneTracker(name, zone) for name, zone in camera.zones.items()]
