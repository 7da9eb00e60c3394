"""Many live RTSP cameras through decode and detect (real processes, real GStreamer server, real
YOLOv3-tiny): a dead camera never slows the others, and eight cameras run with bounded memory."""

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
from tests.support.clips import looped_clip
from tests.support.harness import Arrival, Collector, StatusLog, rss_bytes, run_stages, stage_pids
from tests.support.ports import free_port
from tests.support.rtsp import RtspServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

ANALYSIS_FPS = 2.0
SAMPLED_S = 42  # eight cameras' memory, sampled every 2 s (`python -m bench.live_bench` soaks them 5 minutes)


def cameras_config(tmp_path: Path, sources: dict[str, str], **stages: Any) -> VigilConfig:
    tmp_path.mkdir(exist_ok=True)
    config = make_config(
        tmp_path,
        stages={"decode": {"open_timeout_s": 3, "stall_s": 3, "reconnect_max_s": 2}, **stages},
        runtime={"mode": "live"},
    )
    cameras = {
        name: CameraConfig.model_validate({"source": url, "audio": False, "analysis": {"fps": ANALYSIS_FPS}})
        for name, url in sources.items()
    }
    return config.model_copy(update={"cameras": cameras})


def fuse_endpoint(config: VigilConfig) -> str:
    assert config.runtime.ipc_dir is not None
    return Endpoints.in_folder(config.runtime.ipc_dir).fuse


def rate(arrivals: list[Arrival]) -> float:
    """Detections per second over the span they arrived in."""
    if len(arrivals) < 2:
        return 0.0
    return (len(arrivals) - 1) / (arrivals[-1].received - arrivals[0].received)


def measure(config: VigilConfig, cameras: list[str], warmup_s: float, window_s: float) -> dict[str, float]:
    """Detections/s per camera arriving at fuse's endpoint over ``window_s`` after all are streaming."""
    log = StatusLog()
    rates: dict[str, float] = {}
    with Collector(fuse_endpoint(config)) as detections:

        def scenario(supervisor: Supervisor) -> None:
            for name in cameras:
                log.wait_for(name, CameraState.STREAMING, timeout=60)
            time.sleep(warmup_s)
            start = time.time()
            time.sleep(window_s)
            for name in cameras:
                in_window = [a for a in detections.of(name, since=start) if a.received <= start + window_s]
                rates[name] = rate(in_window)

        run_stages(config, ["decode", "detect"], scenario, log)
    return rates


def test_a_dead_camera_does_not_slow_the_others(tmp_path: Path, demo_clip: Path) -> None:
    with RtspServer(demo_clip, mounts=2) as live, RtspServer(demo_clip) as hung:
        sources = {"north": live.url_for(0), "south": live.url_for(1)}
        alone = measure(cameras_config(tmp_path / "a", sources), list(sources), warmup_s=3, window_s=12)
        hung.stall()  # accepts connections, then never answers: the worst kind of dead camera
        dead = {**sources, "dead": hung.url, "gone": f"rtsp://127.0.0.1:{free_port()}/cam"}
        beside = measure(cameras_config(tmp_path / "b", dead), list(sources), warmup_s=3, window_s=12)
        hung.resume()
    for name in sources:
        assert alone[name] > 0.8 * ANALYSIS_FPS, alone
        assert abs(beside[name] - alone[name]) <= 0.1 * alone[name], (alone, beside)


def test_eight_cameras_run_with_bounded_memory(tmp_path: Path, demo_clip: Path) -> None:
    clip = looped_clip(demo_clip, 4, tmp_path / "looped.mp4")
    log = StatusLog()
    samples: list[tuple[float, int]] = []
    restarts: dict[str, int] = {}
    with RtspServer(clip, mounts=8) as server:
        sources = {f"cam{i}": server.url_for(i) for i in range(8)}
        config = cameras_config(tmp_path, sources, detect={"threads": 2, "batch": 8})
        with Collector(fuse_endpoint(config)) as detections:

            def scenario(supervisor: Supervisor) -> None:
                for name in sources:
                    log.wait_for(name, CameraState.STREAMING, timeout=60)
                started = time.monotonic()
                while time.monotonic() - started < SAMPLED_S:
                    samples.append((time.monotonic() - started, rss_bytes(stage_pids(supervisor))))
                    time.sleep(2)
                restarts.update({s.spec.instance: s.restarts for s in supervisor.stages})

            summary = run_stages(config, ["decode", "detect"], scenario, log)
    assert not summary.failed
    assert not any(restarts.values()), f"no stage restarted: {restarts}"
    early = statistics.median(rss for t, rss in samples if 8 <= t < 20)
    late = statistics.median(rss for t, rss in samples if t >= SAMPLED_S - 12)
    assert late <= early * 1.15, f"resident memory grew from {early / 2**20:.0f} to {late / 2**20:.0f} MiB"
    assert late < 3 * 2**30, f"{late / 2**20:.0f} MiB for 8 cameras"
    per_camera = {name: len(detections.of(name)) for name in sources}
    assert min(per_camera.values()) > 0, per_camera
    print(f"8 cameras: RSS {early / 2**20:.0f} -> {late / 2**20:.0f} MiB; detections per camera {per_camera}")
