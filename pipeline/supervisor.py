"""Start every stage instance as its own process, watch them, restart crashes, stop cleanly.

Like Frigate's watchdog: a crashed stage is rebuilt from its spec with exponential backoff; a stage
silent for ``heartbeat_timeout_s`` is killed and restarted; one that failed for good (exit code
``EXIT_PERMANENT``) or crashed more than ``max_restarts`` times is left down and makes the exit code
non-zero. The run ends when every camera's end of stream has reached the alert sink, or on
Ctrl-C / SIGTERM, after which every stage gets ``stop_timeout_s`` to stop before it is killed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import multiprocessing
import multiprocessing.context
import os
import shutil
import signal
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from types import FrameType

import zmq

from pipeline.camera_state import CameraState
from pipeline.config import VigilConfig
from pipeline.messages import Status
from pipeline.metrics import Histogram, MetricsServer, Snapshot, StageView, sample_process
from pipeline.run_state import CameraView, RunSummary, StageProcess
from pipeline.stage import EXIT_OK, EXIT_PERMANENT, StageSpec, stage_main
from pipeline.stage_specs import build_specs, select_specs, with_host_files
from pipeline.transport import Endpoints, Receiver

logger = logging.getLogger(__name__)

BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0
END_GRACE_S = 30.0


class Supervisor:
    def __init__(
        self,
        config: VigilConfig,
        *,
        on_tick: Callable[[Supervisor], None] | None = None,
        on_status: Callable[[Status], None] | None = None,
        tick_s: float = 0.5,
        log_level: int = logging.INFO,
        specs: list[StageSpec] | None = None,
        only: list[str] | None = None,
    ) -> None:
        self.config = config
        self._on_tick = on_tick
        self._on_status_hook = on_status
        self._tick_s = tick_s
        self._log_level = log_level
        self._own_ipc_dir = config.runtime.ipc_dir is None
        self._ipc_dir = config.runtime.ipc_dir or tempfile.mkdtemp(prefix="vigil-")
        self._status_dir = tempfile.mkdtemp(prefix="vigil-status-")  # this host's own, even beside others
        self.endpoints = Endpoints.for_network(config.network, self._ipc_dir, self._status_dir)
        self.run_id = uuid.uuid4().hex
        if specs is not None:  # given (tests, embedding): they report to this supervisor's status socket
            status = self.endpoints.status
            specs = [dataclasses.replace(s, endpoints=dataclasses.replace(s.endpoints, status=status)) for s in specs]
        else:
            specs = (
                select_specs(config, self.endpoints, only, self.run_id)
                if only is not None
                else build_specs(config, self.endpoints, self.run_id)
            )
        self._start_file = os.path.join(self._status_dir, "cameras-start")
        specs = with_host_files(specs, config, self._start_file, os.path.join(self._status_dir, "compute.lock"))
        self.stages = [StageProcess(spec, held=spec.start_file is not None) for spec in specs]
        self._ready: set[str] = set()  # instances that reported their models loaded
        self.counters: dict[str, dict[str, int]] = {}
        self.cameras_done: set[str] = set()
        self._camera_deadlines: dict[str, float] = {}
        self.end_grace_s = END_GRACE_S
        self.camera_errors: dict[str, str] = {}
        self.camera_states: dict[str, CameraView] = {}
        self.histograms: dict[str, dict[str, Histogram]] = {}
        self.crossings: dict[str, dict[str, int]] = {}  # per fuse instance, see Status.crossings
        self.armed: dict[str, dict[str, int]] = {}  # per fuse instance, see Status.armed
        self.deliveries: dict[str, dict[str, int]] = {}  # per alert instance, see Status.deliveries
        self._metrics_lock = threading.Lock()
        self.metrics: MetricsServer | None = None
        self._stop_signal: int | None = None
        self._mp = multiprocessing.get_context("spawn")
        self.started_at = time.monotonic()

    # ----- lifecycle -------------------------------------------------------------------------
    def run(self) -> RunSummary:
        """Run until every camera has ended (or a stop signal); returns the summary."""
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        context = zmq.Context()
        status = Receiver(context, self.endpoints.status, queue=10_000)
        self._start_metrics()
        try:
            for stage in self.stages:
                self._start(stage)
            self._watch(status)
        finally:
            self._stop_all()
            self._drain(status)  # the stages' final counters, sent as they stopped
            self._note_late_failures()
            if self._on_tick:
                self._on_tick(self)
            status.close()
            context.destroy(linger=0)
            if self.metrics is not None:
                self.metrics.stop()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            if self._own_ipc_dir:
                shutil.rmtree(self._ipc_dir, ignore_errors=True)
            shutil.rmtree(self._status_dir, ignore_errors=True)
        return self.summary()

    def summary(self) -> RunSummary:
        return RunSummary(
            counters=self.counters,
            failed={s.spec.instance: s.failed for s in self.stages if s.failed},
            cameras_done=set(self.cameras_done),
            camera_errors=dict(self.camera_errors),
            cameras=dict(self.camera_states),
            crossings={key: n for tally in self.crossings.values() for key, n in tally.items()},
            wall_s=time.monotonic() - self.started_at,
            interrupted=self._stop_signal is not None,
        )

    def request_stop(self) -> None:
        """Stop the run as Ctrl-C would (for embedding and tests)."""
        self._stop_signal = signal.SIGTERM

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self._stop_signal is None:
            logger.info("stopping (signal %s)", signal.Signals(signum).name)
        self._stop_signal = signum

    def _start(self, stage: StageProcess) -> None:
        process = self._mp.Process(
            target=stage_main,
            args=(stage.spec, self.config, self._log_level),
            name=f"vigil-{stage.spec.instance}",
            daemon=False,
        )
        process.start()
        stage.process = process
        stage.last_seen = time.monotonic()
        logger.debug("started %s (pid %s)", stage.spec.instance, process.pid)

    def _watch(self, status: Receiver) -> None:
        last_tick = 0.0
        while self._stop_signal is None and not self._all_cameras_done():
            message = status.recv(timeout_ms=100)
            while message is not None:
                if isinstance(message, Status):
                    self._on_status(message)
                message = status.recv_nowait()
            self._release_cameras()
            self._check_processes()
            if self._core_stage_failed():
                logger.error("a stage every camera needs has failed for good; stopping")
                return
            now = time.monotonic()
            if self._on_tick and now - last_tick >= self._tick_s:
                last_tick = now
                self._on_tick(self)

    def _release_cameras(self) -> None:
        """Let the decoders start once every other stage here is ready (or down for good), or once
        ``runtime.cameras_wait_s`` has passed: frames captured while a model loads would only queue."""
        held = [stage for stage in self.stages if stage.held]
        if not held:
            return
        waiting = [
            stage.spec.instance
            for stage in self.stages
            if stage.spec.name != "decode" and stage.spec.instance not in self._ready and not stage.failed
        ]
        waited = time.monotonic() - self.started_at
        if waiting and waited < self.config.runtime.cameras_wait_s:
            return
        if waiting:
            logger.warning("starting the cameras although %s not ready after %.0f s", ", ".join(waiting), waited)
        else:
            logger.info("stages ready after %.1f s; starting %d camera(s)", waited, len(held))
        with open(self._start_file, "w", encoding="utf-8"):
            pass
        for stage in held:
            stage.held = False

    def _drain(self, status: Receiver) -> None:
        message = status.recv(timeout_ms=50)
        while message is not None:
            if isinstance(message, Status):
                self._on_status(message)
            message = status.recv(timeout_ms=50)

    def _all_cameras_done(self) -> bool:
        """Every camera's end of stream reached the alert sink; on a host without the sink (stages
        spread over hosts), every stage here finished on its own (decoders at the end of a file)."""
        now = time.monotonic()
        self.cameras_done.update(cam for cam, deadline in self._camera_deadlines.items() if now >= deadline)
        if set(self.config.cameras) <= self.cameras_done:
            return True
        has_sink = any(stage.spec.name == "alert" for stage in self.stages)
        return not has_sink and all(stage.finished or stage.failed for stage in self.stages)

    def _core_stage_failed(self) -> bool:
        return any(s.failed for s in self.stages if s.spec.name != "decode")

    def _on_status(self, status: Status) -> None:
        if self._on_status_hook is not None:
            self._on_status_hook(status)
        with self._metrics_lock:
            self._record_status(status)

    def _record_status(self, status: Status) -> None:
        stage = next((s for s in self.stages if s.spec.instance == status.instance), None)
        if stage is not None:
            stage.last_seen = time.monotonic()
            stage.last_status = status
        if status.state == "ready":
            self._ready.add(status.instance)
        self.counters[status.instance] = status.counters
        if status.crossings:
            self.crossings[status.instance] = status.crossings
        if status.armed:
            self.armed[status.instance] = status.armed
        if status.deliveries:
            self.deliveries[status.instance] = status.deliveries
        if status.histograms:
            self.histograms[status.instance] = {
                name: Histogram.from_wire(values) for name, values in status.histograms.items()
            }
        camera_state = CameraState.from_status(status.state)
        if status.state == "camera-done" and status.camera:
            self.cameras_done.add(status.camera)
        elif camera_state is not None and status.camera:
            self._on_camera_state(status.camera, camera_state, status.detail)
        elif status.state in ("failed", "crashed") and status.detail:
            logger.debug("%s reported %s: %s", status.instance, status.state, status.detail)

    def _on_camera_state(self, camera: str, state: CameraState, detail: str | None) -> None:
        previous = self.camera_states.get(camera)
        if previous is None or previous.state != state or previous.detail != detail:
            since = previous.since if previous is not None and previous.state == state else time.monotonic()
            self.camera_states[camera] = CameraView(state, detail, since)
        if state is CameraState.FAILED:
            self.camera_errors[camera] = detail or "failed"

    # ----- metrics ---------------------------------------------------------------------------
    def _start_metrics(self) -> None:
        address = self.config.runtime.metrics_address
        if address is None:
            return
        try:
            self.metrics = MetricsServer(address, self.snapshot).start()
        except OSError as exc:
            logger.error("metrics: cannot listen on %s (%s); running without /metrics and /healthz", address, exc)
            return
        logger.info("metrics at %s/metrics, health at %s/healthz", self.metrics.url, self.metrics.url)

    def snapshot(self) -> Snapshot:
        """Every stage's state and figures now, for /metrics and /healthz (any thread)."""
        now = time.monotonic()
        with self._metrics_lock:
            views = [self._view(stage, now) for stage in self.stages]
            cameras = {camera: view.state.value for camera, view in self.camera_states.items()}
        states = tuple(state.value for state in CameraState)
        return Snapshot(views, cameras, states, self.config.runtime.heartbeat_timeout_s)

    def _view(self, stage: StageProcess, now: float) -> StageView:
        process, up, sample = stage.process, False, None
        if process is not None:
            try:
                up = process.is_alive()
                sample = sample_process(process.pid) if up and process.pid else None
            except ValueError:  # closed by the watch loop meanwhile
                up = False
        return StageView(
            instance=stage.spec.instance,
            stage=stage.spec.name,
            camera=stage.spec.camera,
            up=up,
            failed=stage.failed,
            restarts=stage.restarts,
            heartbeat_age_s=now - stage.last_seen,
            counters=dict(self.counters.get(stage.spec.instance, {})),
            histograms=dict(self.histograms.get(stage.spec.instance, {})),
            process=sample,
            crossings=dict(self.crossings.get(stage.spec.instance, {})),
            armed=dict(self.armed.get(stage.spec.instance, {})),
            deliveries=dict(self.deliveries.get(stage.spec.instance, {})),
        )

    def _check_processes(self) -> None:
        now = time.monotonic()
        timeout = self.config.runtime.heartbeat_timeout_s
        for stage in self.stages:
            if stage.failed or stage.finished:
                continue
            process = stage.process
            if process is None:
                if now >= stage.next_start:
                    self._start(stage)
                continue
            if process.is_alive():
                if now - stage.last_seen > timeout:
                    logger.error("%s sent no heartbeat for %.0f s; restarting it", stage.spec.instance, timeout)
                    process.kill()
                    process.join(5)
                    self._schedule_restart(stage, "no heartbeat")
                continue
            code = process.exitcode
            process.close()
            stage.process = None
            if code == EXIT_OK:
                stage.finished = True
            elif code == EXIT_PERMANENT:
                detail = stage.last_status.detail if stage.last_status else None
                stage.failed = detail or "failed for good"
                self._camera_gave_up(stage)
            else:
                self._schedule_restart(stage, f"exit code {code}")

    def _camera_gave_up(self, stage: StageProcess) -> None:
        """A decoder down for good: its in-band end of stream should still reach the alert sink,
        which then reports the camera done; if it never does, the camera counts as done anyway
        after a grace period, so the run can end."""
        camera = stage.spec.camera
        if camera:
            self.camera_errors.setdefault(camera, stage.failed or "failed")
            self._camera_deadlines[camera] = time.monotonic() + self.end_grace_s

    def _schedule_restart(self, stage: StageProcess, why: str) -> None:
        stage.process = None
        if stage.restarts >= self.config.runtime.max_restarts:
            stage.failed = f"crashed {stage.restarts + 1} times ({why})"
            logger.error("%s failed for good: %s", stage.spec.instance, stage.failed)
            self._camera_gave_up(stage)
            return
        delay = min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2**stage.restarts)
        stage.restarts += 1
        stage.next_start = time.monotonic() + delay
        logger.warning(
            "%s stopped (%s); restart %d/%d in %.1f s",
            stage.spec.instance,
            why,
            stage.restarts,
            self.config.runtime.max_restarts,
            delay,
        )

    def _note_late_failures(self) -> None:
        """A stage that failed for good as the run ended: a decoder whose source broke can still be
        closing its sockets when its camera's end of stream has already ended the run, and the
        SIGTERM that stops it then may even end its interpreter's shutdown (exit code -15). Its last
        report ("failed", drained once every process stopped) or its exit code says so, and the run
        fails as it would have a moment later."""
        for stage in self.stages:
            process = stage.process
            reported = stage.last_status.state if stage.last_status else None
            exited = process.exitcode if process is not None else None
            if stage.failed or (reported != "failed" and exited != EXIT_PERMANENT):
                continue
            detail = stage.last_status.detail if stage.last_status else None
            stage.failed = detail or "failed for good"
            logger.error("%s failed for good: %s", stage.spec.instance, stage.failed)
            if stage.spec.camera:
                self.camera_errors.setdefault(stage.spec.camera, stage.failed)

    def _stop_all(self) -> None:
        """SIGTERM decoders first, then the rest; kill whatever is still alive after the timeout."""
        alive = [s.process for s in reversed(self.stages) if s.process is not None and s.process.is_alive()]
        for process in alive:
            if process.pid is not None:
                with contextlib.suppress(ProcessLookupError, OSError):
                    process.terminate()
        deadline = time.monotonic() + self.config.runtime.stop_timeout_s
        for process in alive:
            process.join(max(0.0, deadline - time.monotonic()))
        for process in alive:
            if process.is_alive():
                logger.warning("%s did not stop in time; killing it", process.name)
                process.kill()
                process.join(2)
