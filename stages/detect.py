"""detect: runs the object detector on frames from every camera, batching across cameras, and sends
``Detections`` (with the frame, for the snapshot) on to fuse. End of stream is forwarded in order.
In ``fast`` replay every frame is analysed; with live cameras (and ``realtime``) a detector that
falls behind takes each camera's newest frame and skips the older ones (counted)."""

from __future__ import annotations

import functools
import logging
import math
import time
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from pipeline.compute_lock import ComputeLock
from pipeline.messages import Detections, EndOfStream, Frame, Message
from pipeline.metrics import ThroughputSpan
from pipeline.stage import PermanentStageError, StageContext
from pipeline.transport import Backpressure, Receiver, Sender
from stages.detectors.base import Detector, DetectorError, create_detector
from stages.detectors.lanes import DetectorLanes, LaneResult, model_copies
from stages.scene_classes import class_problems

logger = logging.getLogger(__name__)


def gather_batch(
    receiver: Receiver, first: Message, size: int, fill_s: float = 0.0
) -> tuple[list[Frame], list[EndOfStream]]:
    """Frames already waiting, up to ``size``, or arriving within ``fill_s`` while the batch is not
    full; stops at an end of stream so order is kept."""
    frames: list[Frame] = []
    ends: list[EndOfStream] = []
    deadline = time.monotonic() + fill_s
    message: Message | None = first
    while message is not None:
        if isinstance(message, Frame):
            frames.append(message)
        elif isinstance(message, EndOfStream):
            ends.append(message)
            break
        else:
            logger.warning("detect ignores %s messages", message.kind)
        if len(frames) >= size:
            break
        message = receiver.recv_nowait()
        left_ms = int(1000 * (deadline - time.monotonic()))
        if message is None and left_ms > 0:
            message = receiver.recv(timeout_ms=left_ms)
    return frames, ends


MAX_DRAIN = 10_000  # messages read in one go
# fast replay waits this long for a batch to fill: a smaller batch is a new input shape, which
# OpenCV's DNN allocates for again (40-100 ms more for YOLOv3-tiny, then again back at full size)
FAST_FILL_S = 0.5
FRESH_SLACK_S = 0.02  # transit and scheduling on top of one detection: a frame this young is fresh
LAG_WINDOW = 50  # frames per camera over which the least arrival lag (transit, clock offset) is taken


@dataclass
class FreshestFrames:
    """Live cameras: each camera's newest frame waits here (an older one it replaces is skipped and
    counted). The detector takes frames a camera at a time, the least recently served first, so no
    camera starves and no analysed frame is older than one camera interval plus one detection."""

    newest: dict[str, Frame] = field(default_factory=dict)
    served: dict[str, float] = field(default_factory=dict)
    lags: dict[str, deque[float]] = field(default_factory=dict)  # per camera: wall-clock age on arrival
    skipped: int = 0

    def add(self, frame: Frame) -> None:
        if frame.camera in self.newest:
            self.skipped += 1
        self.newest[frame.camera] = frame
        self.lags.setdefault(frame.camera, deque(maxlen=LAG_WINDOW)).append(time.time() - frame.wall_time)

    def age(self, frame: Frame, now_wall: float) -> float:
        """How long ``frame`` has waited here: its wall-clock age less the least age its camera's
        recent frames arrived with (the transit, and any clock offset between a decode host and
        this one, so a camera on a host whose clock is off is judged fairly)."""
        lags = self.lags.get(frame.camera)
        return now_wall - frame.wall_time - (min(lags) if lags else 0.0)

    def take(self, count: int, fresh_s: float = math.inf, *, skip_stale: bool = False) -> list[Frame]:
        """Up to ``count`` frames, one per camera: frames that arrived within ``fresh_s`` (while the
        detector was busy with the previous frame) first, then the least recently served camera
        first; a saturated detector thus analyses frames about as old as one detection, not a
        camera interval, and every camera still gets its turn. With ``skip_stale``, a frame that
        waited longer (passed over for a fresher one, or kept waiting while transcribe had the CPU)
        is skipped, not analysed late: the detector waits for a new frame instead, so cameras that
        deliver their frames at the same instants do not queue behind one another."""
        now_wall = time.time()
        stale = {camera for camera, frame in self.newest.items() if self.age(frame, now_wall) > fresh_s}
        if skip_stale:
            for camera in stale:
                del self.newest[camera]
            self.skipped += len(stale)

        def priority(camera: str) -> tuple[bool, float]:
            return camera in stale, self.served.get(camera, -math.inf)

        order = sorted(self.newest, key=priority)[:count]
        now = time.monotonic()
        for camera in order:
            self.served[camera] = now
        return [self.newest.pop(camera) for camera in order]

    def take_camera(self, camera: str) -> list[Frame]:
        frame = self.newest.pop(camera, None)
        return [frame] if frame is not None else []

    def __len__(self) -> int:
        return len(self.newest)


