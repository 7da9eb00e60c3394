"""fuse: aligns each camera's detections and audio analysis by media time, scores them with the
fusion rule, and turns incidents into alert events (with evidence and a JPEG snapshot).

Alignment: a frame at media time ``t`` is scored only when the camera's audio watermark (the end of
the audio analysed so far) has passed ``t``, so a keyword is never missed because Whisper was slower
than the detector. In ``fast`` replay this waits as long as needed (deterministic); live and realtime
cameras wait at most ``max_audio_lag_s`` of wall time.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pipeline.config import AlertsConfig, CameraConfig, FuseConfig, is_live
from pipeline.messages import AlertEvent, Box, Detections, EndOfStream, Message, Transcript, crossing_key, rule_key
from pipeline.metrics import ThroughputSpan
from pipeline.schedule import ArmedWindow, SceneClock, armed_at, describe, parse_schedule
from pipeline.stage import PermanentStageError, StageContext
from stages.alerting.durable import StoreOpenError, open_when_possible
from stages.alerting.pending import AlertLink, PendingAlerts
from stages.fusion.filters import DetectionFilter
from stages.fusion.incident import IncidentEvent, IncidentMachine, fuse_score
from stages.fusion.lines import LineWatch, line_reading, line_watches
from stages.fusion.signals import (
    ZONE_GAP_S,
    AudioTracker,
    SignalReading,
    ZoneTracker,
    camera_trackers,
    count_reading,
    tracked_dicts,
    zone_reading,
)
from stages.fusion.snapshot import snapshot
from stages.fusion.tracking import ObjectTracker, Tracked, track_gap_s
from stages.fusion.unfinished import close_left_open, closed_by, now_iso, stable_id

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CameraHours:
    """A camera's own armed hours (``cameras.<id>.armed``), judged like a zone's or a line's."""

    name: str
    schedule: tuple[ArmedWindow, ...]


SCHEMA = "vigil.alert.v1"
HISTORY_S = 120.0
GAUGE_EVERY_S = 0.25  # the unacknowledged alerts gauge is read this often (reported once a second)


