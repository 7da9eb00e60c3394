"""The stage process base: per-process setup, device and thread pinning, heartbeat, clean stop.

A stage is a function ``run(ctx: StageContext) -> None`` in a module under ``stages/``. The supervisor
starts each stage instance in its own process (``spawn``) through ``stage_main``, which prepares the
process *before* the stage module (and torch, ultralytics, ...) is imported.
"""

from __future__ import annotations

import ctypes
import importlib
import logging
import os
import signal
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from types import FrameType

import zmq

from pipeline.config import VigilConfig, redact
from pipeline.logs import configure_logging
from pipeline.messages import Status
from pipeline.metrics import Histogram
from pipeline.security import KeyFileError, TcpLinks
from pipeline.transport import (
    AckedSender,
    AckingReceiver,
    Backpressure,
    Endpoints,
    Outbox,
    Receiver,
    Sender,
    StatusReporter,
    StopRequestedError,
)

logger = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_CRASH = 1
EXIT_PERMANENT = 3  # failed for good (bad input, missing model): restarting cannot help
HEARTBEAT_S = 1.0
START_POLL_S = 0.02  # how often a held decoder looks for its start file
SEND_LINGER_MS = 3000  # what is still queued (the end of stream, the last frames) gets this long to leave
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMEXPR_NUM_THREADS")


class PermanentStageError(RuntimeError):
    """Raised by a stage when restarting it cannot help (the exit code tells the supervisor)."""


class RestartStageError(RuntimeError):
    """Raised by a stage that must start again to recover (the alert sink finding its outbox damaged
    while it runs: its next start sets the file aside). Restarted as a crash is; logged in one line."""


@dataclass(frozen=True)
class StageSpec:
    """What the supervisor needs to start one stage instance."""

    name: str
    instance: str
    target: str  # "module:function"
    device: str
    threads: int
    cpus: tuple[int, ...] | None
    endpoints: Endpoints
    camera: str | None = None
    run_id: str = "run"  # makes alert ids unique per run and stable across stage restarts
    nice: int = 0
    scheduler: str = "normal"  # or "idle": SCHED_IDLE (pipeline.stage_settings.stage_scheduler)
    replica: int = 0  # which of the stage's replicas this is (its own input address)
    start_file: str | None = None  # a decoder starts its camera once this file exists (the others are ready)
    compute_lock: str | None = None  # detect and transcribe take turns on the CPU through this file
    # a decoder at the end of its file keeps its connections open until stopped (its host runs the
    # alert sink, which ends the run): a PUSH socket that disconnects loses what the receiver has
    # not read from the kernel yet (pipeline.transport.Outbox)
    hold_at_end: bool = False


