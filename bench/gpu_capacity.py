"""How many cameras at 5 fps one detector device sustains, and their capture-to-detection p95.

Issue 5, item 5: the ``ultralytics`` backend with a model built from ``yolo11n.yaml``, batch 16, on
``cuda:0`` when there is a GPU. Cameras replay the demo clip in ``realtime`` (paced like cameras,
video only, so the detector is what is measured); the count doubles from ``--start`` until a run
analyses less than ``--keep`` of the frames asked for, or ``--max`` is reached. One JSON line per run,
then a summary line: the largest count that kept up, and its p95.

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
from pathlib import Path
from typing import Any

from bench.harness import multi_camera, run_pipeline
from pipeline.config import load_config

ROOT = Path(__file__).resolve().parent.parent
FPS = 5.0


def one_run(cameras: int, device: str, batch: int, folder: Path) -> dict[str, Any]:
    base = load_config(ROOT / "configs" / "demo.yaml")
    config = multi_camera(
        base,
        str(ROOT / "media" / "demo.mp4"),
        cameras,
        "realtime",
        folder,
        FPS,
        backend="ultralytics",
        model="yolo11n.yaml",
        device=device,
        batch=batch,
        live_batch=batch,
        input_size=640,
        threads=max(1, (os.cpu_count() or 2) // 2),
    )
    silent = {name: camera.model_copy(update={"audio": False}) for name, camera in config.cameras.items()}
    result = run_pipeline(config.model_copy(update={"cameras": silent}), logging.WARNING)
    asked = cameras * FPS
    latency = result["latency"]["capture_to_detection"] or {}
    return {
        "cameras": cameras,
        "device": device,
        "batch": batch,
        "analysed_fps": result["steady_fps"],
        "asked_fps": asked,
        "kept_up": round(result["steady_fps"] / asked, 3),
        "p50_ms": latency.get("p50_ms"),
        "p95_ms": latency.get("p95_ms"),
        "processes": result["processes"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda:0", help="detector device (cuda:0, cpu)")
    parser.add_argument("--batch", type=int, default=16, help="detector batch (live_batch too)")
    parser.add_argument("--start", type=int, default=8, help="cameras in the first run")
    parser.add_argument("--max", type=int, default=128, help="most cameras tried")
    parser.add_argument("--keep", type=float, default=0.95, help="share of the asked frames/s that counts as kept up")
    parser.add_argument("--json", help="also write the runs here")
    args = parser.parse_args(argv)
    os.environ.setdefault("VIGIL_DEMO_SECRET", "vigil-demo-secret")
    runs = []
    cameras = args.start
    with tempfile.TemporaryDirectory(prefix="vigil-gpu-") as tmp:
        while cameras <= args.max:
            run = one_run(cameras, args.device, args.batch, Path(tmp) / f"n{cameras}")
            runs.append(run)
            print(json.dumps({k: v for k, v in run.items() if k != "processes"}), flush=True)
            if run["kept_up"] < args.keep:
                break
            cameras *= 2
    kept = [run for run in runs if run["kept_up"] >= args.keep]
    best = kept[-1] if kept else None
    if best:
        print(
            f"gpu capacity: {best['cameras']} cameras at {FPS:g} fps kept up on {args.device} "
            f"(batch {args.batch}), capture-to-detection p95 {best['p95_ms']} ms"
        )
    else:
        print(f"gpu capacity: not even {args.start} cameras at {FPS:g} fps kept up on {args.device}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(runs, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