@dataclass
class CameraFusion:
    """Per-camera fusion state; fed messages in arrival order, it emits alert events in media order."""

    camera_id: str
    camera: CameraConfig
    settings: FuseConfig
    alerts: AlertsConfig
    run_id: str
    wait_for_audio: bool
    timezone: str | None = None  # runtime.timezone: the camera's clock (armed schedules, local_time)
    pending: deque[Detections] = field(default_factory=deque)
    audio_watermark: float = -math.inf
    video_ended: bool = False
    audio_ended: bool = False
    eos_sent: bool = False
    errors: list[str] = field(default_factory=list)
    last_frame: Detections | None = None  # the latest scored frame: the closing alert's snapshot
    last_tracked: list[Tracked] = field(default_factory=list)  # its boxes with their tracks

    def __post_init__(self) -> None:
        self.clock = SceneClock.of(self.timezone, self.camera.recording_started)
        self.armed_now: dict[tuple[str, str], bool] = {}  # (kind, name) -> armed at the latest frame
        self.filter = DetectionFilter.of(self.camera)
        self.hours = CameraHours(self.camera_id, parse_schedule(self.camera.armed))
        self.tracker = ObjectTracker(track_gap_s(self.camera.analysis.fps))
        self.zones = camera_trackers(self.camera)
        self.lines = line_watches(self.camera, self.settings.crossing_hold_s)
        self.audio = AudioTracker(self.camera.keywords, self.camera.loudness_spike_db, self.settings.keyword_hold_s)
        self.machine = IncidentMachine(self.settings)
        if not self.camera.audio:
            self.audio_ended = True
            self.audio_watermark = math.inf

    @property
    def finished(self) -> bool:
        return self.video_ended and self.audio_ended and not self.pending

    def on_message(self, message: Message) -> None:
        if isinstance(message, Detections):
            self.pending.append(message)
        elif isinstance(message, Transcript):
            self.audio.add(message.segments, message.levels, partial=message.partial)
            if not message.partial:
                self.audio_watermark = max(self.audio_watermark, message.end)
        elif isinstance(message, EndOfStream):
            if message.error:
                self.errors.append(message.error)
            if message.stream == "video":
                self.video_ended = True
            else:
                self.audio_ended = True
                self.audio_watermark = math.inf

    def ready(self, now: float) -> list[Detections]:
        out = []
        while self.pending:
            head = self.pending[0]
            lagging = not self.wait_for_audio and now - head.wall_time > self.settings.max_audio_lag_s
            if head.pts > self.audio_watermark and not lagging and not self.audio_ended:
                break
            out.append(self.pending.popleft())
        return out

    def score(self, frame: Detections) -> list[AlertEvent]:
        self.last_frame = frame
        boxes = self._counted(frame)
        tracked = self.last_tracked = self.tracker.update(frame.pts, boxes)
        moment = self.clock.at(frame.pts, frame.wall_time)
        self._judge_arming(moment)
        when = self._naming(frame)
        readings = [
            zone_reading(self.zones, frame.pts, tracked, max(ZONE_GAP_S, self.tracker.survives_s), moment),
            count_reading(self.camera.count_threshold, boxes),
            self.audio.keyword_reading(frame.pts, when),
            self.audio.loudness_reading(frame.pts),
            line_reading(self.lines, frame.pts, tracked, moment, when),
        ]
        if not self.armed_now.get(("camera", self.camera_id), True):  # the camera's hours: nothing counts
            readings = [SignalReading(r.name, 0.0, {}, "") for r in readings]
        self.audio.prune(frame.pts - HISTORY_S)
        score = fuse_score(readings, self.settings.weights)
        active = [r.name for r in readings if r.value > 0]
        event = self.machine.step(frame.pts, score, active)
        return [self._alert(event, frame, readings)] if event else []

    def _counted(self, frame: Detections) -> tuple[Box, ...]:
        """The frame's boxes that the camera's masks and object filters let through; the first
        detection each reason sets aside is logged, so a user sees the mask at work."""
        if not self.filter:
            return frame.boxes
        seen = set(self.filter.ignored)
        boxes = self.filter.keep(frame.boxes)
        for reason in self.filter.ignored.keys() - seen:
            when = self._naming(frame)(frame.pts)
            logger.info("camera %s: ignoring detections (%s), the first at %s", self.camera_id, reason, when)
        return boxes

    def _naming(self, frame: Detections) -> Callable[[float], str]:
        """How reasons and logs name a media time near ``frame`` (``SceneClock.naming``)."""
        return self.clock.naming(is_live(self.camera.source), frame.pts, frame.wall_time)

    def _stamp(self, frame: Detections) -> str:
        """When ``frame`` was, for its snapshot: the clock's date and time where the camera has a
        clock (live, or a recording with ``recorded_at``), else its media time."""
        if is_live(self.camera.source) or self.camera.recording_started is not None:
            return f"{self.clock.at(frame.pts, frame.wall_time):%Y-%m-%d %H:%M:%S %Z}"
        return f"{frame.pts:.1f} s"

    @property
    def rules(self) -> list[tuple[str, ZoneTracker | LineWatch | CameraHours]]:
        """The camera's own hours, zones and lines, each with its kind."""
        rules: list[tuple[str, ZoneTracker | LineWatch | CameraHours]] = [("camera", self.hours)]
        return rules + [("zone", zone) for zone in self.zones] + [("line", line) for line in self.lines]

    def _judge_arming(self, moment: datetime) -> None:
        """Each scheduled zone's and line's state at ``moment`` into ``armed_now`` (the snapshot's
        greyed rules, ``Status.armed``), logged at the first frame and each time it changes."""
        for kind, rule in self.rules:
            if not rule.schedule:
                continue
            armed = armed_at(rule.schedule, moment)
            before = self.armed_now.get((kind, rule.name))
            self.armed_now[(kind, rule.name)] = armed
            if armed != before:
                logger.info(
                    "camera %s: %s '%s' %s%s at %s (its hours: %s)",
                    self.camera_id,
                    kind,
                    rule.name,
                    "is " if before is None else "",
                    "armed" if armed else "disarmed",
                    f"{moment:%a %Y-%m-%d %H:%M:%S %Z}",
                    describe(rule.schedule),
                )

    def armed_states(self) -> dict[str, int]:
        """Each scheduled rule's state at the latest frame, as ``Status.armed`` keys it."""
        return {rule_key(self.camera_id, kind, name): int(armed) for (kind, name), armed in self.armed_now.items()}

    def crossings_counted(self) -> dict[str, int]:
        """Crossings of this camera's lines so far, as ``Status.crossings`` keys them."""
        return {
            crossing_key(self.camera_id, direction, watch.name): count
            for watch in self.lines
            for direction, count in watch.counted.items()
        }

    def close(self) -> list[AlertEvent]:
        """Close the open incident (at the end of both streams), at the last scored frame."""
        frame = self.last_frame
        if frame is None or self.machine.incident is None:
            return []
        event = self.machine.close(frame.pts, 0.0)
        return [self._alert(event, frame, [])] if event else []

    def _alert(self, event: IncidentEvent, frame: Detections, readings: list[SignalReading]) -> AlertEvent:
        weights = self.settings.weights
        active = [r for r in readings if r.value > 0]
        incident_id = stable_id(self.run_id, self.camera_id, f"{event.incident_start:.3f}")
        jpeg = snapshot(
            frame.image,
            self.last_tracked,
            {name: zone.polygon for name, zone in self.camera.zones.items()},
            self.alerts.snapshot_max_bytes,
            self.camera.lines,
            disarmed={rule for rule, armed in self.armed_now.items() if not armed},  # at this frame
            text=f"{self.camera_id}  {self._stamp(frame)}",
        )
        reasons = _reasons(event, active)
        payload = {
            "schema": SCHEMA,
            "id": stable_id(incident_id, event.sequence),
            "incident_id": incident_id,
            "event": event.event,
            "sequence": event.sequence,
            "camera": self.camera_id,
            "score": round(event.score, 4),
            "open_threshold": self.settings.open_threshold,
            "signals": {r.name: {"value": r.value, "weight": getattr(weights, r.name)} for r in readings},
            "new_signals": list(event.new_signals),
            "reasons": reasons,
            "media_time": {"incident_start": round(event.incident_start, 3), "at": round(event.pts, 3)},
            "frame": {
                "seq": frame.seq,
                "width": int(frame.image.shape[1]),
                "height": int(frame.image.shape[0]),
            },
            "wall_time": now_iso(),
            "local_time": self.clock.at(frame.pts, frame.wall_time).isoformat(timespec="milliseconds"),
            "capture_wall_time": frame.wall_time,
            "evidence": self._evidence(event, frame, active),
        }
        logger.info(
            "camera %s: %s score %.2f at %s: %s",
            self.camera_id,
            event.event,
            event.score,
            self._naming(frame)(event.pts),
            "; ".join(reasons) or "-",
        )
        return AlertEvent(payload=payload, snapshot=jpeg)

    def _evidence(self, event: IncidentEvent, frame: Detections, active: list[SignalReading]) -> dict[str, Any]:
        evidence: dict[str, Any] = {"boxes": tracked_dicts(self.last_tracked)}
        for reading in active:
            evidence.update({"loudness": reading.evidence} if reading.name == "loudness" else reading.evidence)
        evidence["transcript"] = self.audio.transcript_between(
            event.incident_start - self.settings.keyword_hold_s, event.pts
        )
        return evidence