@dataclass
class StageContext:
    """Everything a running stage sees; created inside the child process."""

    spec: StageSpec
    config: VigilConfig
    zmq_context: zmq.Context
    counters: Counter[str] = field(default_factory=Counter)
    histograms: dict[str, Histogram] = field(default_factory=dict)
    crossings: dict[str, int] = field(default_factory=dict)  # totals so far (see Status.crossings): set, not added
    armed: dict[str, int] = field(default_factory=dict)  # scheduled rules' states now (see Status.armed)
    deliveries: dict[str, int] = field(default_factory=dict)  # per destination, set (see Status.deliveries)
    _histogram_lock: threading.Lock = field(default_factory=threading.Lock)
    stop_event: threading.Event = field(default_factory=threading.Event)
    last_beat: float | None = None  # None while the stage sets up (loading a model may take long)
    links: TcpLinks | None = None  # tcp tuning and CURVE keys, for every socket this stage opens
    _reporter: StatusReporter | None = None

    @property
    def endpoints(self) -> Endpoints:
        return self.spec.endpoints

    @property
    def local_device(self) -> str:
        """The device as this process sees it: ``cuda:N`` is pinned with CUDA_VISIBLE_DEVICES=N,
        so inside the stage it is ``cuda:0``."""
        return "cuda:0" if self.spec.device.startswith("cuda:") else "cpu"

    def beat(self) -> None:
        """Called by the stage's main loop: heartbeats stop when the loop stops turning."""
        self.last_beat = time.monotonic()

    @property
    def replay_fast(self) -> bool:
        return self.config.runtime.mode == "fast"

    def should_stop(self) -> bool:
        return self.stop_event.is_set()

    def idle(self, seconds: float) -> None:
        """Wait (interrupted by a stop) while still beating: waiting on purpose is not hanging."""
        deadline = time.monotonic() + seconds
        while not self.stop_event.is_set() and (left := deadline - time.monotonic()) > 0:
            self.beat()
            self.stop_event.wait(min(left, HEARTBEAT_S))

    def wait_to_start(self) -> bool:
        """Wait (beating) until the supervisor says the other stages are ready (``spec.start_file``
        exists); False when stopped meanwhile."""
        while self.spec.start_file is not None and not os.path.exists(self.spec.start_file):
            if self.stop_event.is_set():
                return False
            self.idle(START_POLL_S)
        return not self.stop_event.is_set()

    def waiting_to_send(self) -> bool:
        """Called while the stage waits for a receiver: it beats, and says whether to stop waiting."""
        self.beat()  # blocked by backpressure: downstream is slow, this stage is not stuck
        return self.stop_event.is_set()

    def sender(
        self,
        stage: str,
        *,
        queue: int = 8,
        policy: Backpressure = Backpressure.BLOCK,
        replica: int = 0,
        outbox: Outbox | None = None,
    ) -> Sender:
        """A PUSH socket to ``stage``'s input (its replica ``replica``), wherever it runs; in
        ``outbox`` when the stage must see its messages delivered before it ends."""
        endpoint = self.endpoints.connect(stage, replica)
        context = outbox.context if outbox is not None else self.zmq_context
        sender = Sender(
            context, endpoint, queue=queue, policy=policy, should_stop=self.waiting_to_send, links=self.links
        )
        return outbox.add(sender) if outbox is not None else sender

    def receiver(self, *, queue: int = 8) -> Receiver:
        """This stage's own input (a bound PULL socket)."""
        address = self.endpoints.bind(self.spec.name, self.spec.replica)
        return Receiver(self.zmq_context, address, queue=queue, links=self.links)

    def acked_sender(self, stage: str) -> AckedSender:
        return AckedSender(self.zmq_context, self.endpoints.connect(stage), links=self.links)

    def acking_receiver(self) -> AckingReceiver:
        return AckingReceiver(self.zmq_context, self.endpoints.bind(self.spec.name), links=self.links)

    def observe(self, name: str, seconds: float) -> None:
        """Add a latency to the stage's histogram ``name`` (reported with every status)."""
        with self._histogram_lock:
            self.histograms.setdefault(name, Histogram()).observe(seconds)

    def report(self, state: str = "running", detail: str | None = None, camera: str | None = None) -> None:
        """Send a status now (also used for camera states and end-of-stream notices)."""
        if self._reporter is None:
            return
        self._reporter.send(
            Status(
                stage=self.spec.name,
                instance=self.spec.instance,
                wall_time=time.time(),
                counters=dict(self.counters),
                histograms=_histograms_on_wire(self),
                crossings=dict(self.crossings),
                armed=dict(self.armed),
                deliveries=dict(self.deliveries),
                state=state,
                detail=redact(detail) if detail else None,
                camera=camera if camera is not None else self.spec.camera,
            )
        )


def _histograms_on_wire(ctx: StageContext) -> dict[str, list[float]]:
    with ctx._histogram_lock:
        return {name: hist.to_wire() for name, hist in ctx.histograms.items()}


def _die_with_parent() -> None:
    """Ask Linux to SIGTERM this process when the supervisor dies, so nothing is left behind."""
    if sys.platform != "linux":
        return
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        logger.debug("prctl unavailable; the stage will not follow its parent's death")


