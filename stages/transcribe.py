"""transcribe: buffers each camera's 16 kHz audio, finds speech with voice activity detection, runs
Whisper on closed utterances (or every ``max_window_s``), and sends ``Transcript`` messages with
segment and word times in the camera's media time, plus the loudness of every chunk.

Each Transcript covers ``[start, end)`` of media time with no gaps, so ``end`` is the watermark fuse
waits for before it scores a frame.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

import numpy as np

from pipeline.config import TranscribeConfig
from pipeline.messages import AudioChunk, AudioLevel, EndOfStream, Segment, Transcript
from pipeline.stage import PermanentStageError, StageContext
from pipeline.transport import Backpressure, Sender
from stages.speech.base import SpeechError, SpeechRecognizer, create_recognizer
from stages.speech.vad import speech_spans

logger = logging.getLogger(__name__)

MAX_GAP_S = 0.25  # a jump in audio media time larger than this is a gap, not jitter

SAMPLE_RATE = 16_000
SPEECH_TAIL_S = 0.3  # silence after speech before the utterance counts as closed
KEEP_TAIL_S = 0.5  # audio kept when no speech was found, in case speech starts at the edge


def dbfs(samples: np.ndarray) -> float:
    if len(samples) == 0:
        return -120.0
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    return 20.0 * math.log10(max(rms, 1e-6))


@dataclass
class AudioWindow:
    """Unprocessed audio of one camera, starting at media time ``start``."""

    start: float | None = None
    chunks: list[np.ndarray] = field(default_factory=list)
    levels: list[AudioLevel] = field(default_factory=list)
    samples: int = 0
    walls: list[tuple[float, float]] = field(default_factory=list)  # (media time, wall time) of each chunk

    @property
    def duration(self) -> float:
        return self.samples / SAMPLE_RATE

    @property
    def end(self) -> float | None:
        return None if self.start is None else self.start + self.duration

    def add(self, chunk: AudioChunk) -> None:
        if self.start is None or not self.samples:
            self.start = chunk.pts  # an empty window starts where its audio does
        self.chunks.append(chunk.samples)
        self.samples += len(chunk.samples)
        self.walls.append((chunk.pts, chunk.wall_time))
        self.levels.append(AudioLevel(pts=chunk.pts, dbfs=round(dbfs(chunk.samples), 2)))

    def cut(self, seconds: float) -> tuple[float, np.ndarray, list[AudioLevel]]:
        """Remove and return the first ``seconds`` of audio (start time, samples, levels)."""
        assert self.start is not None
        audio = np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.float32)
        count = min(len(audio), max(0, round(seconds * SAMPLE_RATE)))
        start = self.start
        end = start + count / SAMPLE_RATE
        taken = [lvl for lvl in self.levels if lvl.pts < end]
        self.levels = [lvl for lvl in self.levels if lvl.pts >= end]
        rest = audio[count:]
        self.chunks = [rest] if len(rest) else []
        self.samples = len(rest)
        self.start = end
        self.walls = [w for w in self.walls if w[0] >= end - 10.0]
        return start, audio[:count], taken

    def audio(self) -> np.ndarray:
        return np.concatenate(self.chunks) if self.chunks else np.zeros(0, np.float32)


def choose_cut(
    spans: list[tuple[float, float]], duration: float, settings: TranscribeConfig, final: bool
) -> tuple[float, bool]:
    """How much of the window to process now, and whether it holds speech to transcribe."""
    if final:
        return duration, bool(spans) or not settings.vad
    if not settings.vad:
        return (duration, True) if duration >= settings.max_window_s else (0.0, False)
    if not spans:
        return max(0.0, duration - KEEP_TAIL_S), False
    last_end = spans[-1][1]
    if last_end <= duration - SPEECH_TAIL_S:
        return min(duration, last_end + SPEECH_TAIL_S / 2), True
    if duration >= settings.max_window_s:
        return duration, True
    return 0.0, False


def wall_time_at(walls: list[tuple[float, float]], pts: float) -> float | None:
    """When media time ``pts`` was captured, from the (media time, wall time) of the chunks."""
    before = [(chunk_pts, wall) for chunk_pts, wall in walls if chunk_pts <= pts]
    if not before:
        return None
    chunk_pts, wall = before[-1]
    return wall + (pts - chunk_pts)


class Transcriber:
    def __init__(self, ctx: StageContext, recognizer: SpeechRecognizer, sender: Sender) -> None:
        self.ctx = ctx
        self.settings = ctx.config.stages.transcribe
        self.recognizer = recognizer
        self.sender = sender
        self.windows: dict[str, AudioWindow] = {}

    def on_chunk(self, chunk: AudioChunk) -> None:
        window = self.windows.setdefault(chunk.camera, AudioWindow())
        end = window.end
        if window.samples and end is not None and chunk.pts - end > MAX_GAP_S:
            # audio missing (a camera reconnected, chunks dropped): finish what came before the gap
            # so every sample keeps its true media time
            self.process(chunk.camera, window, final=True)
        window.add(chunk)
        self.ctx.counters["chunks_in"] += 1
        if window.duration >= self.settings.min_window_s:
            self.process(chunk.camera, window, final=False)

    def on_end(self, end: EndOfStream) -> None:
        window = self.windows.pop(end.camera, None)
        if window is not None and window.samples:
            self.process(end.camera, window, final=True)
        self.sender.send_control(end)

    def process(self, camera: str, window: AudioWindow, *, final: bool) -> None:
        spans = speech_spans(window.audio()) if self.settings.vad else []
        seconds, has_speech = choose_cut(spans, window.duration, self.settings, final)
        if seconds <= 0:
            return
        walls = list(window.walls)
        start, audio, levels = window.cut(seconds)
        segments: list[Segment] = []
        if has_speech and len(audio):
            began = time.perf_counter()
            segments = self.recognizer.transcribe(audio, offset=start)
            self.ctx.counters["transcribe_ms_total"] += int((time.perf_counter() - began) * 1000)
            self.ctx.counters["windows_transcribed"] += 1
            done = time.time()
            for segment in segments:
                spoken_until = wall_time_at(walls, segment.end)
                lag = max(0.0, done - spoken_until) if spoken_until is not None else math.nan
                logger.info(
                    "camera %s: %.1f-%.1f s (%.1f s after it was said): %s",
                    camera,
                    segment.start,
                    segment.end,
                    lag,
                    segment.text.strip(),
                )
                if spoken_until is not None:
                    self.ctx.observe("utterance_end_to_transcript", lag)
        self.ctx.counters["segments"] += len(segments)
        self.sender.send(
            Transcript(
                camera=camera,
                start=start,
                end=start + len(audio) / SAMPLE_RATE,
                wall_time=time.time(),
                segments=tuple(segments),
                levels=tuple(levels),
            )
        )


def run(ctx: StageContext) -> None:
    settings = ctx.config.stages.transcribe
    receiver = ctx.receiver(queue=256)
    sender = ctx.sender("fuse", queue=256, policy=Backpressure.BLOCK)
    try:
        recognizer = create_recognizer(settings.model_copy(update={"device": ctx.local_device}))
    except SpeechError as exc:
        raise PermanentStageError(str(exc)) from exc
    logger.info("speech recognizer ready: %s %s on %s", settings.backend, settings.model, settings.device)
    transcriber = Transcriber(ctx, recognizer, sender)
    ctx.report("ready")
    while not ctx.should_stop():
        ctx.beat()
        message = receiver.recv(timeout_ms=100)
        if isinstance(message, AudioChunk):
            transcriber.on_chunk(message)
        elif isinstance(message, EndOfStream):
            transcriber.on_end(message)
        elif message is not None:
            logger.warning("transcribe ignores %s messages", message.kind)
    receiver.close()