def _reasons(event: IncidentEvent, active: list[SignalReading]) -> list[str]:
    if event.event == "alert.closed":
        duration = event.pts - event.incident_start
        return [f"incident over after {duration:.1f} s (peak score {event.peak:.2f})"]
    return [r.reason for r in active if r.reason]


def open_pending(ctx: StageContext) -> PendingAlerts | None:
    """Fuse's pending file: a full disk is waited out (beating, not ready; None when told to stop
    meanwhile); a folder in the way fails the stage for good."""
    try:
        return open_when_possible(
            lambda: PendingAlerts(ctx.config.alerts.pending_path, exclusive=True),
            "alerts.pending_path",
            ctx.should_stop,
            ctx.beat,
        )
    except StoreOpenError as exc:
        raise PermanentStageError(f"alerts.pending_path: {exc}") from exc


def gauge_store(ctx: StageContext, store: PendingAlerts) -> None:
    """The pending file's gauges (each a query of the store: not for every message)."""
    ctx.counters["alerts_unacknowledged"] = store.unacked_count()
    ctx.counters["alerts_held_in_memory"] = store.held_in_memory
    ctx.counters["stores_set_aside"] = store.stores_set_aside


def route(ctx: StageContext, message: Message, cameras: dict[str, CameraFusion]) -> bool:
    """Hand ``message`` to its camera's fusion; False (logged) when no camera of the config sent it."""
    camera_id = getattr(message, "camera", None)
    fusion = cameras.get(camera_id) if isinstance(camera_id, str) else None
    if fusion is None:
        logger.warning("message for unknown camera %r ignored", camera_id)
        return False
    ctx.counters[f"{message.kind}_in"] += 1
    fusion.on_message(message)
    return True


