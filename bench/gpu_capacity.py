"""How many cameras at 5 fps one detector device sustains, and their capture-to-detection p95.

Issue 5, item 5: the ``ultralytics`` backend with a model built from ``yolo11n.yaml``, batch 16, on
``cuda:0`` when there is a GPU. First the detector alone (frames/s at batch 16: the ceiling). Then
cameras replay the demo clip in ``realtime`` (paced like cameras, video only, so the detector is what
is measured); the count doubles from ``--start`` until a run sustains less than ``--keep`` of the
frames asked for, or ``--max`` is reached, then one run tries the count halfway between the last that
kept up and the first that did not. "Sustains" is read over the middle half of each run (cameras
start seconds apart, and the first frames of 100 cameras arrive while the host is still starting
processes); the whole run's share is reported beside it. One JSON line per run, then a summary line:
the largest count sustained, and its capture-to-detection p95.

    python -m bench.gpu_capacity --device cuda:0 --json bench-output/gpu.json       # on the GPU host
    python -m bench.gpu_capacity --device cpu --start 1 --max 2                      # a dry run here

Prepared for a session that is lent a GPU (one run, about 5 minutes): see README, Benchmark.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.harness import multi_camera, run_pipeline
from bench.limits import decode_frames, detect_limits
from pipeline.config import VigilConfig, load_config

ROOT = Path(__file__).resolve().parent.parent
FPS = 5.0


def capacity_config(cameras: int, device: str, batch: int, folder: Path, replicas: int = 1) -> VigilConfig:
    """The demo replayed by ``cameras`` cameras at 5 fps, video only, detected by yolo11n.yaml on
    ``device`` by ``replicas`` detect processes (each serving its share of the cameras)."""
    base = load_config(ROOT / "configs" / "demo.yaml")
    config = multi_camera(
        base,
        str(ROOT / "media" / "demo.mp4"),
        cameras,
        "realtime",
        folder,
        FPS,
        replicas=(replicas, 1),
        backend="ultralytics",
        model="yolo11n.yaml",
        device=device,
        batch=batch,
        live_batch=batch,
        input_size=640,
        threads=max(1, (os.cpu_count() or 2) // (2 * replicas)),
    )
    # Video only, so the detector is what is measured; yolo11n.yaml's classes are numbers, so the
    # demo's 'person' rules would only warn: the cameras keep no class rules (as the bench's loops).
    unruled = {"audio": False, "zones": {}, "lines": {}, "masks": {}, "objects": {}, "count_threshold": {}}
    silent = {name: camera.model_copy(update=unruled) for name, camera in config.cameras.items()}
    return config.model_copy(update={"cameras": silent})


def standalone(device: str, batch: int, folder: Path) -> dict[str, Any]:
    """The detector alone on ``device``: frames/s at ``batch`` and its batch-1 latency, the ceiling
    the pipeline's camera count is read against (how many cameras at 5 fps it could feed)."""
    config = capacity_config(1, device, batch, folder)
    frames, _, _ = decode_frames(config.cameras["cam0"])
    figures = detect_limits(config, frames * 4)
    return {"standalone": {**figures, "device": device, "batch": batch, "cameras_at_5fps": int(figures["fps"] // FPS)}}


def steady(series: list[dict[str, Any]]) -> dict[str, float]:
    """Frames/s analysed and sent by decode over the middle half of the run's active intervals
    (from the first with frames analysed to the last): cameras that start a few seconds apart, the
    models' first runs and the clips' ends are outside it, so it is what the pipeline sustains."""
    active = [row for row in series if row["analysed_fps"] > 0]
    if not active:
        return {"analysed_fps": 0.0, "sampled_fps": 0.0, "seconds": 0.0}
    first, last = active[0]["t"], active[-1]["t"]
    low, high = first + 0.25 * (last - first), first + 0.75 * (last - first)
    window = [row for row in series if low <= row["t"] <= high]
    if len(window) < 2:
        return {"analysed_fps": 0.0, "sampled_fps": 0.0, "seconds": 0.0}
    begin, end = window[0], window[-1]
    seconds = end["t"] - begin["t"]
    return {
        "analysed_fps": round((end["analysed"] - begin["analysed"]) / seconds, 2),
        "sampled_fps": round((end["sampled"] - begin["sampled"]) / seconds, 2),
        "seconds": round(seconds, 1),
    }


def one_run(cameras: int, device: str, batch: int, folder: Path, replicas: int = 1) -> dict[str, Any]:
    result = run_pipeline(capacity_config(cameras, device, batch, folder, replicas), logging.WARNING)
    asked = cameras * FPS
    latency = result["latency"]["capture_to_detection"] or {}
    held = steady(result["series"])
    batches = result["detector"]["batches"]
    return {
        "cameras": cameras,
        "device": device,
        "batch": batch,
        "replicas": replicas,
        "asked_fps": asked,
        "steady_fps": held["analysed_fps"],  # over the middle of the run: what it sustains
        "kept_up": round(held["analysed_fps"] / asked, 3),
        "decode_kept_up": round(held["sampled_fps"] / asked, 3),  # decode's own share: the host's CPUs
        "run_fps": result["steady_fps"],  # the whole run, from each camera's first frame
        "run_kept_up": round(result["steady_fps"] / asked, 3),
        "analysed": result["analysed"],
        "sampled": result["sampled"],
        "skipped_at_detect": result["skipped_at_detect"],
        "mean_batch": round(result["analysed"] / batches, 1) if batches else None,
        "startup_s": result["startup_s"],
        "p50_ms": latency.get("p50_ms"),
        "p95_ms": latency.get("p95_ms"),
        "p99_ms": latency.get("p99_ms"),
        "processes": result["processes"],
    }


def search(measure: Callable[[int], dict[str, Any]], start: int, most: int, keep: float) -> list[dict[str, Any]]:
    """Runs at ``start`` cameras, doubling while a run keeps up (``kept_up`` at least ``keep``) up to
    ``most``; then one run halfway between the last count that kept up and the first that did not."""
    runs: list[dict[str, Any]] = []
    cameras, missed = start, None
    while cameras <= most:
        runs.append(measure(cameras))
        if runs[-1]["kept_up"] < keep:
            missed = cameras
            break
        cameras *= 2
    kept = [run["cameras"] for run in runs if run["kept_up"] >= keep]
    if missed is not None and kept and max(kept) < (max(kept) + missed) // 2 < missed:
        runs.append(measure((max(kept) + missed) // 2))
    return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda:0", help="detector device (cuda:0, cpu)")
    parser.add_argument("--batch", type=int, default=16, help="detector batch (live_batch too)")
    parser.add_argument("--replicas", type=int, default=1, help="detect processes sharing the device")
    parser.add_argument("--start", type=int, default=8, help="cameras in the first run")
    parser.add_argument("--max", type=int, default=128, help="most cameras tried")
    parser.add_argument("--keep", type=float, default=0.95, help="share of the asked frames/s that counts as kept up")
    parser.add_argument("--json", help="also write the runs here")
    parser.add_argument(
        "--no-standalone",
        dest="standalone",
        action="store_false",
        help="skip measuring the detector alone first",
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("VIGIL_DEMO_SECRET", "vigil-demo-secret")
    records: list[dict[str, Any]] = []
    out = Path(args.json) if args.json else None

    def record(entry: dict[str, Any]) -> None:
        records.append(entry)
        print(json.dumps({k: v for k, v in entry.items() if k != "processes"}), flush=True)
        if out:  # after each run, so a run cut short by its time limit still leaves the ones before
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(records, indent=2))

    with tempfile.TemporaryDirectory(prefix="vigil-gpu-") as tmp:
        if args.standalone:
            record(standalone(args.device, args.batch, Path(tmp) / "standalone"))

        def measure(cameras: int) -> dict[str, Any]:
            run = one_run(cameras, args.device, args.batch, Path(tmp) / f"n{cameras}", args.replicas)
            record(run)
            return run

        runs = search(measure, args.start, args.max, args.keep)
    kept = sorted((run for run in runs if run["kept_up"] >= args.keep), key=lambda run: run["cameras"])
    setup = f"{args.device}, batch {args.batch}, {args.replicas} detect process(es)"
    if kept:
        best = kept[-1]
        print(
            f"gpu capacity: {best['cameras']} cameras at {FPS:g} fps sustained on {setup}: "
            f"{best['steady_fps']} frames/s analysed in the steady middle of the run "
            f"({best['run_kept_up']:.0%} of the frames asked over the whole run), "
            f"capture-to-detection p95 {best['p95_ms']} ms"
        )
    else:
        print(f"gpu capacity: not even {args.start} cameras at {FPS:g} fps sustained on {setup}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
