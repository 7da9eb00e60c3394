"""detect: runs the object detector on frames from every camera, batching across cameras, and sends
``Detections`` (with the frame, for the snapshot) on to fuse. End of stream is forwarded in order."""

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


def run(ctx: StageContext) -> None:
    settings = ctx.config.stages.detect
    receiver = ctx.receiver(ctx.endpoints.detect, queue=max(2, settings.batch))
    sender = ctx.sender(ctx.endpoints.fuse, queue=256, policy=Backpressure.BLOCK)
    try:
        detector = create_detector(settings.model_copy(update={"device": ctx.local_device}))
    except DetectorError as exc:
        raise PermanentStageError(str(exc)) from exc
    logger.info("detector ready: %s %s on %s", settings.backend, settings.model, settings.device)
    ctx.report("ready")
    while not ctx.should_stop():
        ctx.beat()
        first = receiver.recv(timeout_ms=100)
        if first is None:
            continue
        frames, ends = gather_batch(receiver, first, settings.batch)
        if frames:
            started = time.perf_counter()
            results = detector.detect([frame.image for frame in frames])
            ctx.counters["detect_ms_total"] += int((time.perf_counter() - started) * 1000)
            ctx.counters["batches"] += 1
            for frame, boxes in zip(frames, results, strict=True):
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
            ctx.counters["frames_analysed"] += len(frames)
        for end in ends:
            sender.send_control(end)
    receiver.close()
