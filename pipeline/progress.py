"""The live progress display and the end-of-run summary of ``run.py run|replay``."""

from __future__ import annotations

import shutil
import sys
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import TextIO

from pipeline.camera_state import CameraState
from pipeline.messages import split_crossing_key
from pipeline.supervisor import CameraView, RunSummary, Supervisor


def total(counters: dict[str, dict[str, int]], stage: str, key: str) -> int:
    return sum(c.get(key, 0) for name, c in counters.items() if name == stage or name.startswith(stage + ":"))


@dataclass
class CameraRate:
    """Frames/s of one camera over the last few seconds, from its decoder's ``frames_sent`` counter."""

    window_s: float = 5.0
    samples: deque[tuple[float, int]] = field(default_factory=deque)

    def update(self, now: float, frames: int) -> float:
        self.samples.append((now, frames))
        while len(self.samples) > 2 and now - self.samples[0][0] > self.window_s:
            self.samples.popleft()
        (t0, n0), (t1, n1) = self.samples[0], self.samples[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0


def camera_line(camera: str, view: CameraView | None, fps: float, counters: dict[str, int], width: int) -> str:
    """``  door   streaming     2.0 fps   120 frames   3 reconnects   h264 768x576``, cut to ``width``."""
    state = view.state.label if view is not None else "starting"
    text = (
        f"  {camera:<14} {state:<12} {fps:5.1f} fps {counters.get('frames_sent', 0):>7} frames "
        f"{counters.get('reconnects', 0):>3} reconnects"
    )
    if view is not None and view.detail:
        text += f"  {view.detail}"
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"


class ProgressDisplay:
    """The live view of ``run.py run|replay``: a totals line, then one line per camera with its
    state. On a terminal the block is redrawn in place; otherwise a camera's line is printed when
    its state changes and the totals line every ``every_s``."""

    MAX_CAMERA_LINES = 16

    def __init__(self, stream: TextIO = sys.stderr, every_s: float = 5.0) -> None:
        self.stream = stream
        self.tty = stream.isatty()
        self.every_s = every_s
        self._last_print: float | None = None  # the first call prints (monotonic time starts near 0 at boot)
        self._started = time.monotonic()
        self._drawn = 0
        self._rates: dict[str, CameraRate] = {}
        self._shown: dict[str, tuple[CameraState, str | None]] = {}

    def __call__(self, supervisor: Supervisor) -> None:
        now = time.monotonic()
        headline = self._headline(supervisor.counters, now)
        width = shutil.get_terminal_size((120, 24)).columns if self.tty else 10_000
        cameras = []
        for camera in supervisor.config.cameras:
            counters = supervisor.counters.get(f"decode:{camera}", {})
            fps = self._rates.setdefault(camera, CameraRate()).update(now, counters.get("frames_sent", 0))
            cameras.append((camera, camera_line(camera, supervisor.camera_states.get(camera), fps, counters, width)))
        if self.tty:
            self._redraw([headline[:width], *self._fit([line for _, line in cameras], supervisor)])
            return
        for camera, line in cameras:
            view = supervisor.camera_states.get(camera)
            if view is not None and self._shown.get(camera) != (view.state, view.detail):
                self._shown[camera] = (view.state, view.detail)
                self.stream.write(line.strip() + "\n")
        if self._last_print is None or now - self._last_print >= self.every_s:
            self._last_print = now
            self.stream.write(headline + "\n")
        self.stream.flush()

    def _headline(self, counters: dict[str, dict[str, int]], now: float) -> str:
        elapsed = max(1e-6, now - self._started)
        decoded = total(counters, "decode", "frames_sent")
        analysed = total(counters, "detect", "frames_analysed")
        dropped = total(counters, "decode", "frames_dropped")
        alerts = total(counters, "alert", "alerts")
        here = {instance.split(":", 1)[0] for instance in counters}  # stages on other hosts report elsewhere
        parts = []
        if "decode" in here:
            parts.append(f"frames {decoded} sampled, {dropped} dropped")
        if "detect" in here:
            parts.append(f"{analysed} analysed ({analysed / elapsed:.1f}/s)")
        if "alert" in here:
            parts.append(f"alerts {alerts}")
        return " | ".join([*(parts or ["starting"]), f"{elapsed:.0f} s"])

    def _fit(self, lines: list[str], supervisor: Supervisor) -> list[str]:
        """At most MAX_CAMERA_LINES camera lines; the rest summed up by state."""
        if len(lines) <= self.MAX_CAMERA_LINES:
            return lines
        shown = lines[: self.MAX_CAMERA_LINES - 1]
        rest = list(supervisor.config.cameras)[self.MAX_CAMERA_LINES - 1 :]
        states = Counter(
            view.state.label if (view := supervisor.camera_states.get(camera)) else "starting" for camera in rest
        )
        return [*shown, f"  ... {len(rest)} more: " + ", ".join(f"{n} {state}" for state, n in states.most_common())]

    def _redraw(self, lines: list[str]) -> None:
        out = f"\x1b[{self._drawn - 1}F" if self._drawn > 1 else "\r"
        out += "".join("\x1b[2K" + line + ("\n" if i < len(lines) - 1 else "") for i, line in enumerate(lines))
        if len(lines) < self._drawn:  # clear lines left over from a taller block
            out += "\x1b[J"
        self._drawn = len(lines)
        self.stream.write(out)
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
        "reconnects",
    ),
    "detect": ("frames_analysed", "frames_skipped", "batches"),
    "transcribe": ("chunks_in", "windows_transcribed", "segments"),
    "fuse": ("frames_scored", "alerts"),
    "alert": ("alerts", "delivered", "delivery_failed"),
}
STAGE_KEYS_IF_ANY = {  # shown only when not zero: what went wrong, or housekeeping done
    "decode": ("refusals", "recording_segments", "recording_failures", "recording_deleted_early"),
    "fuse": ("detections_ignored", "alerts_unacknowledged", "alerts_held_in_memory", "stores_set_aside"),
    "alert": ("dead_letters", "store_failures", "log_failures", "pruned", "stores_set_aside"),
}


