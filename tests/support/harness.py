"""Run some of the pipeline's stages as real processes under the real supervisor, with the test
standing in for the stage downstream of them: a ``Collector`` binds that stage's real ZeroMQ
endpoint and records what arrives. Every status event is kept with its arrival time, so a test can
tell exactly when a camera went from one state to another.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import zmq

from pipeline.camera_state import CameraState
from pipeline.config import VigilConfig
from pipeline.messages import Detections, EndOfStream, Frame, Message, Status
from pipeline.stage_specs import build_specs
from pipeline.supervisor import RunSummary, Supervisor
from pipeline.transport import Endpoints, Receiver


@dataclass(frozen=True)
class Arrival:
    """One data message as the collector got it (``received`` is wall time)."""

    camera: str
    pts: float
    sent: float
    received: float
    shape: tuple[int, ...]


class Collector:
    """Binds ``endpoint`` in a thread and records every Frame or Detections that arrives."""

    def __init__(self, endpoint: str) -> None:
        self.endpoint = endpoint
        self.arrivals: list[Arrival] = []
        self.ends: list[EndOfStream] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._error: zmq.ZMQError | None = None
        self._thread = threading.Thread(target=self._run, daemon=True, name="collector")

    def __enter__(self) -> Collector:
        self._thread.start()
        self._ready.wait(5)
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        context = zmq.Context()
        try:
            receiver = Receiver(context, self.endpoint, queue=1000)
        except zmq.ZMQError as exc:
            self._error = exc
            context.destroy(linger=0)
            return
        finally:
            self._ready.set()
        try:
            while not self._stop.is_set():
                message = receiver.recv(timeout_ms=50)
                if message is not None:
                    self._record(message)
        finally:
            receiver.close()
            context.destroy(linger=0)

    def _record(self, message: Message) -> None:
        if isinstance(message, Frame | Detections):
            arrival = Arrival(message.camera, message.pts, message.wall_time, time.time(), message.image.shape)
        elif isinstance(message, EndOfStream):
            with self._lock:
                self.ends.append(message)
            return
        else:
            return
        with self._lock:
            self.arrivals.append(arrival)

    def of(self, camera: str, since: float = 0.0) -> list[Arrival]:
        """What arrived from ``camera`` at or after wall time ``since``."""
        with self._lock:
            return [a for a in self.arrivals if a.camera == camera and a.received >= since]


@dataclass
class StatusLog:
    """Every status event the supervisor received, with the wall time it arrived."""

    events: list[tuple[float, Status]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, status: Status) -> None:
        with self._lock:
            self.events.append((time.time(), status))

    def states(self, camera: str, since: float = 0.0) -> list[tuple[float, CameraState, str | None]]:
        """The camera's state changes (as published) at or after wall time ``since``."""
        with self._lock:
            events = list(self.events)
        out = []
        for received, status in events:
            state = CameraState.from_status(status.state)
            if state is not None and status.camera == camera and received >= since:
                out.append((received, state, status.detail))
        return out

    def first(self, camera: str, state: CameraState, since: float = 0.0) -> tuple[float, str | None] | None:
        """Wall time and detail of the first ``state`` the camera published at or after ``since``."""
        return next(((t, d) for t, s, d in self.states(camera, since) if s is state), None)

    def wait_for(self, camera: str, state: CameraState, since: float = 0.0, timeout: float = 30.0) -> float:
        """Wall time at which the camera reached ``state`` (after ``since``); fails after ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            hit = self.first(camera, state, since)
            if hit is not None:
                return hit[0]
            time.sleep(0.05)
        seen = [(round(t - since, 2), s.value, d) for t, s, d in self.states(camera, since)]
        raise AssertionError(f"camera {camera} did not reach {state.value} within {timeout} s; saw {seen}")


def wait_until(predicate: Callable[[], bool], timeout: float, every: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(every)
    return predicate()


def run_stages(
    config: VigilConfig,
    stages: Iterable[str],
    scenario: Callable[[Supervisor], None],
    status_log: StatusLog | None = None,
) -> RunSummary:
    """Run the named stages (``decode`` means every camera's decoder) under a real supervisor while
    ``scenario`` runs in a thread; the run stops when the scenario returns. A failure inside the
    scenario is raised here, after the stages have stopped."""
    assert config.runtime.ipc_dir is not None, "tests give every run its own ipc_dir"
    wanted = set(stages)
    endpoints = Endpoints.in_folder(Path(config.runtime.ipc_dir))
    specs = [spec for spec in build_specs(config, endpoints, "test") if spec.name in wanted]
    failure: list[BaseException] = []
    finished = threading.Event()
    supervisor = Supervisor(
        config,
        specs=specs,
        on_status=status_log,
        on_tick=lambda s: s.request_stop() if finished.is_set() else None,
        tick_s=0.1,
    )

    def run_scenario() -> None:
        try:
            scenario(supervisor)
        except BaseException as exc:  # re-raised in the test's thread below
            failure.append(exc)
        finally:
            finished.set()

    thread = threading.Thread(target=run_scenario, daemon=True, name="scenario")
    thread.start()
    summary = supervisor.run()
    finished.set()
    thread.join(10)
    if failure:
        raise failure[0]
    return summary


def rss_bytes(pids: Iterable[int]) -> int:
    """Total resident memory of the given processes (Linux /proc), skipping any that exited."""
    total = 0
    for pid in pids:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1]) * 1024
    return total


def stage_pids(supervisor: Supervisor) -> list[int]:
    return [s.process.pid for s in supervisor.stages if s.process is not None and s.process.pid is not None]
