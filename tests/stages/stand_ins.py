"""Stand-ins for stages, for faults that cannot be made for real on the test machine (imported by
module path inside spawned stage processes)."""

from __future__ import annotations

import time

from pipeline.messages import AudioChunk, EndOfStream, Transcript
from pipeline.stage import StageContext
from pipeline.transport import Backpressure
from stages.transcribe import input_queue

SLOW_TRANSCRIBE_S_PER_CHUNK = 0.5  # real time for the 0.5 s chunks: a large Whisper model on a small CPU


def slow_transcribe(ctx: StageContext) -> None:
    """transcribe on a machine too slow for its model: every audio chunk takes half a second of
    wall time per second of audio; it hears nothing, and its transcripts move fuse's watermark."""
    receiver = ctx.receiver(queue=input_queue(ctx))  # as the real stage
    sender = ctx.sender("fuse", queue=256, policy=Backpressure.BLOCK)
    ctx.report("ready")
    while not ctx.should_stop():
        ctx.beat()
        message = receiver.recv(timeout_ms=100)
        if isinstance(message, AudioChunk):
            time.sleep(SLOW_TRANSCRIBE_S_PER_CHUNK)
            end = message.pts + message.duration
            sender.send(Transcript(camera=message.camera, start=message.pts, end=end, wall_time=time.time()))
            ctx.counters["chunks_in"] += 1
        elif isinstance(message, EndOfStream):
            sender.send_control(message)
    receiver.close()
    sender.close()