def format_summary(summary: RunSummary) -> str:
    lines = [f"vigil summary ({summary.wall_s:.1f} s wall time{', interrupted' if summary.interrupted else ''})"]
    for instance, counters in sorted(summary.counters.items(), key=lambda item: _order(item[0])):
        stage = instance.split(":", 1)[0]
        keys = STAGE_KEYS.get(stage, tuple(sorted(counters)))
        keys += tuple(key for key in STAGE_KEYS_IF_ANY.get(stage, ()) if counters.get(key))
        shown = ", ".join(f"{key.replace('_', ' ')} {counters.get(key, 0)}" for key in keys)
        lines.append(f"  {instance:<22} {shown}")
    analysed = total(summary.counters, "detect", "frames_analysed")
    if summary.wall_s > 0 and any(instance.startswith("detect") for instance in summary.counters):
        lines.append(f"  throughput: {analysed / summary.wall_s:.1f} analysed frames/s over the whole run")
    for camera in sorted(set(summary.cameras) | set(summary.camera_errors)):
        lines.append("  " + camera_summary(camera, summary))
    lines += [f"  {line}" for line in crossings_summary(summary.crossings)]
    for instance, reason in sorted(summary.failed.items()):
        lines.append(f"  FAILED {instance}: {reason}")
    return "\n".join(lines)


def crossings_summary(crossings: dict[str, int]) -> list[str]:
    """``line plaza/walkway: 8 crossings (5 going left, 3 going right)``, one per line crossed."""
    by_line: dict[tuple[str, str], dict[str, int]] = {}
    for key, count in crossings.items():
        camera, direction, line = split_crossing_key(key)
        by_line.setdefault((camera, line), {})[direction] = count
    out = []
    for (camera, line), counts in sorted(by_line.items()):
        each = ", ".join(f"{n} going {direction}" for direction, n in sorted(counts.items()))
        total = sum(counts.values())
        out.append(f"line {camera}/{line}: {total} crossing{'s' * (total != 1)} ({each})")
    return out


def camera_summary(camera: str, summary: RunSummary) -> str:
    """``camera door: stopped (end of file), 3 reconnects, 1 stall`` or the error that ended it."""
    view = summary.cameras.get(camera)
    counters = summary.counters.get(f"decode:{camera}", {})
    text = f"camera {camera}: {view.state.label if view else 'never started'}"
    error = summary.camera_errors.get(camera)
    detail = error or (view.detail if view and view.state is not CameraState.STREAMING else None)
    if detail:
        text += f" ({detail})"
    reconnects, stalls = counters.get("reconnects", 0), counters.get("stalls", 0)
    if reconnects or stalls:
        text += f", {reconnects} reconnect{'s' * (reconnects != 1)}, {stalls} stall{'s' * (stalls != 1)}"
    return text


def _order(instance: str) -> tuple[int, str]:
    order = ["decode", "detect", "transcribe", "fuse", "alert"]
    stage = instance.split(":", 1)[0]
    return (order.index(stage) if stage in order else len(order), instance)