class Analyser:
    """Runs the detector on frames and sends their detections to fuse."""

    def __init__(self, ctx: StageContext, detector: Detector, sender: Sender, lock: ComputeLock) -> None:
        self.ctx = ctx
        self.detector = detector
        self.sender = sender
        self.lock = lock  # turns on the CPU with transcribe (pipeline.compute_lock)
        self.last_run_s = math.inf  # how long the latest detection took
        self.span = ThroughputSpan()

    def analyse(self, frames: list[Frame]) -> None:
        if not frames:
            return
        started, started_wall = time.perf_counter(), time.time()
        results = self.detector.detect([frame.image for frame in frames])
        self.deliver(frames, LaneResult(results, started, started_wall, time.perf_counter() - started))

    def deliver(self, frames: list[Frame], result: LaneResult) -> None:
        """Send the detections of ``frames`` (the model's ``result``) to fuse and count them."""
        run_s = self.last_run_s = result.run_s
        self.ctx.observe("detector_run", run_s)
        self.ctx.counters["detect_ms_total"] += int(run_s * 1000)
        self.ctx.counters["batches"] += 1
        done = result.began_wall + run_s
        for frame, boxes in zip(frames, result.boxes, strict=True):
            self.ctx.observe("capture_to_detector", result.began_wall - frame.wall_time)  # how long it waited
            self.ctx.observe("capture_to_detection", done - frame.wall_time)
            self.sender.send(
                Detections(
                    camera=frame.camera,
                    seq=frame.seq,
                    pts=frame.pts,
                    wall_time=frame.wall_time,
                    boxes=tuple(boxes),
                    image=frame.image,
                )
            )
        self.ctx.counters["frames_analysed"] += len(frames)
        self.span.count(self.ctx.counters, len(frames), began=result.began)

    def deliver_batch(self, frames: list[Frame], ends: list[EndOfStream], result: LaneResult | None) -> None:
        """A lane's batch in its turn: its detections, then the ends of stream that followed it."""
        if frames and result is not None:
            self.deliver(frames, result)
        for end in ends:
            self.sender.send_control(end)


def run_fast(ctx: StageContext, receiver: Receiver, analyser: Analyser) -> None:
    """File replay in ``fast`` mode: every frame, in batches of ``batch``."""
    batch = ctx.config.stages.detect.batch
    waited_s = 0.0  # for frames, once the first has arrived: decode (or the host) could not keep up
    while not ctx.should_stop():
        ctx.beat()
        began = time.perf_counter()
        first = receiver.recv(timeout_ms=100)
        if first is None:
            continue
        frames, ends = gather_batch(receiver, first, batch, FAST_FILL_S)
        if ctx.counters["frames_analysed"]:
            waited_s += time.perf_counter() - began
        ctx.counters["queue_depth"] = len(frames)
        with analyser.lock.turn():
            analyser.analyse(frames)
        for end in ends:
            analyser.sender.send_control(end)
        ctx.counters["input_wait_ms_total"] = int(waited_s * 1000)
        ctx.counters["compute_wait_ms_total"] = int(analyser.lock.waited_s * 1000)


LANES_DRAIN_S = 60.0  # on a stop, batches already handed to lanes are finished and sent for this long at most


def run_fast_lanes(ctx: StageContext, receiver: Receiver, analyser: Analyser, lanes: DetectorLanes) -> None:
    """File replay in ``fast`` mode with batch parallelism (``stages.detect.parallelism``): each
    batch of ``batch`` frames goes to the next free copy of the model; detections and ends of
    stream leave in the order the frames came. No compute lock: the copies share the cores with
    transcribe, as replicas do."""
    batch = ctx.config.stages.detect.batch
    ctx.counters["compute_wait_ms_total"] = 0  # no turns with transcribe (see above)
    while not ctx.should_stop():
        ctx.beat()
        lanes.check()  # a lane's failure ends the stage even while no frames come
        first = receiver.recv(timeout_ms=100)
        if first is None:
            continue
        frames, ends = gather_batch(receiver, first, batch, FAST_FILL_S)
        ctx.counters["queue_depth"] = len(frames)
        deliver = functools.partial(analyser.deliver_batch, frames, ends)
        while not lanes.submit([frame.image for frame in frames], deliver):
            ctx.beat()  # every lane busy and one batch waiting: the model is the bottleneck
        # a lane without a batch waited for frames (decode, or this loop, could not keep up)
        ctx.counters["input_wait_ms_total"] = int(1000 * lanes.idle_s / lanes.count)
    if not lanes.drain(LANES_DRAIN_S):
        logger.warning("stopping with batches still in the detector after %.0f s", LANES_DRAIN_S)


