"""What the supervisor keeps about a run: each stage process, each camera's state, and the summary
the run ends with (its exit code)."""

from __future__ import annotations

import multiprocessing.process
import time
from dataclasses import dataclass, field

from pipeline.camera_state import CameraState
from pipeline.messages import Status
from pipeline.stage import StageSpec


@dataclass
class StageProcess:
    spec: StageSpec
    process: multiprocessing.process.BaseProcess | None = None
    restarts: int = 0
    next_start: float = 0.0
    last_seen: float = field(default_factory=time.monotonic)
    finished: bool = False  # exited 0 on its own (a decoder at end of file)
    held: bool = False  # a decoder whose camera waits for the other stages to be ready
    failed: str | None = None  # failed for good, with the reason
    last_status: Status | None = None


@dataclass(frozen=True)
class CameraView:
    """A camera's latest published state, as the supervisor saw it."""

    state: CameraState
    detail: str | None
    since: float  # monotonic time of the change


@dataclass
class RunSummary:
    """What the run did, for the end-of-run summary and the exit code."""

    counters: dict[str, dict[str, int]]
    failed: dict[str, str]
    cameras_done: set[str]
    camera_errors: dict[str, str]
    cameras: dict[str, CameraView]
    wall_s: float
    interrupted: bool
    crossings: dict[str, int] = field(default_factory=dict)  # "camera/direction/line" -> line crossings

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0
