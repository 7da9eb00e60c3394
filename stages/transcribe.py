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
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from pipeline.compute_lock import ComputeLock
from pipeline.config import TranscribeConfig, is_live
from pipeline.messages import AudioChunk, AudioLevel, EndOfStream, Segment, Transcript
from pipeline.stage import PermanentStageError, StageContext
from pipeline.stage_settings import FAST_REPLAY_AUDIO_QUEUE
from pipeline.transport import Backpressure, Receiver, Sender
from stages.fusion.signals import SAME_WORD_S, find_keywords
from stages.speech.base import SpeechError, SpeechRecognizer, create_recognizer, warm_up_audio
from stages.speech.vad import StreamingVad, VadSettings, spans_of, speech_spans

logger = logging.getLogger(__name__)

MAX_GAP_S = 0.25  # a jump in audio media time larger than this is a gap, not jitter

SAMPLE_RATE = 16_000
SPEECH_TAIL_S = 0.3  # silence after speech before the utterance counts as closed
PAUSE_S = 0.25  # a silence this long mid-utterance is a pause: what was said so far is transcribed then
PAUSE_MIN_NEW_S = 0.5  # speech since the last partial transcript before a pause makes another
KEEP_TAIL_S = 0.5  # audio kept when no speech was found, in case speech starts at the edge
UTTERANCE_VAD = VadSettings()  # faster-whisper's own: 2 s of silence ends an utterance
PAUSE_VAD = VadSettings(min_silence_s=PAUSE_S, speech_pad_s=0.0)  # finds a pause, not an utterance


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
    _vad: StreamingVad | None = field(default=None, repr=False)

    @property
    def vad(self) -> StreamingVad:
        """Silero over this window, each of its 32 ms windows computed once while the window grows."""
        if self._vad is None:
            self._vad = StreamingVad()
        return self._vad

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
        if self._vad is not None:
            self._vad.reset()  # the window now begins elsewhere: its 32 ms windows are new
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


def spans_in(audio: np.ndarray, vad: StreamingVad, settings: VadSettings = UTTERANCE_VAD) -> list[tuple[float, float]]:
    """Speech in ``audio`` (16 kHz), by ``vad`` (which has seen the audio up to its last chunk)."""
    return spans_of(vad.probabilities(audio), len(audio), settings) if len(audio) else []


def pause_in(audio: np.ndarray, vad: StreamingVad | None = None) -> float | None:
    """Where the speech in ``audio`` stopped (seconds from its start) when it ends in a pause of at
    least ``PAUSE_S``; None while someone is speaking at its end (or no one spoke)."""
    spans = spans_in(audio, vad or StreamingVad(), PAUSE_VAD)
    if not spans or spans[-1][1] > len(audio) / SAMPLE_RATE - PAUSE_S / 2:
        return None
    return spans[-1][1]


@dataclass(frozen=True)
class PartialResult:
    """A partial transcript of the audio of an open utterance from ``start``, ``samples`` long."""

    start: float
    samples: int
    segments: tuple[Segment, ...]

    def covers(self, start: float, audio: np.ndarray) -> bool:
        """True when ``audio`` (the closed utterance from ``start``) holds no speech after what this
        transcript heard, so it would say the same."""
        if abs(start - self.start) > 1 / SAMPLE_RATE:
            return False
        spans = spans_in(audio, StreamingVad(), PAUSE_VAD)
        return bool(spans) and spans[-1][1] * SAMPLE_RATE <= self.samples


def wall_time_at(walls: list[tuple[float, float]], pts: float) -> float | None:
    """When media time ``pts`` was captured, from the (media time, wall time) of the chunks."""
    before = [(chunk_pts, wall) for chunk_pts, wall in walls if chunk_pts <= pts]
    if not before:
        return None
    chunk_pts, wall = before[-1]
    return wall + (pts - chunk_pts)


