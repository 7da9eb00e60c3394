"""The live progress line and the end-of-run summary of ``run.py run|replay``."""

from __future__ import annotations

import sys
import time
from typing import TextIO

from pipeline.supervisor import RunSummary, Supervisor


def total(counters: dict[str, dict[str, int]], stage: str, key: str) -> int:
    return sum(c.get(key, 0) for name, c in counters.items() if name == stage or name.startswith(stage + ":"))


class ProgressLine:
    """Rewrites one line on a terminal; prints a line every ``every_s`` when not a terminal."""

    def __init__(self, stream: TextIO = sys.stderr, every_s: float = 5.0) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.every_s = every_s
        self._last_print = 0.0
        self._started = time.monotonic()

    def __call__(self, supervisor: Supervisor) -> None:
        counters = supervisor.counters
        elapsed = max(1e-6, time.monotonic() - self._started)
        decoded = total(counters, "decode", "frames_sent")
        analysed = total(counters, "detect", "frames_analysed")
        dropped = total(counters, "decode", "frames_dropped")
        alerts = total(counters, "alert", "alerts")
        states = " ".join(f"{cam}={state}" for cam, state in sorted(supervisor.camera_states.items()))
        text = (
            f"frames {decoded} sampled, {analysed} analysed ({analysed / elapsed:.1f}/s), "
            f"{dropped} dropped | alerts {alerts} | {elapsed:.0f} s"
        )
        if states and len(supervisor.config.cameras) <= 4:
            text += f" | {states}"
        now = time.monotonic()
        if self.tty:
            self.stream.write("\r\x1b[2K" + text)
            self.stream.flush()
        elif now - self._last_print >= self.every_s:
            self._last_print = now
            self.stream.write(text + "\n")
            self.stream.flush()

    def finish(self) -> None:
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()


STAGE_KEYS = {
    "decode": (
        "frames_decoded",
        "frames_sent",
        "frames_dropped",
        "audio_chunks_sent",
        "audio_chunks_dropped",
    ),
    "detect": ("frames_analysed", "batches"),
    "transcribe": ("chunks_in", "windows_transcribed", "segments"),
    "fuse": ("frames_scored", "alerts"),
    "alert": ("alerts", "delivered", "delivery_failed"),
}


def format_summary(summary: RunSummary) -> str:
    lines = [f"vigil summary ({summary.wall_s:.1f} s wall time{', interrupted' if summary.interrupted else ''})"]
    for instance, counters in sorted(summary.counters.items(), key=lambda item: _order(item[0])):
        stage = instance.split(":", 1)[0]
        keys = STAGE_KEYS.get(stage, tuple(sorted(counters)))
        shown = ", ".join(f"{key.replace('_', ' ')} {counters.get(key, 0)}" for key in keys)
        lines.append(f"  {instance:<22} {shown}")
    analysed = total(summary.counters, "detect", "frames_analysed")
    if summary.wall_s > 0:
        lines.append(f"  throughput: {analysed / summary.wall_s:.1f} analysed frames/s over the whole run")
    for camera, error in sorted(summary.camera_errors.items()):
        lines.append(f"  camera {camera}: {error}")
    for instance, reason in sorted(summary.failed.items()):
        lines.append(f"  FAILED {instance}: {reason}")
    return "\n".join(lines)


def _order(instance: str) -> tuple[int, str]:
    order = ["decode", "detect", "transcribe", "fuse", "alert"]
    stage = instance.split(":", 1)[0]
    return (order.index(stage) if stage in order else len(order), instance)
