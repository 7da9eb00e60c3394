"""decode against a real RTSP server (GStreamer) that dies, stalls, asks for a password or changes
resolution: the camera recovers on its own and says what is happening, as status events."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import pytest

from pipeline.camera_state import CameraState
from pipeline.config import CameraConfig, VigilConfig
from pipeline.supervisor import Supervisor
from pipeline.transport import Endpoints
from tests.conftest import make_config
from tests.support.clips import resolution_change_clip
from tests.support.harness import Collector, StatusLog, run_stages, wait_until
from tests.support.ports import free_port
from tests.support.rtsp import RtspServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def live_config(tmp_path: Path, cameras: dict[str, CameraConfig], **decode: Any) -> VigilConfig:
    settings = {"open_timeout_s": 3, "stall_s": 2, "reconnect_first_s": 0.5, "reconnect_max_s": 2, **decode}
    config = make_config(tmp_path, stages={"decode": settings}, runtime={"mode": "live"})
    return config.model_copy(update={"cameras": cameras})


def detect_endpoint(config: VigilConfig) -> str:
    assert config.runtime.ipc_dir is not None
    return Endpoints.in_folder(config.runtime.ipc_dir).detect


def camera(url: str, **settings: Any) -> CameraConfig:
    return CameraConfig.model_validate({"source": url, "audio": False, "analysis": {"fps": 5}, **settings})


def test_a_stalled_server_is_noticed_and_reconnected_within_stall_s_plus_one(tmp_path: Path, demo_clip: Path) -> None:
    log = StatusLog()
    with RtspServer(demo_clip) as server:
        config = live_config(tmp_path, {"door": camera(server.url)})
        found: dict[str, float] = {}

        def scenario(supervisor: Supervisor) -> None:
            log.wait_for("door", CameraState.STREAMING, timeout=20)
            time.sleep(1)
            server.stall()
            found["stalled_at"] = time.time()
            found["reconnect"] = log.wait_for("door", CameraState.CONNECTING, since=found["stalled_at"], timeout=10)
            server.resume()
            found["streaming"] = log.wait_for("door", CameraState.STREAMING, since=found["reconnect"], timeout=15)

        with Collector(detect_endpoint(config)) as frames:
            summary = run_stages(config, ["decode"], scenario, log)
    stall_s = config.stages.decode.stall_s
    assert found["reconnect"] - found["stalled_at"] <= stall_s + 1.0
    assert log.first("door", CameraState.STALLED, found["stalled_at"]) is not None
    assert frames.of("door", since=found["streaming"]), "frames flow again after the stall"
    assert summary.counters["decode:door"]["stalls"] >= 1


def test_a_wrong_password_fails_as_unauthorized_once_without_a_retry_storm(
    tmp_path: Path, demo_clip: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    log = StatusLog()
    secret = "s3cret-right"
    with RtspServer(demo_clip, user="guard", password=secret) as server:
        wrong = server.url_with("guard", "wrong-Pa55")
        right = server.url_with("guard", secret)
        config = live_config(tmp_path, {"gate": camera(wrong), "door": camera(right)})

        def scenario(supervisor: Supervisor) -> None:
            log.wait_for("gate", CameraState.FAILED, timeout=20)
            log.wait_for("door", CameraState.STREAMING, timeout=20)
            time.sleep(4)  # two reconnect caps: a retrying decoder would try again in this time

        summary = run_stages(config, ["decode"], scenario, log)
        connections = server.connections
    failed = log.first("gate", CameraState.FAILED)
    assert failed is not None and failed[1] is not None
    assert "unauthorized" in failed[1]
    assert "guard:***@" in failed[1] and "wrong-Pa55" not in failed[1]
    assert summary.counters["decode:gate"]["connect_attempts"] == 1
    assert connections <= 3, f"{connections} connections: one per camera (FFmpeg may retry the handshake once)"
    assert "decode:gate" in summary.failed and "decode:door" not in summary.failed
    assert "unauthorized" in summary.camera_errors["gate"]
    output = capfd.readouterr()
    assert "wrong-Pa55" not in output.out + output.err and secret not in output.out + output.err


def test_an_unreachable_port_backs_off_with_a_clear_reason(tmp_path: Path) -> None:
    log = StatusLog()
    config = live_config(tmp_path, {"yard": camera(f"rtsp://127.0.0.1:{free_port()}/cam")}, reconnect_max_s=1)

    def scenario(supervisor: Supervisor) -> None:
        wait_until(lambda: len([s for _, s, _ in log.states("yard") if s is CameraState.BACKING_OFF]) >= 3, 20)

    summary = run_stages(config, ["decode"], scenario, log)
    backoffs = [d for _, s, d in log.states("yard") if s is CameraState.BACKING_OFF]
    assert len(backoffs) >= 3, "keeps retrying a camera that may come back"
    assert all(d is not None and "connection refused" in d and "retry in" in d for d in backoffs)
    assert not summary.failed


def test_frames_flow_again_after_each_of_five_server_restarts(tmp_path: Path, demo_clip: Path) -> None:
    log = StatusLog()
    delays: list[float] = []
    with RtspServer(demo_clip) as server:
        config = live_config(tmp_path, {"door": camera(server.url)})
        cap = config.stages.decode.reconnect_max_s

        def scenario(supervisor: Supervisor) -> None:
            log.wait_for("door", CameraState.STREAMING, timeout=20)
            for _ in range(5):
                time.sleep(1.5)
                server.kill()
                time.sleep(2.0)
                server.restart()
                restarted = time.time()
                delays.append(log.wait_for("door", CameraState.STREAMING, since=restarted, timeout=15) - restarted)

        with Collector(detect_endpoint(config)) as frames:
            summary = run_stages(config, ["decode"], scenario, log)
    assert len(delays) == 5
    assert max(delays) <= cap + 2.0, delays
    assert summary.counters["decode:door"]["reconnects"] >= 5
    pts = [a.pts for a in frames.of("door")]
    assert pts == sorted(pts), "media time keeps running forward across reconnects"
    print(f"restart to first frame: median {statistics.median(delays):.2f} s, max {max(delays):.2f} s")


def test_udp_transport_streams(tmp_path: Path, demo_clip: Path) -> None:
    log = StatusLog()
    with RtspServer(demo_clip) as server:
        config = live_config(tmp_path, {"door": camera(server.url, rtsp_transport="udp")})
        with Collector(detect_endpoint(config)) as frames:

            def scenario(supervisor: Supervisor) -> None:
                log.wait_for("door", CameraState.STREAMING, timeout=20)
                time.sleep(2)

            run_stages(config, ["decode"], scenario, log)
    assert len(frames.of("door")) >= 5


def test_a_mid_stream_resolution_change_is_decoded_at_both_sizes(tmp_path: Path) -> None:
    clip = resolution_change_clip(tmp_path / "sizes.ts")
    log = StatusLog()
    with RtspServer(clip, container="ts") as server:
        config = live_config(tmp_path, {"door": camera(server.url, analysis={"fps": 5, "width": 640})})
        with Collector(detect_endpoint(config)) as frames:

            def scenario(supervisor: Supervisor) -> None:
                wait_until(lambda: len({a.shape for a in frames.of("door")}) >= 2, 20)

            run_stages(config, ["decode"], scenario, log)
    shapes = {a.shape for a in frames.of("door")}
    assert (240, 320, 3) in shapes and (360, 640, 3) in shapes, shapes


def test_a_camera_that_refuses_after_it_streamed_is_tried_again_not_failed(tmp_path: Path, demo_clip: Path) -> None:
    """A camera rebooting: first its RTSP server answers but has no stream yet (404), then it does not
    take the credentials yet (401), then it is back. Refused at the first connection, the same camera
    would fail for good (test_a_wrong_password_fails_as_unauthorized_once_without_a_retry_storm)."""
    log = StatusLog()
    refusals: dict[str, tuple[float, str | None]] = {}
    with RtspServer(demo_clip, user="guard", password="s3cret") as server:
        config = live_config(tmp_path, {"door": camera(server.url_with("guard", "s3cret"))}, credentials_retry_s=4)

        def reboot_into(mount: str, password: str) -> float:
            server.kill()
            server.mount, server.password = mount, password
            server.start()
            return time.time()

        def scenario(supervisor: Supervisor) -> None:
            log.wait_for("door", CameraState.STREAMING, timeout=20)
            since = reboot_into("/booting", "s3cret")  # no /cam yet: 404
            wait_until(lambda: "404" in str(log.states("door", since)), timeout=15)
            refusals["path"] = next((t, d) for t, s, d in log.states("door", since) if d and "404" in d)
            since = reboot_into("/cam", "not-yet")  # the path is back, the credentials not yet: 401
            wait_until(lambda: "unauthorized" in str(log.states("door", since)), timeout=15)
            refusals["credentials"] = next((t, d) for t, s, d in log.states("door", since) if d and "unauth" in d)
            since = reboot_into("/cam", "s3cret")
            refusals["back"] = (log.wait_for("door", CameraState.STREAMING, since=since, timeout=20), None)

        summary = run_stages(config, ["decode"], scenario, log)
    assert "decode:door" not in summary.failed, summary.failed
    assert log.first("door", CameraState.FAILED) is None
    for kind, wait_s in (("path", 2.0), ("credentials", 4.0)):
        detail = refusals[kind][1] or ""
        assert "it streamed earlier in this run (rebooting?), so it is tried again" in detail, detail
        assert detail.endswith(f"retry in {wait_s:.1f} s"), f"{kind}: {detail}"
    assert "s3cret" not in str(log.states("door")), "the password is never shown"
    assert summary.counters["decode:door"]["refusals"] >= 2