@dataclass
class KeywordClock:
    """When each keyword of one camera was first sent to fuse (by a partial or a final transcript),
    to measure how long after the end of its utterance it got there."""

    keywords: tuple[str, ...]
    first_sent: dict[tuple[str, float], float] = field(default_factory=dict)  # (keyword, media time) -> wall

    def sent(self, segments: tuple[Segment, ...] | list[Segment], now: float) -> None:
        for segment in segments:
            for hit in find_keywords(self.keywords, segment):
                if self._known(hit.keyword, hit.time) is None:
                    self.first_sent[(hit.keyword, hit.time)] = now

    def lags(self, segments: list[Segment], walls: list[tuple[float, float]]) -> list[float]:
        """For each keyword in a final transcript: seconds from the end of its utterance (the end of
        the final transcript's last segment) to its first arrival at fuse, 0 when it came earlier."""
        if not segments:
            return []
        said_until = wall_time_at(walls, segments[-1].end)
        out = []
        for segment in segments:
            for hit in find_keywords(self.keywords, segment):
                first = self._known(hit.keyword, hit.time)
                if first is not None and said_until is not None:
                    out.append(max(0.0, first - said_until))
        cutoff = segments[-1].end - 60.0
        self.first_sent = {key: wall for key, wall in self.first_sent.items() if key[1] >= cutoff}
        return out

    def _known(self, keyword: str, time_s: float) -> float | None:
        return next(
            (
                wall
                for (word, at), wall in self.first_sent.items()
                if word == keyword and abs(at - time_s) < SAME_WORD_S
            ),
            None,
        )


class Transcriber:
    def __init__(
        self,
        ctx: StageContext,
        recognizer: SpeechRecognizer,
        sender: Sender,
        busy: Callable[[], bool] = lambda: False,
    ) -> None:
        self.ctx = ctx
        self.settings = ctx.config.stages.transcribe
        self.recognizer = recognizer
        self.sender = sender
        self.busy = busy  # audio waiting to be processed: no partial transcripts then
        self.windows: dict[str, AudioWindow] = {}
        self.partial_at: dict[str, int] = {}  # samples in the window at its last partial transcript
        self.partials: dict[str, PartialResult] = {}  # the last partial transcript of each open utterance
        self.clocks: dict[str, KeywordClock] = {}
        self.lock = ComputeLock(ctx.spec.compute_lock)  # turns on the CPU with detect

    def clock(self, camera: str) -> KeywordClock:
        if camera not in self.clocks:
            settings = self.ctx.config.cameras.get(camera)
            self.clocks[camera] = KeywordClock(tuple(settings.keywords) if settings else ())
        return self.clocks[camera]

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
        self.partial_at.pop(end.camera, None)
        window = self.windows.pop(end.camera, None)
        if window is not None and window.samples:
            self.process(end.camera, window, final=True)  # may reuse the utterance's pause transcript
        self.partials.pop(end.camera, None)
        self.sender.send_control(end)

    def process(self, camera: str, window: AudioWindow, *, final: bool) -> None:
        spans = spans_in(window.audio(), window.vad) if self.settings.vad else []
        seconds, has_speech = choose_cut(spans, window.duration, self.settings, final)
        if seconds <= 0:
            if spans:
                self.maybe_partial(camera, window)
            return
        walls = list(window.walls)
        self.partial_at.pop(camera, None)
        partial = self.partials.pop(camera, None)
        start, audio, levels = window.cut(seconds)
        segments: list[Segment] = []
        if has_speech and len(audio):
            if partial is not None and partial.covers(start, audio):
                segments = list(partial.segments)  # nothing was said after it: Whisper is not run again
                self.ctx.counters["partials_reused"] += 1
            else:
                with self.lock.turn():
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
            clock = self.clock(camera)
            clock.sent(segments, done)
            for lag in clock.lags(segments, walls):
                self.ctx.observe("keyword_after_utterance_end", lag)
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

    def maybe_partial(self, camera: str, window: AudioWindow) -> None:
        """Someone is still speaking: transcribe what was said so far (keywords reach fuse before the
        sentence ends) every ``partial_s`` of new audio when no audio waits to be processed, and at
        once when the speaker pauses (the last words of a sentence then arrive within a fraction of
        a second; when nothing more is said, the utterance's final transcript reuses this one)."""
        every = self.settings.partial_s
        if every is None or window.start is None or self.ctx.replay_fast:
            return  # fast replay stays deterministic: whole utterances only
        covered = self.partial_at.get(camera, 0)
        due = window.samples - covered >= every * SAMPLE_RATE and not self.busy()
        if not due:
            paused_at = pause_in(window.audio(), window.vad)
            if paused_at is None or paused_at * SAMPLE_RATE - covered < PAUSE_MIN_NEW_S * SAMPLE_RATE:
                return
            self.ctx.counters["pause_transcripts"] += 1
        self.partial_at[camera] = window.samples
        with self.lock.turn():
            began = time.perf_counter()
            segments = self.recognizer.transcribe(window.audio(), offset=window.start)
        self.ctx.counters["transcribe_ms_total"] += int((time.perf_counter() - began) * 1000)
        self.ctx.counters["partial_transcripts"] += 1
        self.clock(camera).sent(segments, time.time())
        self.partials[camera] = PartialResult(window.start, window.samples, tuple(segments))
        if segments:
            logger.debug("camera %s: so far: %s", camera, " ".join(s.text.strip() for s in segments))
        self.sender.send(
            Transcript(
                camera=camera,
                start=window.start,
                end=window.start,
                wall_time=time.time(),
                segments=tuple(segments),
                partial=True,
            )
        )


