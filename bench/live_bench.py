"""Live RTSP benchmark: time from a camera server's restart to the first frame decoded again
(median of N restarts), frames/s per camera with 1, 4 and 8 cameras through decode and detect,
and resident memory of 8 cameras over a long run.

Needs the test RTSP server (GStreamer from Debian, installed by ``make test``):

    python -m bench.live_bench                       # everything, about 8 minutes
    python -m bench.live_bench --restarts 10 --cameras 1 4 8 --window-s 30 --soak-s 300 --json out.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pipeline.camera_state import CameraState
from pipeline.config import CameraConfig, VigilConfig
from pipeline.progress import total
from pipeline.supervisor import Supervisor
from pipeline.transport import Endpoints
from tests.conftest import make_config
from tests.support.clips import looped_clip
from tests.support.harness import Collector, StatusLog, rss_bytes, run_stages, stage_pids
from tests.support.rtsp import RtspServer

ROOT = Path(__file__).resolve().parent.parent
DEMO_CLIP = ROOT / "media" / "demo.mp4"


def live_config(folder: Path, sources: dict[str, str], fps: float, **stages: Any) -> VigilConfig:
    folder.mkdir(parents=True, exist_ok=True)
    config = make_config(folder, stages=stages, runtime={"mode": "live"})
    cameras = {
        name: CameraConfig.model_validate({"source": url, "audio": False, "analysis": {"fps": fps}})
        for name, url in sources.items()
    }
    return config.model_copy(update={"cameras": cameras})


def endpoints(config: VigilConfig) -> Endpoints:
    assert config.runtime.ipc_dir is not None
    return Endpoints.in_folder(config.runtime.ipc_dir)


def restart_to_first_frame(
    folder: Path, clip: Path, restarts: int, down_s: float, healthy_after_s: float
) -> list[float]:
    """Seconds from each server restart to the first frame arriving at detect's endpoint, with the
    default backoff (from 0.5 s, full jitter, cap 30 s). The camera streams 2 s between restarts; a
    ``healthy_after_s`` below that resets the backoff each time (a camera that was healthy before it
    went down), a larger one shows a flapping camera's growing backoff."""
    log = StatusLog()
    delays: list[float] = []
    with RtspServer(clip) as server:
        config = live_config(folder, {"door": server.url}, fps=5, decode={"healthy_after_s": healthy_after_s})
        with Collector(endpoints(config).detect) as frames:

            def scenario(supervisor: Supervisor) -> None:
                log.wait_for("door", CameraState.STREAMING, timeout=30)
                for i in range(restarts):
                    time.sleep(2.0)
                    server.kill()
                    time.sleep(down_s)
                    server.restart()
                    restarted = time.time()
                    deadline = time.monotonic() + 60
                    while not frames.of("door", since=restarted) and time.monotonic() < deadline:
                        time.sleep(0.01)
                    arrived = frames.of("door", since=restarted)
                    delays.append(arrived[0].received - restarted if arrived else float("inf"))
                    print(f"  restart {i + 1}/{restarts}: first frame after {delays[-1]:.2f} s", file=sys.stderr)

            run_stages(config, ["decode"], scenario, log)
    return delays


def per_camera_rates(folder: Path, clip: Path, count: int, fps: float, window_s: float) -> dict[str, Any]:
    """Detections/s per camera arriving at fuse's endpoint, decode and detect running for real."""
    log = StatusLog()
    result: dict[str, Any] = {}
    with RtspServer(clip, mounts=count) as server:
        sources = {f"cam{i}": server.url_for(i) for i in range(count)}
        config = live_config(folder, sources, fps=fps, detect={"threads": 2, "batch": 8})
        with Collector(endpoints(config).fuse) as detections:

            def scenario(supervisor: Supervisor) -> None:
                for name in sources:
                    log.wait_for(name, CameraState.STREAMING, timeout=60)
                time.sleep(5)
                start = time.time()
                sent_before = total(supervisor.counters, "decode", "frames_sent")
                dropped_before = total(supervisor.counters, "decode", "frames_dropped")
                time.sleep(window_s)
                rates = []
                for name in sources:
                    got = [a for a in detections.of(name, since=start) if a.received <= start + window_s]
                    rates.append(len(got) / window_s)
                latencies = sorted(a.received - a.sent for a in detections.arrivals if a.received >= start)
                result.update(
                    cameras=count,
                    target_fps=fps,
                    fps_per_camera_median=round(statistics.median(rates), 2),
                    fps_per_camera_min=round(min(rates), 2),
                    fps_all_cameras=round(sum(rates), 2),
                    sampled=total(supervisor.counters, "decode", "frames_sent") - sent_before,
                    dropped=total(supervisor.counters, "decode", "frames_dropped") - dropped_before,
                    latency_p50_ms=round(1000 * statistics.median(latencies), 1) if latencies else None,
                    latency_p95_ms=round(1000 * latencies[int(len(latencies) * 0.95)], 1) if latencies else None,
                    skipped=total(supervisor.counters, "detect", "frames_skipped"),
                    rss_mib=round(rss_bytes(stage_pids(supervisor)) / 2**20),
                )

            run_stages(config, ["decode", "detect"], scenario, log)
    return result


