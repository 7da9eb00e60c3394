"""Prometheus metrics and a health check, served by the supervisor for every stage.

Stages report counters, gauges and latency histograms in their status events; the supervisor keeps
the latest of each, adds what it sees itself (processes up, restarts, heartbeat age, CPU time and
resident memory from /proc, camera states) and serves:

* ``GET /metrics``: Prometheus text format 0.0.4;
* ``GET /healthz``: JSON, 200 while every stage is up with a fresh heartbeat and none failed for good,
  503 otherwise (with what is wrong).
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from pipeline.messages import split_crossing_key, split_delivery_key, split_rule_key

logger = logging.getLogger(__name__)

LATENCY_BUCKETS_S: tuple[float, ...] = (
    0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.125, 0.15, 0.175, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75,
    1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0, 60.0,
)  # fmt: skip
GAUGES = frozenset(
    {
        "queue_depth",
        "alerts_unacknowledged",
        "alerts_held_in_memory",
        "deliveries_pending",
        "pending_frames",
        "pending_frames_peak",
    }
)
CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


@dataclass
class ThroughputSpan:
    """A stage's own throughput to the millisecond (its counters reach the supervisor once a second,
    so rates read there are off by up to a second at each end): ``span_frames`` counts frames and
    ``span_ms`` the time they took. Given when each batch ``began``, the span runs from the first
    batch's beginning to the latest batch's end and counts every frame (as the detector is timed
    alone); without it, from the first call to the latest and the frames after the first call."""

    first: float | None = None

    def count(self, counters: Counter[str], frames: int, began: float | None = None) -> None:
        now = time.perf_counter()
        if began is not None:  # batches run side by side may finish out of order: the earliest start
            self.first = began if self.first is None else min(self.first, began)
        elif self.first is None:
            self.first = now
            return
        counters["span_frames"] += frames
        counters["span_ms"] = int(1000 * (now - self.first))


@dataclass
class Histogram:
    """Counts per bucket of ``LATENCY_BUCKETS_S`` (the last one is +Inf) and the sum, in seconds."""

    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_S) + 1))
    sum_s: float = 0.0

    def observe(self, seconds: float) -> None:
        index = next((i for i, bound in enumerate(LATENCY_BUCKETS_S) if seconds <= bound), len(LATENCY_BUCKETS_S))
        self.counts[index] += 1
        self.sum_s += seconds

    def to_wire(self) -> list[float]:
        return [*self.counts, self.sum_s]

    @classmethod
    def from_wire(cls, values: list[float]) -> Histogram:
        return cls([int(v) for v in values[:-1]], float(values[-1]))

    @property
    def count(self) -> int:
        return sum(self.counts)

    def quantile(self, q: float) -> float:
        """The q-quantile, interpolated linearly inside its bucket (as Prometheus'
        ``histogram_quantile`` does); the largest finite bound when it falls in +Inf."""
        if not self.count:
            return math.nan
        target, seen, lower = q * self.count, 0, 0.0
        for bound, count in zip(LATENCY_BUCKETS_S, self.counts, strict=False):
            if count and seen + count >= target:
                return lower + (bound - lower) * (target - seen) / count
            seen += count
            lower = bound
        return LATENCY_BUCKETS_S[-1]

    def plus(self, other: Histogram) -> Histogram:
        """Both together (the same histogram from two replicas of a stage)."""
        return Histogram([a + b for a, b in zip(self.counts, other.counts, strict=True)], self.sum_s + other.sum_s)

    def minus(self, earlier: Histogram) -> Histogram:
        """What was observed since ``earlier`` (a previous report of the same histogram)."""
        return Histogram([a - b for a, b in zip(self.counts, earlier.counts, strict=True)], self.sum_s - earlier.sum_s)


@dataclass(frozen=True)
class ProcessSample:
    cpu_seconds: float
    rss_bytes: int


def sample_process(pid: int) -> ProcessSample | None:
    """CPU time (user + system) and resident memory of a process, from Linux's /proc."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime
    rss = next((int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmRSS:")), 0)
    return ProcessSample(cpu, rss)


@dataclass(frozen=True)
class StageView:
    """What the supervisor knows of one stage instance, at one moment."""

    instance: str
    stage: str
    camera: str | None
    up: bool
    failed: str | None
    restarts: int
    heartbeat_age_s: float
    counters: dict[str, int]
    histograms: dict[str, Histogram]
    process: ProcessSample | None
    crossings: dict[str, int] = field(default_factory=dict)  # fuse: "camera/direction/line" -> crossings
    armed: dict[str, int] = field(default_factory=dict)  # fuse: "camera/kind/name" -> 1 armed, 0 not
    deliveries: dict[str, int] = field(default_factory=dict)  # alert: "measure|destination" -> count


@dataclass(frozen=True)
class Snapshot:
    stages: list[StageView]
    cameras: dict[str, str]  # camera -> state value
    camera_states: tuple[str, ...]
    heartbeat_timeout_s: float


def _labels(**labels: str | None) -> str:
    parts = [f'{key}="{_escape(value)}"' for key, value in labels.items() if value is not None]
    return "{" + ",".join(parts) + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def prometheus_number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value)) if isinstance(value, float) else str(value)