def pin_process(
    device: str, threads: int, cpus: tuple[int, ...] | None, nice: int = 0, scheduler: str = "normal"
) -> None:
    """Device, thread and CPU pinning and scheduling priority; must run before torch / onnxruntime
    / cv2 are imported, and before the stage starts threads (they inherit the class and niceness)."""
    if nice > 0:
        os.nice(nice)
    if scheduler == "idle":
        run_when_idle()
    os.environ["CUDA_VISIBLE_DEVICES"] = device.split(":", 1)[1] if device.startswith("cuda:") else ""
    for name in THREAD_ENV:
        os.environ[name] = str(threads)
    os.environ.setdefault("YOLO_OFFLINE", "1")
    if cpus:
        try:
            os.sched_setaffinity(0, set(cpus))
        except (OSError, AttributeError) as exc:
            logger.warning("cannot pin to cpus %s: %s", cpus, exc)


def run_when_idle() -> None:
    """Moves this process into the idle scheduling class (SCHED_IDLE); where the platform has none,
    it runs at niceness 19 instead."""
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError) as exc:
        logger.info("no idle scheduling class here (%s); running at niceness 19 instead", exc)
        os.nice(19 - os.nice(0))


def _heartbeat(ctx: StageContext, stale_s: float) -> None:
    """Reports every second while the stage sets up, or while its main loop keeps beating; a loop
    stuck for ``stale_s`` goes silent, and the supervisor restarts the stage."""
    while not ctx.stop_event.wait(HEARTBEAT_S):
        if ctx.last_beat is None or time.monotonic() - ctx.last_beat < stale_s:
            ctx.report()


def stage_main(spec: StageSpec, config: VigilConfig, log_level: int = logging.INFO) -> None:
    """Child-process entry point (picklable for the spawn start method)."""
    _die_with_parent()
    configure_logging(spec.instance, log_level)
    if config.runtime.mode != "fast":
        # Live stages interleave on shared cores, and OpenMP threads that spin while they wait for
        # work take CPU the others need: with 4 cameras on 2 cores, PASSIVE analysed more frames with
        # lower detection and keyword latency. In fast replay detect saturates the cores and short
        # spins help it (PASSIVE cost 8 %). An OMP_WAIT_POLICY set by the user wins.
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    pin_process(spec.device, spec.threads, spec.cpus, spec.nice, spec.scheduler)
    ctx = StageContext(spec=spec, config=config, zmq_context=zmq.Context())

    def on_term(signum: int, frame: FrameType | None) -> None:
        ctx.stop_event.set()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the supervisor's to handle
    ctx._reporter = StatusReporter(ctx.zmq_context, spec.endpoints.status)
    stale_s = config.runtime.heartbeat_timeout_s / 2
    heartbeat = threading.Thread(target=_heartbeat, args=(ctx, stale_s), daemon=True, name="heartbeat")
    heartbeat.start()
    code = EXIT_OK
    try:
        module_name, function_name = spec.target.split(":")
        run = getattr(importlib.import_module(module_name), function_name)
        ctx.report("starting")
        binds, connects = spec.endpoints.tcp_roles({spec.name})
        ctx.links = TcpLinks.from_config(ctx.zmq_context, config.network, binds=binds, connects=connects)
        run(ctx)
    except StopRequestedError:
        ctx.report("stopped")  # asked to stop while waiting on a slow or absent downstream stage
    except (PermanentStageError, KeyFileError) as exc:
        logger.error("%s failed for good: %s", spec.instance, redact(str(exc)))
        ctx.report("failed", str(exc))
        code = EXIT_PERMANENT
    except RestartStageError as exc:
        logger.error("%s restarts: %s", spec.instance, redact(str(exc)))
        ctx.report("crashed", str(exc))
        code = EXIT_CRASH
    except Exception as exc:
        logger.exception("%s crashed: %s", spec.instance, redact(str(exc)))
        ctx.report("crashed", f"{type(exc).__name__}: {exc}")
        code = EXIT_CRASH
    else:
        ctx.report("stopped")
    finally:
        ctx.stop_event.set()
        if ctx.links is not None:
            ctx.links.close()
        ctx._reporter.close()
        ctx.zmq_context.destroy(linger=SEND_LINGER_MS)
    logging.shutdown()
    sys.exit(code)
