"""decode: one process per camera. PyAV demuxes a file or rtsp:// stream, samples video at the
analysis fps and width (BGR), resamples audio to 16 kHz mono chunks, and sends both on with the
camera's media time. Files replay ``fast`` (lossless, blocking) or paced like a camera; live
streams drop the oldest frame when downstream is behind and reconnect with backoff.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass

import av
import numpy as np

from pipeline.config import AnalysisConfig, CameraConfig, DecodeConfig, redact
from pipeline.messages import AudioChunk, EndOfStream, Frame
from pipeline.stage import PermanentStageError, StageContext
from pipeline.transport import Backpressure, Sender, StopRequestedError
from stages.media import MediaError, MediaSource, open_media

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
RECONNECT_FIRST_S = 0.5
RECONNECT_MAX_S = 30.0


def is_live(source: str) -> bool:
    return source.split("://", 1)[0].lower() in ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "srt")


@dataclass
class Pacer:
    """Sleeps so media time advances with wall time (replay in realtime/live mode)."""

    enabled: bool
    origin_wall: float | None = None
    origin_pts: float = 0.0

    def wait(self, ctx: StageContext, pts: float) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if self.origin_wall is None:
            self.origin_wall, self.origin_pts = now, pts
            return
        delay = self.origin_wall + (pts - self.origin_pts) - now
        if delay > 0:
            ctx.idle(delay)


class AudioChunker:
    """Resamples any audio to 16 kHz mono float32 and cuts it into fixed-length chunks."""

    def __init__(self, chunk_s: float) -> None:
        self._resampler = av.AudioResampler(format="flt", layout="mono", rate=SAMPLE_RATE)
        self._chunk = max(1, int(chunk_s * SAMPLE_RATE))
        self._buffer: list[np.ndarray] = []
        self._buffered = 0
        self._next_pts: float | None = None

    def push(self, frame: av.AudioFrame | None, pts: float | None) -> Iterator[tuple[float, np.ndarray]]:
        for out in self._resampler.resample(frame):
            if self._next_pts is None:
                self._next_pts = pts if pts is not None else 0.0
            samples = out.to_ndarray().reshape(-1).astype(np.float32, copy=False)
            self._buffer.append(samples)
            self._buffered += len(samples)
        while self._buffered >= self._chunk:
            yield self._take(self._chunk)
        if frame is None and self._buffered:
            yield self._take(self._buffered)

    def _take(self, count: int) -> tuple[float, np.ndarray]:
        joined = np.concatenate(self._buffer)
        chunk, rest = joined[:count], joined[count:]
        self._buffer = [rest] if len(rest) else []
        self._buffered = len(rest)
        assert self._next_pts is not None
        pts = self._next_pts
        self._next_pts += count / SAMPLE_RATE
        return pts, chunk


def analysis_size(width: int, height: int, target_width: int) -> tuple[int, int]:
    """Analysis size keeping the aspect ratio, never upscaling, even dimensions."""
    out_w = min(width, target_width)
    out_h = max(2, round(height * out_w / width / 2) * 2)
    return out_w - out_w % 2, out_h


@dataclass(frozen=True)
class VideoSample:
    pts: float
    image: np.ndarray


@dataclass(frozen=True)
class AudioSample:
    pts: float
    samples: np.ndarray


def sample_media(
    media: MediaSource,
    video: av.VideoStream,
    audio: av.AudioStream | None,
    analysis: AnalysisConfig,
    audio_chunk_s: float,
) -> Iterator[VideoSample | AudioSample]:
    """Video frames sampled at the analysis fps and size (BGR), and 16 kHz mono audio chunks,
    in demux order. A change of resolution mid-stream changes the analysis height with it."""
    next_video_pts: float | None = None
    chunker = AudioChunker(audio_chunk_s) if audio is not None else None
    size: tuple[int, int] | None = None
    source_size: tuple[int, int] | None = None
    for frame in media.frames([video] if audio is None else [video, audio]):
        pts = media.media_time(frame)
        if isinstance(frame, av.VideoFrame):
            media.video_frames += 1
            if pts is None or (next_video_pts is not None and pts < next_video_pts - 1e-6):
                continue
            next_video_pts = max(pts, next_video_pts or 0.0) + 1.0 / analysis.fps
            if size is None or (frame.width, frame.height) != source_size:
                source_size = (frame.width, frame.height)
                size = analysis_size(frame.width, frame.height, analysis.width)
            yield VideoSample(pts, frame.to_ndarray(width=size[0], height=size[1], format="bgr24"))
        elif chunker is not None and isinstance(frame, av.AudioFrame):
            for chunk_pts, samples in chunker.push(frame, pts):
                yield AudioSample(chunk_pts, samples)
    if chunker is not None:
        for chunk_pts, samples in chunker.push(None, None):
            yield AudioSample(chunk_pts, samples)


class CameraDecoder:
    """Decodes one camera into Frame and AudioChunk messages."""

    def __init__(self, ctx: StageContext, camera_id: str, camera: CameraConfig, settings: DecodeConfig) -> None:
        self.ctx = ctx
        self.camera_id = camera_id
        self.camera = camera
        self.settings = settings
        self.live = is_live(camera.source)
        fast = ctx.config.runtime.mode == "fast" and not self.live
        policy = Backpressure.BLOCK if fast else Backpressure.DROP_OLDEST
        self.video_out: Sender = ctx.sender(ctx.endpoints.detect, queue=settings.queue, policy=policy)
        self.audio_out: Sender | None = None
        if camera.audio:
            self.audio_out = ctx.sender(ctx.endpoints.transcribe, queue=max(64, settings.queue), policy=policy)
        self.pacer = Pacer(enabled=not fast and not self.live)
        self.frame_seq = 0
        self.audio_seq = 0
        self.audio_ended = False

    def run(self) -> None:
        error: str | None = None
        try:
            if self.live:
                self._run_live()
            else:
                self._decode_once()
        except MediaError as exc:
            error = str(exc)
            raise PermanentStageError(error) from exc
        except StopRequestedError:
            pass
        finally:
            self._send_end(error)

    def _run_live(self) -> None:
        attempt = 0
        while not self.ctx.should_stop():
            started = time.monotonic()
            try:
                self._decode_once()
                reason = "stream ended"
            except MediaError as exc:
                if exc.permanent:
                    raise
                reason = str(exc)
            if time.monotonic() - started > RECONNECT_MAX_S:
                attempt = 0  # a healthy period resets the backoff
            delay = random.uniform(0, min(RECONNECT_MAX_S, RECONNECT_FIRST_S * 2**attempt))
            attempt += 1
            logger.warning("camera %s: %s; reconnecting in %.1f s", self.camera_id, reason, delay)
            self.ctx.report("camera-backoff", reason, self.camera_id)
            self.ctx.idle(delay)

    def _decode_once(self) -> None:
        source = self.camera.source
        self.ctx.report("camera-connecting", None, self.camera_id)
        with open_media(source, timeout_s=self.settings.open_timeout_s) as media:
            container = media.container
            video = container.streams.video[0]
            video.thread_type = "AUTO"
            audio = container.streams.audio[0] if (self.camera.audio and container.streams.audio) else None
            if self.camera.audio and audio is None:
                logger.info("camera %s: source has no audio track; video only", self.camera_id)
                self._end_audio(None)
            self.ctx.report("camera-streaming", None, self.camera_id)
            self._demux(media, video, audio)

    def _demux(self, media: MediaSource, video: av.VideoStream, audio: av.AudioStream | None) -> None:
        for sample in sample_media(media, video, audio, self.camera.analysis, self.settings.audio_chunk_s):
            if self.ctx.should_stop():
                raise StopRequestedError("stop requested")
            self.ctx.beat()
            self.ctx.counters["frames_decoded"] = media.video_frames
            if isinstance(sample, VideoSample):
                self._send_frame(sample)
            else:
                self._send_audio(sample)

    def _send_frame(self, sample: VideoSample) -> None:
        self.pacer.wait(self.ctx, sample.pts)
        message = Frame(
            camera=self.camera_id,
            seq=self.frame_seq,
            pts=sample.pts,
            wall_time=time.time(),
            image=sample.image,
        )
        self.frame_seq += 1
        self.video_out.send(message)
        self._count()

    def _send_audio(self, sample: AudioSample) -> None:
        assert self.audio_out is not None
        self.pacer.wait(self.ctx, sample.pts)
        message = AudioChunk(
            camera=self.camera_id,
            seq=self.audio_seq,
            pts=sample.pts,
            wall_time=time.time(),
            sample_rate=SAMPLE_RATE,
            samples=sample.samples,
        )
        self.audio_seq += 1
        self.audio_out.send(message)
        self._count()

    def _count(self) -> None:
        self.ctx.counters["frames_sent"] = self.video_out.sent
        self.ctx.counters["frames_dropped"] = self.video_out.drops
        if self.audio_out is not None:
            self.ctx.counters["audio_chunks_sent"] = self.audio_out.sent
            self.ctx.counters["audio_chunks_dropped"] = self.audio_out.drops

    def _end_audio(self, error: str | None) -> None:
        """Tell transcribe (and so fuse) that no more audio comes from this camera."""
        if self.audio_out is not None and not self.audio_ended:
            self.audio_out.send_control(EndOfStream(self.camera_id, "audio", error))
            self.audio_ended = True

    def _send_end(self, error: str | None) -> None:
        try:
            self.video_out.send_control(EndOfStream(self.camera_id, "video", error))
            self._end_audio(error)
        except StopRequestedError:
            logger.debug("camera %s: stopped before end of stream was sent", self.camera_id)
        self._count()
        self.ctx.report("camera-ended" if error is None else "camera-error", error, self.camera_id)


def run(ctx: StageContext) -> None:
    camera_id = ctx.spec.camera
    if camera_id is None or camera_id not in ctx.config.cameras:
        raise PermanentStageError(f"decode needs a camera id, got {camera_id!r}")
    camera = ctx.config.cameras[camera_id]
    logger.info("camera %s: decoding %s", camera_id, redact(camera.source))
    CameraDecoder(ctx, camera_id, camera, ctx.config.stages.decode).run()
