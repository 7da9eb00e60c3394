"""The test RTSP server and clips do what the camera tests rely on: PyAV reads them over RTSP/TCP; a
killed server comes back on its port; basic authentication turns a wrong password away with 401;
``connections`` counts clients; a stalled server times reads out; mounts are separate cameras; a
clip can loop and can change resolution half-way."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from tests.support.clips import looped_clip, marker_path, resolution_change_clip
from tests.support.ports import free_port
from tests.support.rtsp import RtspServer

pytestmark = pytest.mark.timeout(60)

# FFmpeg probes an RTSP stream for ~2 s by default before av.open returns; 0.2 s is plenty here, as the
# SDP already describes both tracks. Everything else is what the pipeline's decode stage uses.
OPTIONS = {"rtsp_transport": "tcp", "analyzeduration": "200000"}


def open_rtsp(url: str, read_s: float = 5.0) -> av.container.InputContainer:
    """A PyAV client on ``url`` over TCP; a read that waits more than ``read_s`` raises."""
    return av.open(url, options=OPTIONS, timeout=(5.0, read_s))


def video_frames(container: av.container.InputContainer, count: int) -> list[av.VideoFrame]:
    """The next ``count`` decoded video frames (fewer if the stream ends)."""
    return [frame for frame, _ in zip(container.decode(video=0), range(count), strict=False)]


def read_frames(url: str, count: int = 5) -> list[av.VideoFrame]:
    """Open ``url``, decode ``count`` video frames, close."""
    with open_rtsp(url) as container:
        return video_frames(container, count)


def gray(frame: av.VideoFrame) -> np.ndarray:
    """A frame's luma as floats, to compare pictures."""
    return frame.to_ndarray(format="gray").astype(np.float64)


def eventually(check: Callable[[], bool], timeout_s: float = 2.0) -> bool:
    """Whether ``check()`` becomes true within ``timeout_s`` (the server's stdout is read in a thread)."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.fixture(scope="module")
def first_picture(demo_clip: Path) -> np.ndarray:
    """The demo clip's first frame, as a client that gets the clip from its start decodes it first."""
    with av.open(str(demo_clip)) as container:
        return gray(next(container.decode(video=0)))


@pytest.fixture(scope="module")
def resolution_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return resolution_change_clip(tmp_path_factory.mktemp("clips") / "resolution_change.ts")


def test_a_client_reads_frames_and_is_counted(demo_clip: Path) -> None:
    with RtspServer(demo_clip) as server:
        assert server.url == f"rtsp://127.0.0.1:{server.port}/cam"
        frames = read_frames(server.url)
        assert [(f.width, f.height) for f in frames] == [(768, 576)] * 5
        assert eventually(lambda: server.connections == 1)


def test_a_killed_server_ends_the_client_stream_and_restarts_on_the_same_port(demo_clip: Path) -> None:
    with RtspServer(demo_clip) as server:
        port = server.port
        with open_rtsp(server.url) as container:
            assert len(video_frames(container, 5)) == 5
            server.kill()
            assert not server.running
            began = time.monotonic()
            video_frames(container, 1000)  # FFmpeg's demuxer sees the connection close as the stream's end
            assert time.monotonic() - began < 3
        began = time.monotonic()
        server.restart()
        assert time.monotonic() - began < 3
        assert server.port == port
        assert len(read_frames(server.url)) == 5
        assert eventually(lambda: server.connections == 2)


def test_restart_binds_past_a_connection_left_in_time_wait(demo_clip: Path) -> None:
    with RtspServer(demo_clip) as server:
        client = socket.create_connection(("127.0.0.1", server.port))
        assert eventually(lambda: server.connections == 1)
        server.kill()  # the server's end closes first, so it lingers in TIME_WAIT on the server's port
        assert client.recv(1) == b""
        client.close()
        server.restart()
        assert len(read_frames(server.url)) == 5


def test_start_waits_for_a_port_that_is_still_taken(demo_clip: Path) -> None:
    port = free_port()
    squatter = socket.create_server(("127.0.0.1", port))
    threading.Timer(1.0, squatter.close).start()
    with RtspServer(demo_clip, port=port) as server:
        assert len(read_frames(server.url)) == 5


def test_basic_authentication_turns_a_wrong_password_away(demo_clip: Path) -> None:
    with RtspServer(demo_clip, user="viewer", password="s3cret") as server:
        assert "s3cret" not in server.url
        assert "s3cret" not in Path(f"/proc/{server.pid}/cmdline").read_text()
        with pytest.raises(av.error.HTTPUnauthorizedError):
            open_rtsp(server.url)
        assert eventually(lambda: server.connections == 1)
        with pytest.raises(av.error.HTTPUnauthorizedError):
            open_rtsp(server.url_with("viewer", "wrong"))
        assert eventually(lambda: server.connections == 2)
        assert server.url_with("viewer", "s3cret") == f"rtsp://viewer:s3cret@127.0.0.1:{server.port}/cam"
        assert len(read_frames(server.url_with("viewer", "s3cret"))) == 5
        assert eventually(lambda: server.connections == 3)


