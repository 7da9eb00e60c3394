"""Stand-ins for stages, for faults that cannot be made for real on the test machine (imported by
module path inside spawned stage processes)."""

from __future__ import annotations

import time

from pipeline.messages import AudioChunk, Transcript
from pipeline.stage import StageContext
from pipeline.transport import Backpressure
from stages.transcribe import input_queue, serve

SLOW_TRANSCRIBE_S_PER_CHUNK = 0.5  # real time for the 0.5 s chunks: a large Whisper model on a small CPU
STALL_AT_S = 26.0  # the stalling stand-in stops reading here: decode's last 8 chunks fit in the queues
STALL_S = 10.0  # for this long: decode sends its last chunks and ends meanwhile
LATE_STALL_AT_S = 28.0  # here a decoder that closed its connections once they had taken its last
# chunks lost the end of stream (in the receiver's socket buffers: transcribe's queue was full)


def slow_transcribe(ctx: StageContext) -> None:
    """transcribe on a machine too slow for its model: every audio chunk takes half a second of
    wall time per second of audio; it hears nothing, and its transcripts move fuse's watermark."""
    receiver = ctx.receiver(queue=input_queue(ctx))  # as the real stage
    sender = ctx.sender("fuse", queue=256, policy=Backpressure.BLOCK)

    def on_chunk(chunk: AudioChunk) -> None:
        time.sleep(SLOW_TRANSCRIBE_S_PER_CHUNK)
        end = chunk.pts + chunk.duration
        sender.send(Transcript(camera=chunk.camera, start=chunk.pts, end=end, wall_time=time.time()))
        ctx.counters["chunks_in"] += 1

    ctx.report("ready")
    serve(ctx, receiver, on_chunk, sender.send_control)
    receiver.close()
    sender.close()


def stalling_transcribe(ctx: StageContext, stall_at_s: float = STALL_AT_S) -> None:
    """transcribe that stops reading for ``STALL_S`` near the end of the clip (starved of CPU, or
    busy with a long utterance) while decode sends its last audio and ends; quick otherwise."""
    receiver = ctx.receiver(queue=input_queue(ctx))  # as the real stage
    sender = ctx.sender("fuse", queue=256, policy=Backpressure.BLOCK)
    stalled = False

    def on_chunk(chunk: AudioChunk) -> None:
        nonlocal stalled
        if chunk.pts >= stall_at_s and not stalled:
            stalled = True
            ctx.idle(STALL_S)
        sender.send(
            Transcript(camera=chunk.camera, start=chunk.pts, end=chunk.pts + chunk.duration, wall_time=time.time())
        )
        ctx.counters["chunks_in"] += 1

    ctx.report("ready")
    serve(ctx, receiver, on_chunk, sender.send_control)
    receiver.close()
    sender.close()


def late_stalling_transcribe(ctx: StageContext) -> None:
    """``stalling_transcribe`` stopping at ``LATE_STALL_AT_S``, with the last chunks and the end of
    stream in flight when decode reaches the end of the file."""
    stalling_transcribe(ctx, LATE_STALL_AT_S)