def close_incidents_left_open(ctx: StageContext, link: AlertLink) -> None:
    """Close the incidents a crashed or killed fuse left open (``close_left_open``): nothing in this
    process knows them, so nothing else would."""
    for left_open in link.store.open_incidents():
        closing = close_left_open(left_open)
        logger.warning(
            "camera %s: incident %s was open when fuse stopped unexpectedly; closing it (%s)",
            closing.payload["camera"],
            closing.payload["incident_id"],
            closing.payload["id"],
        )
        link.emit(closing)
        ctx.counters["alerts"] += 1


def run(ctx: StageContext) -> None:
    config = ctx.config
    receiver = ctx.receiver(queue=1024)
    unacked = open_pending(ctx)
    if unacked is None:
        return
    link = AlertLink(unacked, ctx.acked_sender("alert"), config.alerts.resend_s, config.alerts.end_of_stream_wait_s)
    link.start()
    close_incidents_left_open(ctx, link)
    wait_for_audio, timezone = config.runtime.mode == "fast", config.runtime.timezone
    cameras = {
        camera_id: CameraFusion(
            camera_id, camera, config.stages.fuse, config.alerts, ctx.spec.run_id, wait_for_audio, timezone
        )
        for camera_id, camera in config.cameras.items()
    }

    def emit(alerts: list[AlertEvent]) -> None:
        for alert in alerts:
            link.emit(alert)  # stored before it is sent; resent until the sink acknowledges it
            ctx.counters["alerts"] += 1
            ctx.observe("capture_to_alert", time.time() - float(alert.payload["capture_wall_time"]))

    span = ThroughputSpan()
    gauged_at = -math.inf
    ctx.report("ready")
    while not ctx.should_stop():
        ctx.beat()
        message = receiver.recv(timeout_ms=50)
        if message is not None and not route(ctx, message, cameras):
            continue
        now = time.time()
        for camera_id, fusion in cameras.items():
            scored = 0
            for frame in fusion.ready(now):
                scored += 1
                emit(fusion.score(frame))
            if scored:
                ctx.counters["frames_scored"] += scored
                span.count(ctx.counters, scored)
                ctx.crossings.update(fusion.crossings_counted())
                ctx.armed.update(fusion.armed_states())
                if fusion.filter:
                    ctx.counters["detections_ignored"] = sum(f.filter.ignored.total() for f in cameras.values())
            if fusion.finished and not fusion.eos_sent:
                emit(fusion.close())
                link.end(EndOfStream(camera_id, "alerts", "; ".join(fusion.errors) or None))
                fusion.eos_sent = True
        link.pump()
        if time.monotonic() - gauged_at >= GAUGE_EVERY_S:
            gauged_at = time.monotonic()
            gauge_store(ctx, link.store)
        pending = sum(len(fusion.pending) for fusion in cameras.values())  # frames waiting for their audio
        ctx.counters["pending_frames"] = pending
        ctx.counters["pending_frames_peak"] = max(pending, ctx.counters["pending_frames_peak"])
    for fusion in cameras.values():  # stopped (not at the end of the streams): close what is open
        emit([closed_by(alert, "stop") for alert in fusion.close()])
    link.pump()
    receiver.close()
    link.sender.close()
    link.store.close()