def input_queue(ctx: StageContext) -> int:
    """Audio chunks that may wait for transcribe, per decoder: in fast replay of files only a few
    (``FAST_REPLAY_AUDIO_QUEUE``), so a recognizer slower than the detector holds decode back."""
    files_only = not any(is_live(camera.source) for camera in ctx.config.cameras.values())
    return FAST_REPLAY_AUDIO_QUEUE if ctx.replay_fast and files_only else 256


def serve(
    ctx: StageContext,
    receiver: Receiver,
    on_chunk: Callable[[AudioChunk], None],
    on_end: Callable[[EndOfStream], None],
) -> None:
    """transcribe's receive loop: each audio chunk and end of stream to its handler until the stop."""
    while not ctx.should_stop():
        ctx.beat()
        message = receiver.recv(timeout_ms=100)
        if isinstance(message, AudioChunk):
            on_chunk(message)
        elif isinstance(message, EndOfStream):
            on_end(message)
        elif message is not None:
            logger.warning("transcribe ignores %s messages", message.kind)


def run(ctx: StageContext) -> None:
    settings = ctx.config.stages.transcribe
    receiver = ctx.receiver(queue=input_queue(ctx))
    sender = ctx.sender("fuse", queue=256, policy=Backpressure.BLOCK)
    try:
        recognizer = create_recognizer(settings.model_copy(update={"device": ctx.local_device}))
        began = time.perf_counter()
        if settings.vad:
            speech_spans(warm_up_audio())  # loads the Silero model (80 ms), not at the first chunk
        recognizer.warm_up()  # the first Whisper run took 225 against 140 ms
        first_run_s = time.perf_counter() - began
    except SpeechError as exc:
        raise PermanentStageError(str(exc)) from exc
    logger.info(
        "speech recognizer ready: %s %s on %s (first run %.0f ms)",
        settings.backend,
        settings.model,
        settings.device,
        1000 * first_run_s,
    )
    transcriber = Transcriber(ctx, recognizer, sender, busy=receiver.waiting)
    ctx.report("ready")
    serve(ctx, receiver, transcriber.on_chunk, transcriber.on_end)
    receiver.close()
