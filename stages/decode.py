"""decode: one process per camera. PyAV demuxes a file or rtsp:// stream, samples video at the
analysis fps and width (BGR), resamples audio to 16 kHz mono chunks, and sends both on with the
camera's media time. Files replay ``fast`` (lossless, blocking) or paced like a camera; live
streams drop the oldest frame when downstream is behind and reconnect with backoff.
"""

from __future__ import annotations

import logging
import random
import time
from collections import Counter
from dataclasses import dataclass, field

import av
import numpy as np

from pipeline.camera_state import CameraState, CameraStateMachine
from pipeline.config import CameraConfig, DecodeConfig, VigilConfig, is_live, redact
from pipeline.messages import AudioChunk, EndOfStream, Frame
from pipeline.stage import HEARTBEAT_S, SEND_LINGER_MS, PermanentStageError, StageContext
from pipeline.stage_settings import FAST_REPLAY_AUDIO_QUEUE
from pipeline.transport import Backpressure, Outbox, Sender, StopRequestedError
from stages.media import MediaError, MediaSource, open_camera
from stages.recording import RECORDING_COUNTERS, Recorder
from stages.sampling import SAMPLE_RATE, VideoSample, sample_media

logger = logging.getLogger(__name__)

DELIVERY_NOTICE_S = 5.0  # a decoder still waiting this long for its last messages to be taken says so


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


@dataclass
class Backoff:
    """Exponential backoff with full jitter: the n-th delay is uniform in [0, min(max, first * 2^n)]."""

    first_s: float
    max_s: float
    rng: random.Random = field(default_factory=random.Random)
    attempt: int = 0

    def next_delay(self) -> float:
        cap = min(self.max_s, self.first_s * 2 ** min(self.attempt, 32))
        self.attempt += 1
        return self.rng.uniform(0, cap)

    def reset(self) -> None:
        self.attempt = 0


@dataclass
class LiveClock:
    """Keeps a live camera's media time running on across reconnects: a new connection's clock
    starts again near zero, so its first sample is placed after the last one sent plus the wall
    time that went by."""

    shift: float = 0.0
    last_pts: float | None = None
    last_wall: float = 0.0
    _pending: bool = False

    def reconnected(self) -> None:
        self._pending = self.last_pts is not None

    def place(self, pts: float) -> float:
        if self._pending and self.last_pts is not None:
            self.shift = self.last_pts + max(0.0, time.monotonic() - self.last_wall) - pts
            self._pending = False
        placed = pts + self.shift
        if self.last_pts is None or placed > self.last_pts:
            self.last_pts, self.last_wall = placed, time.monotonic()
        return placed


def serving_replica(config: VigilConfig, stage: str, camera_id: str) -> int:
    """The replica of ``stage`` that serves ``camera_id``: cameras are dealt out in config order, so
    one camera's messages always meet the same process and stay in order."""
    replicas = getattr(getattr(config.stages, stage), "replicas", 1)
    return list(config.cameras).index(camera_id) % replicas


