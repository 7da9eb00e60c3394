"""Samples a running pipeline's metrics every second, as /metrics would be scraped: analysed frames,
the capture-to-detection histogram of every detect replica, CPU time and memory of every process."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

from pipeline.metrics import Histogram
from pipeline.progress import total
from pipeline.supervisor import Supervisor


@dataclass
class Sample:
    t: float
    analysed: int
    detection: Histogram
    cpu: dict[str, float]
    rss: dict[str, int]
    sampled: int = 0  # frames decode sent so far (what detect was asked to analyse)


@dataclass
class Sampler:
    """Samples the supervisor's metrics snapshot every ``every_s`` (as /metrics would be scraped)."""

    every_s: float = 1.0
    samples: list[Sample] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    first_analysed_at: float | None = None  # when analysed frames were first seen (startup time)
    _last: float = 0.0

    def __call__(self, supervisor: Supervisor) -> None:
        now = time.monotonic()
        analysed = total(supervisor.counters, "detect", "frames_analysed")
        if analysed and self.first_analysed_at is None:
            self.first_analysed_at = now
        if now - self._last < self.every_s:
            return
        self._last = now
        snap = supervisor.snapshot()
        detection = Histogram()
        for view in snap.stages:  # every replica of detect
            hist = view.histograms.get("capture_to_detection")
            if hist is not None:
                detection = detection.plus(hist)
        self.samples.append(
            Sample(
                t=now - self.started,
                analysed=analysed,
                detection=detection,
                cpu={v.instance: v.process.cpu_seconds for v in snap.stages if v.process},
                rss={v.instance: v.process.rss_bytes for v in snap.stages if v.process},
                sampled=total(supervisor.counters, "decode", "frames_sent"),
            )
        )

    def series(self) -> list[dict[str, Any]]:
        """Per interval: analysed frames/s (and the frames/s decode sent), the capture-to-detection
        p95 of that interval and each stage's CPU %."""
        rows = []
        for before, after in zip(self.samples, self.samples[1:], strict=False):
            dt = after.t - before.t
            recent = after.detection.minus(before.detection) if before.detection.count else after.detection
            rows.append(
                {
                    "t": round(after.t, 1),
                    "analysed_fps": round((after.analysed - before.analysed) / dt, 2),
                    "sampled_fps": round((after.sampled - before.sampled) / dt, 2),
                    "analysed": after.analysed,  # so far: rates over longer windows are exact
                    "sampled": after.sampled,
                    "detection_p95_ms": round(1000 * recent.quantile(0.95), 1) if recent.count else math.nan,
                    "cpu_percent": stage_cpu(before, after),
                }
            )
        return rows

    def processes(self) -> dict[str, dict[str, float]]:
        """CPU % (of one core) while each stage process ran, and its peak resident memory."""
        out = {}
        instances = {instance for sample in self.samples for instance in sample.cpu}
        for instance in sorted(instances):
            seen = [s for s in self.samples if instance in s.cpu]  # the last samples may follow the stop
            if len(seen) < 2:
                continue
            first, last = seen[0], seen[-1]
            out[instance] = {
                "cpu_percent": round(100 * (last.cpu[instance] - first.cpu[instance]) / max(1e-6, last.t - first.t), 1),
                "rss_mib": round(max(s.rss.get(instance, 0) for s in seen) / 2**20),
            }
        return out


def stage_cpu(before: Sample, after: Sample) -> dict[str, float]:
    """CPU % (of one core) of each stage (its replicas and decoders together) between two samples."""
    dt = max(1e-6, after.t - before.t)
    used: dict[str, float] = {}
    for instance, seconds in after.cpu.items():
        if instance in before.cpu:
            stage = instance.split(":", 1)[0]
            used[stage] = used.get(stage, 0.0) + seconds - before.cpu[instance]
    return {stage: round(100 * seconds / dt, 1) for stage, seconds in sorted(used.items())}


def latency(histograms: dict[str, Histogram], name: str) -> dict[str, float] | None:
    hist = histograms.get(name)
    if hist is None or not hist.count:
        return None
    return {f"p{round(q * 100)}_ms": round(1000 * hist.quantile(q), 1) for q in (0.5, 0.95, 0.99)} | {"n": hist.count}
