"""Opening media with PyAV and turning its many failures into one clear ``MediaError``."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import av
import av.error

from pipeline.config import CameraConfig, DecodeConfig, redact

logger = logging.getLogger(__name__)

FILE_READ_TIMEOUT_S = 30.0


Refusal = Literal["credentials", "path"]


class MediaError(RuntimeError):
    """A source that cannot be read; ``permanent`` when retrying cannot help, ``stalled`` when a
    live source stopped sending, ``refused`` when a live camera answered but turned the request
    down: ``"credentials"`` (401, 403) or ``"path"`` (404); wrong settings, or a camera still booting."""

    def __init__(self, message: str, *, permanent: bool, stalled: bool = False, refused: Refusal | None = None) -> None:
        super().__init__(message)
        self.permanent = permanent
        self.stalled = stalled
        self.refused = refused


def describe_open_error(source: str, exc: BaseException) -> MediaError:
    """Map PyAV / OS errors on open to one line that names the source and the problem."""
    shown = redact(source)
    live = "://" in source
    if isinstance(exc, FileNotFoundError) and not live:
        return MediaError(f"cannot open {shown}: no such file", permanent=True)
    if isinstance(exc, PermissionError) and not live:
        return MediaError(f"cannot open {shown}: permission denied", permanent=True)
    if isinstance(exc, IsADirectoryError):
        return MediaError(f"cannot open {shown}: it is a folder, not a video file", permanent=True)
    if isinstance(exc, av.error.HTTPUnauthorizedError | av.error.HTTPForbiddenError):
        return MediaError(
            f"cannot open {shown}: unauthorized (check the user name and password)",
            permanent=True,
            refused="credentials" if live else None,
        )
    if isinstance(exc, av.error.HTTPNotFoundError):
        return MediaError(
            f"cannot open {shown}: stream not found (404)", permanent=True, refused="path" if live else None
        )
    if isinstance(exc, ConnectionRefusedError):
        return MediaError(f"cannot open {shown}: connection refused", permanent=False)
    if isinstance(exc, TimeoutError | av.error.ExitError):
        return MediaError(f"cannot open {shown}: timed out (no answer)", permanent=False)
    if isinstance(exc, av.error.InvalidDataError) and not live:
        return MediaError(
            f"cannot open {shown}: not a readable video file (truncated, corrupt or not media)",
            permanent=True,
        )
    if isinstance(exc, av.error.InvalidDataError):
        return MediaError(f"cannot open {shown}: no answer or no usable stream (timed out?)", permanent=False)
    reason = getattr(exc, "strerror", None) or str(exc)
    return MediaError(f"cannot open {shown}: {reason}", permanent=not live)


@dataclass
class MediaSource:
    """An open container; ``frames`` yields decoded frames and ``media_time`` maps them to seconds."""

    source: str
    container: av.container.InputContainer
    stall_s: float = 10.0
    origin: float = 0.0
    last_pts: float = 0.0
    video_frames: int = 0
    on_packet: Callable[[av.Packet], None] | None = None  # each packet once decoded (the recorder)

    def media_time(self, frame: av.VideoFrame | av.AudioFrame) -> float | None:
        if frame.time is None:
            return None
        self.last_pts = max(self.last_pts, frame.time - self.origin)
        return frame.time - self.origin

    def frames(self, streams: Sequence[av.stream.Stream]) -> Iterator[av.VideoFrame | av.AudioFrame]:
        """Decoded frames of ``streams`` in demux order; a read error mid-stream is a MediaError."""
        try:
            for packet in self.container.demux(*streams):
                decoded = packet.decode()
                if self.on_packet is not None:
                    self.on_packet(packet)
                for frame in decoded:
                    if isinstance(frame, av.VideoFrame | av.AudioFrame):
                        yield frame
        except (av.error.ExitError, TimeoutError) as exc:
            if "://" not in self.source:
                raise MediaError(f"{redact(self.source)}: read timed out: {exc}", permanent=False) from exc
            raise MediaError(
                f"{redact(self.source)}: no data for {self.stall_s:.0f} s (stalled)", permanent=False, stalled=True
            ) from exc
        except av.error.FFmpegError as exc:
            raise MediaError(
                f"{redact(self.source)}: unreadable after {self.last_pts:.1f} s{self._of_declared() or ' of media'} "
                f"(truncated or corrupt): {exc}",
                permanent="://" not in self.source,
            ) from exc
        except OSError as exc:
            raise MediaError(f"{redact(self.source)}: read failed: {exc}", permanent=False) from exc
        self._check_complete()

    def _of_declared(self) -> str:
        """`` of a declared N s`` for a file that states its duration."""
        if "://" in self.source or self.container.duration is None:
            return ""
        return f" of a declared {self.container.duration / av.time_base:.1f} s"

    def _check_complete(self) -> None:
        """A file whose data stops well before its declared duration was cut short."""
        if "://" in self.source or self.container.duration is None:
            return
        declared = self.container.duration / av.time_base
        if self.last_pts < declared - max(1.0, 0.05 * declared):
            raise MediaError(
                f"{self.source}: file ends early: media stops at {self.last_pts:.1f} s of a declared "
                f"{declared:.1f} s (truncated or corrupt)",
                permanent=True,
            )


def stream_options(source: str, transport: str, stall_s: float, probe_s: float) -> dict[str, str]:
    """FFmpeg options for a live source: the RTSP transport, a socket I/O timeout, and how long to
    probe the stream before frames flow (FFmpeg's default of several seconds delays every reconnect)."""
    if "://" not in source:
        return {}
    options = {"analyzeduration": str(int(probe_s * 1_000_000))}
    if source.lower().startswith("rtsp"):
        options |= {"rtsp_transport": transport, "timeout": str(int(stall_s * 1_000_000))}
    return options


@contextmanager
def open_media(
    source: str, *, timeout_s: float, stall_s: float = 10.0, transport: str = "tcp", probe_s: float = 0.5
) -> Iterator[MediaSource]:
    """Open a file or stream; must hold a video stream. Opening may take ``timeout_s``; once open,
    a live source that sends nothing for about ``stall_s`` raises a stalled ``MediaError``."""
    live = "://" in source
    if not live and not Path(source).exists():
        raise MediaError(f"cannot open {redact(source)}: no such file", permanent=True)
    # FFmpeg's RTSP demuxer retries a read that timed out once before giving up, so each read may
    # take half the stall budget.
    read_timeout_s = stall_s / 2 if live else FILE_READ_TIMEOUT_S
    try:
        container = av.open(
            source, options=stream_options(source, transport, stall_s, probe_s), timeout=(timeout_s, read_timeout_s)
        )
    except (av.error.FFmpegError, OSError) as exc:
        raise describe_open_error(source, exc) from exc
    try:
        if not isinstance(container, av.container.InputContainer) or not container.streams.video:
            raise MediaError(f"cannot use {redact(source)}: it has no video stream", permanent=True)
        origin = container.start_time / av.time_base if container.start_time is not None else 0.0
        yield MediaSource(source=source, container=container, stall_s=stall_s, origin=origin)
    finally:
        container.close()


def open_camera(camera: CameraConfig, decode: DecodeConfig) -> contextlib.AbstractContextManager[MediaSource]:
    """``open_media`` for a camera, with its transport and the decoder's timeouts (as decode opens it)."""
    return open_media(
        camera.source,
        timeout_s=decode.open_timeout_s,
        stall_s=decode.stall_s,
        transport=camera.rtsp_transport,
        probe_s=decode.probe_s,
    )


def probe_source(camera: CameraConfig, decode: DecodeConfig) -> str:
    """What the camera's source holds, as decode will see it (``h264 1920x1080 at 25 fps + aac audio
    8000 Hz``); raises the ``MediaError`` decode would meet opening it."""
    with open_camera(camera, decode) as media:
        video = media.container.streams.video[0]
        rate = video.average_rate or video.guessed_rate
        text = f"{video.codec_context.name} {video.codec_context.width}x{video.codec_context.height}"
        text += f" at {float(rate):g} fps" if rate else ""
        audio = media.container.streams.audio[0] if media.container.streams.audio else None
        if audio is None:
            return text + ", no audio"
        return text + f" + {audio.codec_context.name} audio {audio.codec_context.sample_rate} Hz"