def test_a_stalled_server_times_reads_out_and_serves_again_once_resumed(demo_clip: Path) -> None:
    with RtspServer(demo_clip) as server, open_rtsp(server.url, read_s=1.0) as container:
        assert len(video_frames(container, 5)) == 5
        server.stall()
        began = time.monotonic()
        with pytest.raises(av.error.ExitError):  # PyAV's read timeout interrupts FFmpeg
            video_frames(container, 1000)
        assert time.monotonic() - began < 4  # FFmpeg's RTSP demuxer retries a timed-out read once
        assert server.running
        server.resume()
        assert len(read_frames(server.url)) == 5


def test_a_server_stalled_at_exit_is_killed(demo_clip: Path) -> None:
    with RtspServer(demo_clip) as server:
        server.stall()
    assert not server.running


def test_each_client_gets_the_clip_from_its_start_without_disturbing_the_others(
    demo_clip: Path, first_picture: np.ndarray
) -> None:
    with RtspServer(demo_clip, mounts=3) as server:
        urls = [server.url_for(i) for i in range(3)]
        assert urls == [f"rtsp://127.0.0.1:{server.port}/cam{suffix}" for suffix in ("", "1", "2")]
        with pytest.raises(IndexError):
            server.url_for(3)
        with open_rtsp(server.url) as first:
            before = video_frames(first, 25)  # 2.5 s into the clip
            for url in [*urls, server.url]:  # every mount, and a second client of mount 0
                assert np.abs(gray(read_frames(url, 1)[0]) - first_picture).mean() < 1
            after = video_frames(first, 5)
        times = [frame.time for frame in before + after if frame.time is not None]
        assert times == sorted(times)  # the first client was not sent back to the start
        assert eventually(lambda: server.connections == 5)


def test_the_resolution_change_clip_changes_size_in_a_file_and_over_rtsp(resolution_clip: Path) -> None:
    with av.open(str(resolution_clip)) as container:
        assert [s.type for s in container.streams] == ["video"]
        sizes = [(frame.width, frame.height) for frame in container.decode(video=0)]
    assert sizes == [(320, 240)] * 40 + [(640, 360)] * 40
    with RtspServer(resolution_clip) as server, open_rtsp(server.url) as client:
        seen = list(sizes_until_it_changes(client))
    assert seen[0] == (320, 240) and seen[-1] == (640, 360)


def sizes_until_it_changes(container: av.container.InputContainer) -> Iterator[tuple[int, int]]:
    """The decoded frames' sizes, up to the first frame whose size differs from the first one's."""
    first: tuple[int, int] | None = None
    for frame in container.decode(video=0):
        size = (frame.width, frame.height)
        yield size
        if first is None:
            first = size
        elif size != first:
            return


def test_a_looped_clip_has_continuous_timestamps_and_is_cached(demo_clip: Path, tmp_path: Path) -> None:
    dest = tmp_path / "demo_x3.mp4"
    looped_clip(demo_clip, 3, dest)
    with av.open(str(dest)) as container:
        assert container.duration == pytest.approx(90 * av.time_base, rel=0.001)
        video = [p.pts * p.time_base for p in container.demux(video=0) if p.pts is not None]
    assert len(video) == 900
    assert sorted(video) == [Fraction(n, 10) for n in range(900)]  # 10 fps, no gap or overlap at the seams
    built = dest.stat().st_mtime_ns
    assert looped_clip(demo_clip, 3, dest) == dest
    assert dest.stat().st_mtime_ns == built
    looped_clip(demo_clip, 2, dest)  # another count: the marker no longer matches, so it is rebuilt
    assert marker_path(dest).exists()
    with av.open(str(dest)) as container:
        assert container.duration == pytest.approx(60 * av.time_base, rel=0.001)


def test_a_looped_clip_cut_short_ends_on_a_whole_group_of_pictures_with_its_audio(
    demo_clip: Path, tmp_path: Path
) -> None:
    dest = looped_clip(demo_clip, 2, tmp_path / "demo_x2_cut.mp4", until_s=47)
    with av.open(str(dest)) as container:
        frames = [frame.time for frame in container.decode(video=0)]
    with av.open(str(dest)) as container:
        audio_end = max(float(p.pts * p.time_base) for p in container.demux(audio=0) if p.pts is not None)
    # the demo has a keyframe every 2 s: the cut falls just before the one at 48 s
    assert len(frames) == 480 and frames == sorted(frames), "every frame decodes, in order"
    assert 46.9 <= audio_end < 47.0, audio_end