def soak(folder: Path, clip: Path, count: int, fps: float, seconds: float) -> dict[str, Any]:
    """Resident memory of all stage processes every 10 s while ``count`` cameras run ``seconds``."""
    log = StatusLog()
    samples: list[tuple[float, int]] = []
    restarts: dict[str, int] = {}
    with RtspServer(clip, mounts=count) as server:
        sources = {f"cam{i}": server.url_for(i) for i in range(count)}
        config = live_config(folder, sources, fps=fps, detect={"threads": 2, "batch": 8})
        window: dict[str, float] = {}

        def scenario(supervisor: Supervisor) -> None:
            for name in sources:
                log.wait_for(name, CameraState.STREAMING, timeout=60)
            started = time.monotonic()
            window["start"] = time.time()
            while (elapsed := time.monotonic() - started) < seconds:
                samples.append((elapsed, rss_bytes(stage_pids(supervisor))))
                print(f"  soak {elapsed:5.0f} s: RSS {samples[-1][1] / 2**20:.0f} MiB", file=sys.stderr)
                time.sleep(10)
            window["end"] = time.time()
            restarts.update({s.spec.instance: s.restarts for s in supervisor.stages})

        with Collector(endpoints(config).fuse) as detections:
            summary = run_stages(config, ["decode", "detect"], scenario, log)
    arrived = [a for a in detections.arrivals if window["start"] <= a.received <= window["end"]]
    latencies = sorted(a.received - a.sent for a in arrived)
    span = window["end"] - window["start"]
    rss = [r for _, r in samples]
    return {
        "cameras": count,
        "seconds": seconds,
        "rss_mib_first": round(rss[0] / 2**20),
        "rss_mib_median": round(statistics.median(rss) / 2**20),
        "rss_mib_max": round(max(rss) / 2**20),
        "rss_mib_last": round(rss[-1] / 2**20),
        "restarts": sum(restarts.values()),
        "failed": summary.failed,
        "analysed_fps_per_camera": round(len(arrived) / span / count, 2),
        "latency_p50_ms": round(1000 * latencies[len(latencies) // 2]) if latencies else None,
        "latency_p95_ms": round(1000 * latencies[int(len(latencies) * 0.95)]) if latencies else None,
        "skipped": total(summary.counters, "detect", "frames_skipped"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--restarts", type=int, default=10, help="server restarts to time (0 to skip)")
    parser.add_argument("--down-s", type=float, default=1.0, help="seconds the server stays down each time")
    parser.add_argument(
        "--healthy-after-s", type=float, default=1.5, help="streaming time that resets the backoff (default 30 in use)"
    )
    parser.add_argument("--cameras", type=int, nargs="*", default=[1, 4, 8], help="camera counts to measure")
    parser.add_argument("--fps", type=float, default=2.0, help="analysis frames/s per camera")
    parser.add_argument("--window-s", type=float, default=30.0, help="measuring window per camera count")
    parser.add_argument("--soak-s", type=float, default=300.0, help="length of the 8-camera memory run (0 skips)")
    parser.add_argument("--json", type=Path, help="write the results here as JSON")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="vigil-live-bench-") as tmp:
        folder = Path(tmp)
        clip = looped_clip(DEMO_CLIP, 12, folder / "looped.mp4")  # 6 minutes: no camera reaches the end
        if args.restarts:
            delays = restart_to_first_frame(folder / "restart", clip, args.restarts, args.down_s, args.healthy_after_s)
            results["restart_to_first_frame_s"] = {
                "healthy_after_s": args.healthy_after_s,
                "median": round(statistics.median(delays), 2),
                "max": round(max(delays), 2),
                "all": [round(d, 2) for d in delays],
            }
            print(f"restart -> first frame: median {statistics.median(delays):.2f} s of {len(delays)}")
        results["per_camera"] = []
        for count in args.cameras:
            row = per_camera_rates(folder / f"cams{count}", clip, count, args.fps, args.window_s)
            results["per_camera"].append(row)
            print(
                f"{count} camera(s) at {args.fps:g} fps: {row['fps_per_camera_median']} frames/s per camera "
                f"(min {row['fps_per_camera_min']}), {row['fps_all_cameras']} in all, {row['dropped']} dropped, "
                f"{row['skipped']} skipped by detect, latency p50 {row['latency_p50_ms']} ms p95 "
                f"{row['latency_p95_ms']} ms, RSS {row['rss_mib']} MiB"
            )
        if args.soak_s:
            results["soak"] = soak(folder / "soak", clip, 8, args.fps, args.soak_s)
            print(f"soak: {results['soak']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