LabelledValue = tuple[str, float]  # (labels, value)

STAGE_FAMILIES: tuple[tuple[str, str, str, Callable[[StageView], float | None]], ...] = (
    ("vigil_stage_up", "gauge", "1 while the stage process runs.", lambda s: int(s.up)),
    ("vigil_stage_failed", "gauge", "1 when the stage failed for good.", lambda s: int(s.failed is not None)),
    ("vigil_stage_restarts_total", "counter", "Restarts of the stage by the supervisor.", lambda s: s.restarts),
    (
        "vigil_stage_heartbeat_age_seconds",
        "gauge",
        "Seconds since the stage last reported.",
        lambda s: round(s.heartbeat_age_s, 3),
    ),
    (
        "vigil_stage_cpu_seconds_total",
        "counter",
        "CPU time (user + system) of the stage process; rate() gives cores in use.",
        lambda s: round(s.process.cpu_seconds, 2) if s.process else None,
    ),
    (
        "vigil_stage_resident_memory_bytes",
        "gauge",
        "Resident memory of the stage process.",
        lambda s: s.process.rss_bytes if s.process else None,
    ),
)


def _ident(stage: StageView, **extra: str) -> str:
    return _labels(stage=stage.stage, instance=stage.instance, camera=stage.camera, **extra)


def _family(name: str, kind: str, help_text: str, samples: Iterable[LabelledValue]) -> list[str]:
    rows = list(samples)
    if not rows:
        return []
    return [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"] + [
        f"{name}{labels} {prometheus_number(value)}" for labels, value in rows
    ]


def _histogram(key: str, stages: list[StageView]) -> list[str]:
    name = f"vigil_{key}_seconds"
    lines = [f"# HELP {name} Latency {key.replace('_', ' ')}.", f"# TYPE {name} histogram"]
    for stage in stages:
        hist = stage.histograms.get(key)
        if hist is None:
            continue
        cumulative = 0
        for bound, count in zip((*LATENCY_BUCKETS_S, math.inf), hist.counts, strict=True):
            cumulative += count
            lines.append(f"{name}_bucket{_ident(stage, le=prometheus_number(bound))} {cumulative}")
        lines.append(f"{name}_sum{_ident(stage)} {round(hist.sum_s, 6)}")
        lines.append(f"{name}_count{_ident(stage)} {hist.count}")
    return lines


def _keyed(
    stages: list[StageView],
    tally: Callable[[StageView], dict[str, int]],
    split: Callable[[str], tuple[str, str, str]],
    names: tuple[str, str, str],
) -> Iterator[tuple[str, float]]:
    """The samples of a tally whose keys pack three labels (``Status.crossings``, ``Status.armed``)."""
    for s in stages:
        for key, n in sorted(tally(s).items()):
            yield _labels(stage=s.stage, instance=s.instance, **dict(zip(names, split(key), strict=True))), n


def _deliveries(
    stages: list[StageView], wanted: Callable[[str], bool], measure_label: str | None = None
) -> Iterator[tuple[str, float]]:
    """The samples of ``StageView.deliveries`` whose measure is ``wanted``, labelled by destination
    (and by the measure under ``measure_label``)."""
    for s in stages:
        for key, n in sorted(s.deliveries.items()):
            destination, measure = split_delivery_key(key)
            if wanted(measure):
                extra = {measure_label: measure} if measure_label else {}
                yield _labels(stage=s.stage, instance=s.instance, destination=destination, **extra), n