class CameraDecoder:
    """Decodes one camera into Frame and AudioChunk messages, publishing its state as it goes."""

    def __init__(self, ctx: StageContext, camera_id: str, camera: CameraConfig, settings: DecodeConfig) -> None:
        self.ctx = ctx
        self.camera_id = camera_id
        self.camera = camera
        self.settings = settings
        self.live = is_live(camera.source)
        fast = ctx.config.runtime.mode == "fast" and not self.live
        policy = Backpressure.BLOCK if fast else Backpressure.DROP_OLDEST
        self.outbox = Outbox()  # at the end of a file, everything sent is seen taken before the process ends
        self.video_out: Sender = ctx.sender(
            "detect",
            queue=settings.queue,
            policy=policy,
            replica=serving_replica(ctx.config, "detect", camera_id),
            outbox=self.outbox,
        )
        self.audio_out: Sender | None = None
        if camera.audio:
            replica = serving_replica(ctx.config, "transcribe", camera_id)
            queue = FAST_REPLAY_AUDIO_QUEUE if fast else max(64, settings.queue)
            self.audio_out = ctx.sender("transcribe", queue=queue, policy=policy, replica=replica, outbox=self.outbox)
        self.pacer = Pacer(enabled=not fast and not self.live)
        self.state = CameraStateMachine(camera_id, self._publish)
        self.backoff = Backoff(settings.reconnect_first_s, settings.reconnect_max_s)
        self.clock = LiveClock()
        self.streaming_since: float | None = None
        self.has_streamed = False  # streamed at least once in this run (a refusal after that is retried)
        self.frames_decoded_before = 0
        self.recorder: Recorder | None = None  # this connection's, when the camera is recorded
        self.recorded_before: Counter[str] = Counter()  # the recording counters of earlier connections
        self.frame_seq = 0
        self.audio_seq = 0
        self.audio_ended = False
        self._waiting_noted = False

    def _publish(self, state: CameraState, detail: str | None) -> None:
        self.ctx.report(state.status, detail, self.camera_id)

    def run(self) -> None:
        error: str | None = None
        try:
            if self.live:
                self._run_live()
            else:
                self._connect_and_stream()
        except MediaError as exc:
            error = str(exc)
            self.state.to(CameraState.FAILED, error)
            raise PermanentStageError(error) from exc
        except StopRequestedError:
            pass
        finally:
            self._send_end(error)
            self._deliver_all()

    def _run_live(self) -> None:
        """Connect, stream, and on any recoverable failure back off and connect again, forever.

        A camera that refuses at the first connection (wrong password, wrong path) fails for good: the
        settings are wrong, and retrying a wrong password can lock the account. One that streamed in
        this run and then refuses is most likely rebooting (many answer 404 or 401 until their encoder
        is up) or had its password changed: it is tried again, a path after ``reconnect_max_s``, the
        credentials only after ``credentials_retry_s`` (cameras lock an account after a few failures)."""
        while not self.ctx.should_stop():
            refused = None
            try:
                self._connect_and_stream()
                reason = "the stream ended"
            except MediaError as exc:
                refused = exc.refused if self.has_streamed else None
                if exc.permanent and refused is None:
                    raise
                if exc.stalled:
                    self.ctx.counters["stalls"] += 1
                    self.state.to(CameraState.STALLED, str(exc))
                reason = str(exc)
            if self.ctx.should_stop():
                break
            healthy_for = time.monotonic() - self.streaming_since if self.streaming_since is not None else 0.0
            if healthy_for >= self.settings.healthy_after_s:
                self.backoff.reset()  # a healthy period: start again from short delays
            self.streaming_since = None
            if refused is not None:
                self.ctx.counters["refusals"] += 1
                long_wait = self.settings.credentials_retry_s if refused == "credentials" else 0.0
                delay = max(self.settings.reconnect_max_s, long_wait)
                reason += "; it streamed earlier in this run (rebooting?), so it is tried again"
            else:
                delay = self.backoff.next_delay()
            self.state.to(CameraState.BACKING_OFF, f"{reason}; retry in {delay:.1f} s")
            self.ctx.idle(delay)
            self.ctx.counters["reconnects"] += 1

    def _connect_and_stream(self) -> None:
        self.ctx.beat()  # opening may take open_timeout_s, which the config keeps below the heartbeat limit
        self.state.to(CameraState.CONNECTING, redact(self.camera.source))
        self.ctx.counters["connect_attempts"] += 1
        with open_camera(self.camera, self.settings) as media:
            container = media.container
            video = container.streams.video[0]
            # FFmpeg's own threads follow stages.decode.threads: one thread decodes the demo clip with
            # 30 % less CPU than frame threading on two, and adds no frame delay.
            video.thread_count = self.settings.threads
            video.thread_type = "AUTO" if self.settings.threads > 1 else "NONE"
            wants_audio = self.camera.audio and not self.audio_ended
            audio = container.streams.audio[0] if (wants_audio and container.streams.audio) else None
            if wants_audio and audio is None:
                logger.info("camera %s: source has no audio track; video only", self.camera_id)
                self._end_audio(None)
            self.clock.reconnected()
            if self.camera.record is not None:  # the packets read, copied to disk as they come
                self.recorder = Recorder(self.camera_id, self.camera.record, video, audio)
                media.on_packet = self.recorder.write
            try:
                self._demux(media, video, audio)
            finally:
                self.frames_decoded_before += media.video_frames
                if self.recorder is not None:
                    self.recorder.close()
                    self._count_recording()
                    self.recorded_before.update(self.recorder.tally())
                    self.recorder = None

    def _count_recording(self) -> None:
        """The recording's counters: earlier connections' and this one's (live, for /metrics)."""
        now = self.recorder.tally() if self.recorder is not None else {}
        for key in RECORDING_COUNTERS:
            self.ctx.counters[key] = self.recorded_before[key] + now.get(key, 0)

    @staticmethod
    def _describe(video: av.VideoStream, audio: av.AudioStream | None) -> str:
        text = f"{video.codec_context.name} {video.codec_context.width}x{video.codec_context.height}"
        return text + (f" + {audio.codec_context.name} audio" if audio is not None else ", no audio")

    def _demux(self, media: MediaSource, video: av.VideoStream, audio: av.AudioStream | None) -> None:
        for sample in sample_media(
            media, video, audio, self.camera.analysis, self.settings.audio_chunk_s, self.settings.threads
        ):
            if self.ctx.should_stop():
                raise StopRequestedError("stop requested")
            self.ctx.beat()
            if self.state.state is not CameraState.STREAMING:  # streaming means samples are coming
                self.state.to(CameraState.STREAMING, self._describe(video, audio))
                self.streaming_since = time.monotonic()
                self.has_streamed = True
            self.ctx.counters["frames_decoded"] = self.frames_decoded_before + media.video_frames
            if self.recorder is not None:
                self._count_recording()
            pts = self.clock.place(sample.pts) if self.live else sample.pts
            if isinstance(sample, VideoSample):
                self._send_frame(pts, sample.image)
            else:
                self._send_audio(pts, sample.samples)

    def _send_frame(self, pts: float, image: np.ndarray) -> None:
        self.pacer.wait(self.ctx, pts)
        message = Frame(camera=self.camera_id, seq=self.frame_seq, pts=pts, wall_time=time.time(), image=image)
        self.frame_seq += 1
        self.video_out.send(message)
        self._count()

    def _send_audio(self, pts: float, samples: np.ndarray) -> None:
        assert self.audio_out is not None
        self.pacer.wait(self.ctx, pts)
        message = AudioChunk(
            camera=self.camera_id,
            seq=self.audio_seq,
            pts=pts,
            wall_time=time.time(),
            sample_rate=SAMPLE_RATE,
            samples=samples,
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

    def _deliver_all(self) -> None:
        """At the end of a file: see everything sent taken before the process ends. A PUSH socket
        that disconnects loses the messages its receiver has not read from the kernel yet (a
        transcribe kept off the CPU, its queue full): the clip's last audio and its end of stream,
        and fuse then waited for them forever. Where the alert sink runs (``spec.hold_at_end``) the
        connections stay open until the run is stopped, which it is once every camera's end of
        stream has reached the sink; on a host without it (nothing there learns when the sink has
        it), for ``stages.decode.end_hold_s``, and then the outbox waits until the messages have
        left this process (``pipeline.transport.Outbox``). A stop ends any of these waits."""
        if self.ctx.spec.hold_at_end and not self.ctx.should_stop():
            while not self.ctx.should_stop():
                self.ctx.idle(HEARTBEAT_S)
        elif self.settings.end_hold_s > 0 and not self.ctx.should_stop():
            logger.info(
                "camera %s: end of file; its connections stay open %.0f s (stages.decode.end_hold_s) so that "
                "detect and transcribe can read its last messages",
                self.camera_id,
                self.settings.end_hold_s,
            )
            self.ctx.idle(self.settings.end_hold_s)
        if self.ctx.should_stop():  # what is still queued gets the usual linger
            self.outbox.close(SEND_LINGER_MS)
            return
        began = time.monotonic()

        def give_up() -> bool:
            if time.monotonic() - began > DELIVERY_NOTICE_S and not self._waiting_noted:
                self._waiting_noted = True
                logger.info("camera %s: waiting for detect and transcribe to take its last messages", self.camera_id)
            return self.ctx.waiting_to_send()

        if not self.outbox.deliver_all(give_up):
            logger.warning("camera %s: stopped before its last messages were taken", self.camera_id)

    def _send_end(self, error: str | None) -> None:
        try:
            self.video_out.send_control(EndOfStream(self.camera_id, "video", error))
            self._end_audio(error)
        except StopRequestedError:
            logger.debug("camera %s: stopped before end of stream was sent", self.camera_id)
        self._count()
        if not self.state.finished:
            why = "stop requested" if self.ctx.should_stop() else "end of file"
            self.state.to(CameraState.STOPPED, why)


def run(ctx: StageContext) -> None:
    camera_id = ctx.spec.camera
    if camera_id is None or camera_id not in ctx.config.cameras:
        raise PermanentStageError(f"decode needs a camera id, got {camera_id!r}")
    camera = ctx.config.cameras[camera_id]
    if not ctx.wait_to_start():
        return
    logger.info("camera %s: decoding %s", camera_id, redact(camera.source))
    CameraDecoder(ctx, camera_id, camera, ctx.config.stages.decode).run()