def drain(receiver: Receiver, first: Message | None, waiting: FreshestFrames) -> list[EndOfStream]:
    """Everything waiting on the socket (from ``first``): frames into ``waiting``; the ends of stream."""
    ends: list[EndOfStream] = []
    message = first
    for _ in range(MAX_DRAIN):
        if message is None:
            break
        if isinstance(message, Frame):
            waiting.add(message)
        elif isinstance(message, EndOfStream):
            ends.append(message)
        else:
            logger.warning("detect ignores %s messages", message.kind)
        message = receiver.recv_nowait()
    return ends


def run_live(ctx: StageContext, receiver: Receiver, analyser: Analyser) -> None:
    """Live cameras (and ``realtime`` replay): everything waiting is read at once, each camera's
    newest frame is kept, and up to ``live_batch`` of them are analysed, fairly across cameras. A frame
    is fresh while it is younger than one detection (plus slack): one that waited longer, for a
    detection of another camera's frame or for transcribe's turn on the CPU, is stale."""
    size = ctx.config.stages.detect.live_batch_size(ctx.local_device)
    skip_stale = ctx.config.stages.detect.skip_stale
    waiting = FreshestFrames()
    while not ctx.should_stop():
        ctx.beat()
        ends = drain(receiver, receiver.recv(timeout_ms=0 if waiting else 100), waiting)
        for end in ends:
            with analyser.lock.turn():
                analyser.analyse(waiting.take_camera(end.camera))  # its last frame, then its end
            analyser.sender.send_control(end)
        if waiting:
            with analyser.lock.turn():
                for end in drain(receiver, receiver.recv_nowait(), waiting):  # arrived during the wait
                    analyser.analyse(waiting.take_camera(end.camera))
                    analyser.sender.send_control(end)
                fresh_s = analyser.last_run_s + FRESH_SLACK_S
                frames = waiting.take(size, fresh_s, skip_stale=skip_stale)
                analyser.analyse(frames)
        ctx.counters["queue_depth"] = len(waiting)
        ctx.counters["frames_skipped"] = waiting.skipped
        ctx.counters["compute_wait_ms_total"] = int(analyser.lock.waited_s * 1000)


def warm_up(detector: Detector, batch: int, size: int) -> float:
    """One run on a full batch of blank ``size`` x ``size`` frames before the stage reports ready;
    returns its seconds. A model's first run allocates its buffers (OpenCV) or loads its kernels
    (CUDA): on the demo it took twice as long as the next (390 against 190 ms for YOLOv3-tiny at
    batch 4), and a camera's first frames should not wait for it."""
    blank = np.full((size, size, 3), 114, np.uint8)
    began = time.perf_counter()
    detector.detect([blank] * batch)
    return time.perf_counter() - began


def load_detectors(ctx: StageContext) -> Detector | DetectorLanes:
    """The configured detector, warmed up: in ``fast`` replay with batch parallelism, one copy per
    lane, each with one thread (``DetectorLanes``)."""
    settings = ctx.config.stages.detect.model_copy(update={"device": ctx.local_device})
    lanes = settings.lanes(ctx.config.runtime.mode)
    if lanes == 1:
        detector = create_detector(settings)
        first_run_s = warm_up(detector, settings.batch, settings.input_size)
    else:
        copies = model_copies(settings, lanes)
        first_run_s = max(warm_up(copy, settings.batch, settings.input_size) for copy in copies)
    names = detector.names if lanes == 1 else copies[0].names
    for setting, problem in class_problems(ctx.config, names, settings.model):
        logger.warning("%s: %s", setting, problem)
    logger.info(
        "detector ready: %s %s on %s, %s (first run %.0f ms)",
        settings.backend,
        settings.model,
        ctx.spec.device,
        f"{settings.threads} thread(s) per run" if lanes == 1 else f"{lanes} copies running batches side by side",
        1000 * first_run_s,
    )
    return detector if lanes == 1 else DetectorLanes(copies)


def run(ctx: StageContext) -> None:
    receiver = ctx.receiver(queue=max(2, ctx.config.stages.detect.batch))
    sender = ctx.sender("fuse", queue=256, policy=Backpressure.BLOCK)
    try:
        detector = load_detectors(ctx)
    except DetectorError as exc:
        raise PermanentStageError(str(exc)) from exc
    ctx.report("ready")
    analyser = Analyser(ctx, detector, sender, ComputeLock(ctx.spec.compute_lock))
    if isinstance(detector, DetectorLanes):
        try:
            run_fast_lanes(ctx, receiver, analyser, detector)
        finally:
            detector.close()
    elif ctx.replay_fast:
        run_fast(ctx, receiver, analyser)
    else:  # never work through a backlog of old frames
        run_live(ctx, receiver, analyser)
    receiver.close()