def render(snapshot: Snapshot) -> str:
    """The Prometheus text exposition of a snapshot."""
    stages = snapshot.stages
    lines: list[str] = []
    for name, kind, help_text, value_of in STAGE_FAMILIES:
        values = ((_ident(s), value_of(s)) for s in stages)
        lines += _family(name, kind, help_text, ((labels, v) for labels, v in values if v is not None))
    for key in sorted({key for s in stages for key in s.counters}):
        gauge = key in GAUGES
        lines += _family(
            f"vigil_{key}" if gauge else f"vigil_{key}_total",
            "gauge" if gauge else "counter",
            f"The stage's {key.replace('_', ' ')}.",
            ((_ident(s), s.counters[key]) for s in stages if key in s.counters),
        )
    lines += _family(
        "vigil_line_crossings_total",
        "counter",
        "Objects that crossed a camera's line (cameras.<id>.lines), by direction.",
        _keyed(stages, lambda s: s.crossings, split_crossing_key, ("camera", "direction", "line")),
    )
    lines += _family(
        "vigil_rule_armed",
        "gauge",
        "1 while a scheduled zone or line (its armed hours) raises its signal, 0 outside its hours.",
        _keyed(stages, lambda s: s.armed, split_rule_key, ("camera", "kind", "rule")),
    )
    lines += _family(
        "vigil_alert_deliveries_total",
        "counter",
        "Delivery attempts to each webhook or MQTT broker entry since the sink started, by outcome "
        "(delivered, failed: to be retried, dead: given up after max_age_s).",
        _deliveries(stages, lambda measure: measure != "pending", "outcome"),
    )
    lines += _family(
        "vigil_alert_deliveries_pending",
        "gauge",
        "Alerts stored and not yet delivered to each webhook or MQTT broker entry.",
        _deliveries(stages, lambda measure: measure == "pending"),
    )
    for key in sorted({key for s in stages for key in s.histograms}):
        lines += _histogram(key, stages)
    lines += _family(
        "vigil_camera_state",
        "gauge",
        "1 for the camera's current state.",
        (
            (_labels(camera=camera, state=state), int(current == state))
            for camera, current in sorted(snapshot.cameras.items())
            for state in snapshot.camera_states
        ),
    )
    return "\n".join(lines) + "\n"


def health(snapshot: Snapshot) -> tuple[bool, dict[str, object]]:
    """Healthy when every stage not finished on its own is up, reporting, and not failed for good."""
    problems = []
    stages: dict[str, object] = {}
    for s in snapshot.stages:
        state = "failed" if s.failed else "up" if s.up else "down"
        stale = s.up and s.heartbeat_age_s > snapshot.heartbeat_timeout_s
        stages[s.instance] = {"state": state, "heartbeat_age_s": round(s.heartbeat_age_s, 1), "restarts": s.restarts}
        if s.failed:
            problems.append(f"{s.instance} failed for good: {s.failed}")
        elif stale:
            problems.append(f"{s.instance} silent for {s.heartbeat_age_s:.0f} s")
        elif not s.up and s.stage != "decode":
            problems.append(f"{s.instance} is not running")
    ok = not problems
    return ok, {
        "status": "ok" if ok else "unhealthy",
        "problems": problems,
        "stages": stages,
        "cameras": snapshot.cameras,
    }


class _Handler(BaseHTTPRequestHandler):
    server: MetricsServer

    def log_message(self, format: str, *args: object) -> None:
        logger.debug("metrics: %s", format % args)

    def do_GET(self) -> None:
        snapshot = self.server.snapshot()
        if self.path.split("?", 1)[0] == "/metrics":
            self._send(200, render(snapshot).encode(), "text/plain; version=0.0.4; charset=utf-8")
        elif self.path.split("?", 1)[0] == "/healthz":
            ok, body = health(snapshot)
            self._send(200 if ok else 503, json.dumps(body, indent=2).encode(), "application/json")
        else:
            self._send(404, b"see /metrics and /healthz\n", "text/plain")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class MetricsServer(ThreadingHTTPServer):
    """Serves /metrics and /healthz from ``snapshot()`` in a daemon thread."""

    daemon_threads = True

    def __init__(self, address: str, snapshot: Callable[[], Snapshot]) -> None:
        host, _, port = address.rpartition(":")
        super().__init__((host or "127.0.0.1", int(port)), _Handler)
        self.snapshot = snapshot
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> MetricsServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(5)
