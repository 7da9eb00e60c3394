"""Test clips built with PyAV and cached next to a marker: a looped remux of a clip, and a stream that
changes resolution half-way.

Each clip is written to a temporary file and renamed into place, then a ``DEST.marker`` JSON file
records what was built and the clip's size; a later call that asks for the same clip finds the marker
and the clip's size matching and reuses the file.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import numpy as np
from av.container import InputContainer, OutputContainer
from av.stream import Stream
from av.video.codeccontext import VideoCodecContext
from av.video.stream import VideoStream

RESOLUTION_CHANGE_FPS = 10
RESOLUTION_CHANGE_PARTS = ((320, 240), (640, 360))  # each for RESOLUTION_CHANGE_PART_S
RESOLUTION_CHANGE_PART_S = 4
X264_OPTIONS = {"preset": "ultrafast", "tune": "zerolatency", "g": str(RESOLUTION_CHANGE_FPS)}  # a keyframe a second


# -- cache -----------------------------------------------------------------------------------------


def marker_path(dest: Path) -> Path:
    """The JSON file that says what ``dest`` holds and how big it was when built."""
    return dest.with_name(dest.name + ".marker")


def cached(dest: Path, key: dict[str, Any], build: Callable[[Path], None]) -> Path:
    """``dest``, built by ``build(temporary path)`` unless its marker matches ``key`` and its size."""
    marker = marker_path(dest)
    if dest.exists() and marker.exists():
        recorded = json.loads(marker.read_text())
        if recorded == {**key, "size": dest.stat().st_size}:
            return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)
    partial = dest.with_name(f".{dest.name}.{os.getpid()}.partial{dest.suffix}")
    try:
        build(partial)
        os.replace(partial, dest)
    finally:
        partial.unlink(missing_ok=True)
    marker.write_text(json.dumps({**key, "size": dest.stat().st_size}))
    return dest


# -- looped clip -----------------------------------------------------------------------------------


def looped_clip(source: Path, repeats: int, dest: Path, until_s: float | None = None) -> Path:
    """``source`` (an MP4) played ``repeats`` times back to back in one MP4 at ``dest``, remuxed, not
    re-encoded, with continuous timestamps: repeat ``r`` is shifted by ``r`` times the video's length,
    so the audio keeps in step with the video (AAC frames that would overlap the previous repeat, such
    as its priming frame, are dropped; each repeat's last, trimmed AAC frame stays as in the source).
    With ``until_s``, the clip ends there: the video just before its first keyframe at or after that
    time (whole groups of pictures only), the audio at that time.
    Reused when ``dest`` was built from the same source, count and end.
    """
    if repeats < 1:
        raise ValueError("repeats must be at least 1")
    stat = source.stat()
    key = {"source": str(source.resolve()), "source_size": stat.st_size, "mtime_ns": stat.st_mtime_ns}
    key |= {"repeats": repeats} if until_s is None else {"repeats": repeats, "until_s": until_s}
    return cached(dest, key, lambda path: write_looped(source, repeats, path, until_s))


def period_s(source: Path) -> Fraction:
    """How long one play of ``source`` lasts: the end of its video (of its first stream if no video)."""
    with av.open(str(source)) as container:
        stream = (container.streams.video or container.streams)[0]
        end = max(
            (p.pts + (p.duration or 0) for p in container.demux(stream) if p.pts is not None),
            default=0,
        )
        assert stream.time_base is not None
        return end * stream.time_base


def write_looped(source: Path, repeats: int, dest: Path, until_s: float | None = None) -> None:
    """Write ``source``'s packets ``repeats`` times into ``dest``, each repeat one period later, ending
    at ``until_s`` (see ``looped_clip``)."""
    period = period_s(source)
    with av.open(str(source)) as template, av.open(str(dest), "w", format="mp4") as output:
        streams = {
            s.index: output.add_stream_from_template(s) for s in template.streams if s.type in ("video", "audio")
        }
        last_dts: dict[int, int] = {}
        ended: set[int] = set()  # streams cut at until_s
        for repeat in range(repeats):
            with av.open(str(source)) as container:
                mux_repeat(container, output, streams, repeat * period, last_dts, until_s, ended)


def mux_repeat(
    container: InputContainer,
    output: OutputContainer,
    streams: dict[int, Stream],
    offset_s: Fraction,
    last_dts: dict[int, int],
    until_s: float | None = None,
    ended: set[int] | None = None,
) -> None:
    """Mux one play of ``container`` into ``output``, ``offset_s`` later, skipping packets whose shifted
    decode time would not come after the last one written for their stream, and the packets of a
    stream from where it is cut at ``until_s`` on (added to ``ended``)."""
    ended = set() if ended is None else ended
    for packet in container.demux(*(container.streams[i] for i in streams)):
        if packet.dts is None or packet.pts is None:
            continue  # the demuxer's end-of-stream flush packets
        time_base = packet.stream.time_base
        assert time_base is not None
        shift = round(offset_s / time_base)
        index = packet.stream.index
        past_end = until_s is not None and (packet.pts + shift) * time_base >= until_s
        if past_end and (packet.stream.type != "video" or packet.is_keyframe):
            ended.add(index)  # video: a whole group of pictures at a time
        if index in ended or packet.dts + shift <= last_dts.get(index, -(2**62)):
            continue
        packet.pts += shift
        packet.dts += shift
        last_dts[index] = packet.dts
        packet.stream = streams[index]
        output.mux(packet)


# -- resolution change -----------------------------------------------------------------------------


def resolution_change_clip(dest: Path) -> Path:
    """An MPEG-TS file at ``dest`` with one H.264 video stream (no audio, 10 fps, libx264) that is
    320x240 for its first 4 s and 640x360 for the next 4 s, with continuous timestamps; the 640x360
    part starts with a keyframe carrying its own SPS/PPS, as a camera's stream does after its
    resolution is changed. Reused when ``dest`` was already built."""
    parts = [list(size) for size in RESOLUTION_CHANGE_PARTS]  # as the JSON marker reads back
    key = {"clip": "resolution_change", "parts": parts, "part_s": RESOLUTION_CHANGE_PART_S}
    return cached(dest, key, write_resolution_change)


def write_resolution_change(dest: Path) -> None:
    """Encode each part with its own libx264 encoder and mux both into one TS video stream."""
    frames_per_part = RESOLUTION_CHANGE_FPS * RESOLUTION_CHANGE_PART_S
    with av.open(str(dest), "w", format="mpegts") as output:
        stream = output.add_stream("libx264", rate=RESOLUTION_CHANGE_FPS)
        first_width, first_height = RESOLUTION_CHANGE_PARTS[0]
        configure(stream.codec_context, first_width, first_height)
        for part, (width, height) in enumerate(RESOLUTION_CHANGE_PARTS):
            encoder = stream.codec_context if part == 0 else new_encoder(width, height)
            frames = synthetic_frames(width, height, part * frames_per_part, frames_per_part)
            encode_into(encoder, frames, output, stream)


def configure(codec: VideoCodecContext, width: int, height: int) -> None:
    """Set up a libx264 encoder for ``width`` x ``height`` at RESOLUTION_CHANGE_FPS."""
    codec.width, codec.height, codec.pix_fmt = width, height, "yuv420p"
    codec.time_base = Fraction(1, RESOLUTION_CHANGE_FPS)
    codec.framerate = Fraction(RESOLUTION_CHANGE_FPS)
    codec.options = dict(X264_OPTIONS)


def new_encoder(width: int, height: int) -> VideoCodecContext:
    """A libx264 encoder that belongs to no stream (its packets are muxed into one by hand)."""
    codec = av.CodecContext.create("libx264", "w")
    assert isinstance(codec, VideoCodecContext)
    configure(codec, width, height)
    return codec


def encode_into(
    encoder: VideoCodecContext, frames: Iterator[av.VideoFrame], output: OutputContainer, stream: VideoStream
) -> None:
    """Encode ``frames`` (and flush) with ``encoder`` and mux the packets into ``stream``."""
    for frame in [*frames, None]:
        for packet in encoder.encode(frame):
            packet.stream = stream
            output.mux(packet)


def synthetic_frames(width: int, height: int, start: int, count: int) -> Iterator[av.VideoFrame]:
    """``count`` frames from frame number ``start`` on: a gradient with a white square moving across."""
    ramp = (np.arange(width) * 255 // width).astype(np.uint8)
    for number in range(start, start + count):
        image = np.zeros((height, width, 3), np.uint8)
        image[:, :, 0] = ramp[None, :]
        image[:, :, 1] = number * 20 % 256
        side = height // 8
        x = number * 7 % (width - side)
        image[height // 3 : height // 3 + side, x : x + side] = 255
        frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
        frame.pts, frame.time_base = number, Fraction(1, RESOLUTION_CHANGE_FPS)
        yield frame
