"""detect: runs the object detector on frames from every camera, batching across cameras, and sends
``Detections`` (with the frame, for the snapshot) on to fuse. End of stream is forwarded in order.
In ``fast`` replay every frame is analysed; with live cameras (and ``realtime``) a detector that
falls behind takes each camera's newest frame and skips the older ones (counted)."""

from __future__ import annotations

import logging
import time

from pipeline.messages import Detections, EndOfStream, Frame, Message
from pipeline.stage import PermanentStageError, StageContext
from pipeline.transport import Backpressure, Receiver
from stages.detectors.base import DetectorError, create_detector

logger = logging.getLogger(__name__)


def gather_batch(receiver: Receiver, first: Message, size: int) -> tuple[list[Frame], list[EndOfStream]]:
    """Frames already waiting, up to ``size``; stops at an end of stream so order is kept."""
    frames: list[Frame] = []
    ends: list[EndOfStream] = []
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
    return frames, ends


MAX_DRAIN = 10_000  # messages read in one go when taking the freshest frames


def gather_freshest(receiver: Receiver, first: Message) -> tuple[list[Frame], list[EndOfStream], int]:
    """Live cameras: read everything waiting and keep only each camera's newest frame, so a
    detector that falls behind analyses what is happening now instead of working through a
    backlog; returns the frames, any ends of stream (reading stops at one, to keep order) and how
    many older frames were skipped."""
    newest: dict[str, Frame] = {}
    ends: list[EndOfStream] = []
    skipped = 0
    message: Message | None = first
    for _ in range(MAX_DRAIN):
        if message is None:
            break
        if isinstance(message, Frame):
            skipped += message.camera in newest
            newest[message.camera] = message
        elif isinstance(message, EndOfStream):
            ends.append(message)
            break
        else:
            logger.warning("detect ignores %s messages", message.kind)
        message = receiver.recv_nowait()
    return list(newest.values()), ends, skipped


def run(ctx: StageContext) -> None:
    settings = ctx.config.stages.detect
    receiver = ctx.receiver(ctx.endpoints.detect, queue=max(2, settings.batch))
    sender = ctx.sender(ctx.endpoints.fuse, queue=256, policy=Backpressure.BLOCK)
    try:
        detector = create_detector(settings.model_copy(update={"device": ctx.local_device}))
    except DetectorError as exc:
        raise PermanentStageError(str(exc)) from exc
    logger.info("detector ready: %s %s on %s", settings.backend, settings.model, settings.device)
    freshest = not ctx.replay_fast  # live and realtime: never work through a backlog of old frames
    ctx.report("ready")
    while not ctx.should_stop():
        ctx.beat()
        first = receiver.recv(timeout_ms=100)
        if first is None:
            continue
        if freshest:
            frames, ends, skipped = gather_freshest(receiver, first)
            ctx.counters["frames_skipped"] += skipped
            ctx.counters["queue_depth"] = len(frames) + skipped
        else:
            frames, ends = gather_batch(receiver, first, settings.batch)
            ctx.counters["queue_depth"] = len(frames)
        for start in range(0, len(frames), settings.batch):
            batch = frames[start : start + settings.batch]
            started = time.perf_counter()
            results = detector.detect([frame.image for frame in batch])
            ctx.counters["detect_ms_total"] += int((time.perf_counter() - started) * 1000)
            ctx.counters["batches"] += 1
            done = time.time()
            for frame, boxes in zip(batch, results, strict=True):
                ctx.observe("capture_to_detection", done - frame.wall_time)
                sender.send(
                    Detections(
                        camera=frame.camera,
                        seq=frame.seq,
                        pts=frame.pts,
                        wall_time=frame.wall_time,
                        boxes=tuple(boxes),
                        image=frame.image,
                    )
                )
            ctx.counters["frames_analysed"] += len(batch)
        for end in ends:
            sender.send_control(end)
    receiver.close()
