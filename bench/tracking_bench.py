"""Tracking benchmark: what fuse's object tracker costs a frame as the crowd grows, on synthetic
walkers (random positions and speeds, a little jitter, a fifth of the detections missing, boxes in a
shuffled order), at 5 analysed frames/s.

Reports, per crowd size: CPU ms per frame (median of ``--repeat`` runs) and how many cameras at
5 fps one core could track at that size (tracking alone: fuse also scores, and receives the frames).

    python -m bench.tracking_bench [--people 10 30 60] [--frames 100] [--repeat 5] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.arguments import at_least
from pipeline.messages import Box
from stages.fusion.tracking import ObjectTracker

FPS = 5.0


def walkers(people: int, frames: int, seed: int = 0) -> list[list[Box]]:
    """``frames`` frames of ``people`` walkers, each box 4 % wide and 10 % high."""
    rng = np.random.default_rng(seed)
    start = rng.uniform(0.05, 0.9, (people, 2))
    speed = rng.normal(0.0, 0.08, (people, 2))  # picture fractions per second
    out = []
    for frame in range(frames):
        where = start + speed * frame / FPS + rng.normal(0.0, 0.005, (people, 2))
        seen = rng.uniform(size=people) >= 0.2
        boxes = [Box("person", 0.8, float(x), float(y), float(x) + 0.04, float(y) + 0.1) for x, y in where[seen]]
        rng.shuffle(boxes)
        out.append(boxes)
    return out


def ms_per_frame(frames: list[list[Box]], repeat: int) -> float:
    runs = []
    for _ in range(repeat):
        tracker = ObjectTracker()
        began = time.process_time()
        for index, boxes in enumerate(frames):
            tracker.update(index / FPS, boxes)
        runs.append(1000 * (time.process_time() - began) / len(frames))
    return statistics.median(runs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.tracking_bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--people", type=at_least(1), nargs="+", default=[10, 30, 60], help="crowd sizes")
    parser.add_argument("--frames", type=at_least(2), default=100, help="frames per run (100)")
    parser.add_argument("--repeat", type=at_least(1), default=5, help="runs per size; the median is reported (5)")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args(argv)
    results: dict[str, Any] = {"fps": FPS, "sizes": []}
    print(f"tracking {args.frames} frames at {FPS:g} fps, median of {args.repeat}")
    for people in args.people:
        ms = ms_per_frame(walkers(people, args.frames), args.repeat)
        cameras = 1000 / (ms * FPS) if ms > 0 else float("inf")
        results["sizes"].append({"people": people, "ms_per_frame": round(ms, 3), "cameras_per_core": round(cameras)})
        line = f"{ms:7.3f} ms/frame, {cameras:8.0f} cameras at {FPS:g} fps a core (tracking alone)"
        print(f"  {people:4d} people: {line}")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
