"""``run.py bench``: throughput of the whole pipeline in ``fast`` mode against its own parts, measured
in one run on the same clip and settings:

* decode only: PyAV demux + decode + sampling + resize to BGR, as the decode stage does it;
* detect only: the configured detector on the pre-decoded analysis frames, in batches;
* pipeline: every stage as its own process over ZeroMQ, steady state (from the first analysed frame
  to the last, so process start and model loading are reported apart).

Medians of ``--repeat`` runs for the standalone parts; the ratio pipeline / slowest part is the
pipeline's overhead.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.commands import load_or_report, probe_video, replay_config
from pipeline.config import VigilConfig
from pipeline.progress import total
from pipeline.supervisor import Supervisor


@dataclass
class PipelineTiming:
    started: float = field(default_factory=time.monotonic)
    first_frame_at: float | None = None
    frames_at_first: int = 0
    frames: int = 0
    last_change_at: float | None = None

    def __call__(self, supervisor: Supervisor) -> None:
        analysed = total(supervisor.counters, "detect", "frames_analysed")
        now = time.monotonic()
        if analysed and self.first_frame_at is None:
            self.first_frame_at, self.frames_at_first = now, analysed
        if analysed != self.frames:
            self.frames, self.last_change_at = analysed, now


def decode_frames(config: VigilConfig) -> list[np.ndarray]:
    from stages.decode import VideoSample, sample_media
    from stages.media import open_media

    camera = next(iter(config.cameras.values()))
    with open_media(camera.source, timeout_s=10) as media:
        video = media.container.streams.video[0]
        video.thread_type = "AUTO"
        return [
            s.image
            for s in sample_media(media, video, None, camera.analysis, config.stages.decode.audio_chunk_s)
            if isinstance(s, VideoSample)
        ]


def time_decode(config: VigilConfig) -> tuple[float, list[np.ndarray]]:
    began = time.perf_counter()
    frames = decode_frames(config)
    return len(frames) / (time.perf_counter() - began), frames


def time_detect(config: VigilConfig, frames: list[np.ndarray]) -> float:
    import cv2

    from stages.detectors.base import create_detector

    cv2.setNumThreads(config.stages.detect.threads)
    detector = create_detector(config.stages.detect)
    batch = config.stages.detect.batch
    detector.detect(frames[:batch])  # warm-up
    began = time.perf_counter()
    for i in range(0, len(frames), batch):
        detector.detect(frames[i : i + batch])
    return len(frames) / (time.perf_counter() - began)


def time_pipeline(config: VigilConfig, log_level: int) -> dict[str, float]:
    timing = PipelineTiming()
    summary = Supervisor(config, on_tick=timing, tick_s=0.05, log_level=log_level).run()
    if summary.exit_code or timing.first_frame_at is None or timing.last_change_at is None:
        raise RuntimeError(f"pipeline run failed: {summary.failed or summary.camera_errors}")
    analysed = total(summary.counters, "detect", "frames_analysed")
    steady_s = max(1e-6, timing.last_change_at - timing.first_frame_at)
    return {
        "frames": analysed,
        "wall_s": summary.wall_s,
        "startup_s": timing.first_frame_at - timing.started,
        "steady_fps": (analysed - timing.frames_at_first) / steady_s,
        "overall_fps": analysed / summary.wall_s,
    }


def run_bench(args: argparse.Namespace) -> int:
    problem = probe_video(args.clip)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    base = load_or_report(args.config)
    if base is None:
        return 2
    config = replay_config(base, args.clip, "fast", None)
    config = config.model_copy(update={"alerts": config.alerts.model_copy(update={"webhooks": [], "log_path": None})})
    decode_runs, detect_runs, pipeline_runs = [], [], []
    frames: list[np.ndarray] = []
    for run in range(args.repeat):
        print(f"bench: run {run + 1}/{args.repeat}: decode only ...", file=sys.stderr, flush=True)
        fps, frames = time_decode(config)
        decode_runs.append(fps)
        print(f"bench: run {run + 1}/{args.repeat}: detect only ...", file=sys.stderr, flush=True)
        detect_runs.append(time_detect(config, frames))
        print(f"bench: run {run + 1}/{args.repeat}: whole pipeline (fast) ...", file=sys.stderr, flush=True)
        pipeline_runs.append(time_pipeline(config, args.log_level))
    decode_fps = statistics.median(decode_runs)
    detect_fps = statistics.median(detect_runs)
    steady = statistics.median(r["steady_fps"] for r in pipeline_runs)
    overall = statistics.median(r["overall_fps"] for r in pipeline_runs)
    startup = statistics.median(r["startup_s"] for r in pipeline_runs)
    slowest = min(decode_fps, detect_fps)
    detect = config.stages.detect
    result = {
        "clip": str(Path(args.clip).name),
        "analysed_frames": len(frames),
        "detector": f"{detect.backend} {detect.model} {detect.input_size}px "
        f"batch {detect.batch} threads {detect.threads}",
        "repeat": args.repeat,
        "decode_only_fps": round(decode_fps, 1),
        "detect_only_fps": round(detect_fps, 1),
        "pipeline_steady_fps": round(steady, 1),
        "pipeline_overall_fps": round(overall, 1),
        "pipeline_startup_s": round(startup, 2),
        "ratio_pipeline_to_slowest_part": round(steady / slowest, 3),
        "runs": {"decode": decode_runs, "detect": detect_runs, "pipeline": pipeline_runs},
    }
    print(
        f"vigil bench: {result['clip']}, {len(frames)} analysed frames, {result['detector']}, "
        f"medians of {args.repeat} runs\n"
        f"  decode only           {decode_fps:8.1f} analysis frames/s\n"
        f"  detect only           {detect_fps:8.1f} analysis frames/s\n"
        f"  pipeline, steady      {steady:8.1f} analysis frames/s = {steady / slowest:.2f} x the slowest part\n"
        f"  pipeline, with start  {overall:8.1f} analysis frames/s (process start + model load {startup:.1f} s)"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))
    return 0
