"""``run.py bench``: vigil against the limits of its own parts and against what a user would
otherwise write, measured in one run on the same clip, model and machine.

Sections (each printed as it finishes; all of them in the JSON):

1. standalone limits: decode only; detect only (throughput at the configured batch, and batch-1
   latency) for the opencv backend and, with ``--backends``, ultralytics; transcribe only (how many
   seconds of audio per second of compute);
2. the pipeline in ``fast`` mode with one camera (throughput against the slowest part);
3. the pipeline with ``--cameras`` cameras in ``realtime`` mode (the clip paced like cameras):
   analysed frames/s per camera, drops, capture-to-detection / -alert / -delivery latency p50, p95,
   p99, spoken-word-to-transcript latency, and CPU % and resident memory per stage process, sampled
   every second into a time series (plotted into a PNG when matplotlib is installed);
4. with ``--baseline``: the ultralytics backend in vigil against one ``model.predict(source,
   stream=True)`` loop per camera, at the same CPU budget and the same frames;
5. the performance goals as ratios.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from bench.limits import baseline, decode_frames, detect_limits, transcribe_limit, transport_cost
from bench.report import goals, plot, report
from bench.sampler import Sampler, latency
from bench.steal import StealMeter, measured_quietly, with_steal
from pipeline.commands import load_or_report, replay_config
from pipeline.config import VigilConfig, WebhookConfig
from pipeline.metrics import Histogram
from pipeline.preflight import probe_video
from pipeline.progress import ProgressDisplay, total
from pipeline.receiver import WebhookReceiver
from pipeline.supervisor import Supervisor

BENCH_SECRET_ENV = "VIGIL_BENCH_SECRET"
LATENCIES = (
    "capture_to_detector",
    "detector_run",
    "capture_to_detection",
    "capture_to_alert",
    "capture_to_delivery",
    "utterance_end_to_transcript",
    "keyword_after_utterance_end",
)


def log(text: str) -> None:
    print(f"bench: {text}", file=sys.stderr, flush=True)


# ----- the pipeline, sampled ----------------------------------------------------------------------
def multi_camera(
    base: VigilConfig,
    clip: str,
    cameras: int,
    mode: str,
    folder: Path,
    fps: float | None = None,
    replicas: tuple[int, int] = (1, 1),
    **detect: Any,
) -> VigilConfig:
    """``cameras`` copies of the base config's first camera, all replaying ``clip`` (analysed at
    ``fps`` when given), with ``replicas`` (detect, transcribe) processes sharing each stage's cores."""
    folder.mkdir(parents=True, exist_ok=True)
    single = replay_config(base, clip, mode, None)
    camera = next(iter(single.cameras.values()))
    if fps is not None:
        camera = camera.model_copy(update={"analysis": camera.analysis.model_copy(update={"fps": fps})})
    stages = single.stages
    for name, count in zip(("detect", "transcribe"), replicas, strict=True):
        if count > 1:
            settings = getattr(stages, name)
            share = max(1, settings.threads // count)
            stages = stages.model_copy(update={name: settings.model_copy(update={"replicas": count, "threads": share})})
    stages = stages.model_copy(update={"detect": stages.detect.model_copy(update=detect)})
    alerts = single.alerts.model_copy(
        update={
            "log_path": None,
            "outbox_path": str(folder / "alerts.sqlite"),
            "pending_path": str(folder / "fuse-pending.sqlite"),
            "end_of_stream_wait_s": 10.0,
        }
    )
    runtime = single.runtime.model_copy(update={"metrics_address": "127.0.0.1:0", "ipc_dir": str(folder)})
    return single.model_copy(
        update={
            "cameras": {f"cam{i}": camera for i in range(cameras)},
            "stages": stages,
            "alerts": alerts,
            "runtime": runtime,
        }
    )


def run_pipeline(config: VigilConfig, log_level: int) -> dict[str, Any]:
    """Run to the end of the clip with a local receiver; figures from the supervisor's metrics."""
    os.environ.setdefault(BENCH_SECRET_ENV, "bench-secret")
    with WebhookReceiver(os.environ[BENCH_SECRET_ENV]) as receiver:
        webhook = WebhookConfig(url=receiver.url, secret_env=BENCH_SECRET_ENV)
        config = config.model_copy(update={"alerts": config.alerts.model_copy(update={"webhooks": [webhook]})})
        sampler = Sampler()
        progress = ProgressDisplay(every_s=10.0)

        def tick(supervisor: Supervisor) -> None:
            sampler(supervisor)
            progress(supervisor)

        supervisor = Supervisor(config, on_tick=tick, tick_s=0.05, log_level=log_level)
        began_cpu, began = time.process_time(), time.monotonic()
        try:
            summary = supervisor.run()
        finally:
            progress.finish()
        supervisor_cpu = 100 * (time.process_time() - began_cpu) / max(1e-6, time.monotonic() - began)
        delivered = len(receiver.deliveries)
    if summary.exit_code or sampler.first_analysed_at is None:
        raise RuntimeError(f"pipeline run failed: {summary.failed or summary.camera_errors}")
    histograms: dict[str, Histogram] = {}
    for per_stage in supervisor.histograms.values():  # replicas of a stage report the same names
        for name, hist in per_stage.items():
            histograms[name] = histograms[name].plus(hist) if name in histograms else hist
    analysed = total(summary.counters, "detect", "frames_analysed")
    cameras = len(config.cameras)
    analysed_rate = span_rate(summary.counters, "detect")
    return {
        "cameras": cameras,
        "mode": config.runtime.mode,
        "analysed": analysed,
        "sampled": total(summary.counters, "decode", "frames_sent"),
        "dropped_at_decode": total(summary.counters, "decode", "frames_dropped"),
        "skipped_at_detect": total(summary.counters, "detect", "frames_skipped"),
        "steady_fps": round(analysed_rate, 2),
        "fps_per_camera": round(analysed_rate / cameras, 2),
        "scored_fps": round(span_rate(summary.counters, "fuse"), 2),  # at the pipeline's end
        "startup_s": round(sampler.first_analysed_at - sampler.started, 2),
        "alerts_delivered": delivered,
        "detector": {  # where the detector's time went: its model, waiting for frames, waiting for its turn
            "model_s": round(total(summary.counters, "detect", "detect_ms_total") / 1000, 2),
            "batches": total(summary.counters, "detect", "batches"),
            "input_wait_s": round(total(summary.counters, "detect", "input_wait_ms_total") / 1000, 2),
            "turn_wait_s": round(total(summary.counters, "detect", "compute_wait_ms_total") / 1000, 2),
        },
        "speech": {
            "windows": total(summary.counters, "transcribe", "windows_transcribed"),
            "partials": total(summary.counters, "transcribe", "partial_transcripts"),
            "model_s": round(total(summary.counters, "transcribe", "transcribe_ms_total") / 1000, 2),
        },
        "latency": {name: latency(histograms, name) for name in LATENCIES},
        "processes": sampler.processes() | {"supervisor": {"cpu_percent": round(supervisor_cpu, 1)}},
        "series": sampler.series(),
    }


def span_rate(counters: dict[str, dict[str, int]], stage: str) -> float:
    """Frames/s of a stage from its own span counters (``pipeline.metrics.ThroughputSpan``): the
    frames its replicas did after their first batch over the longest of their spans."""
    replicas = [c for name, c in counters.items() if name == stage or name.startswith(stage + ":")]
    span_s = max((c.get("span_ms", 0) for c in replicas), default=0) / 1000
    return sum(c.get("span_frames", 0) for c in replicas) / span_s if span_s > 0 else 0.0


# ----- the run ----------------------------------------------------------------------------------
def standalone(config: VigilConfig, args: argparse.Namespace) -> tuple[dict[str, Any], list[np.ndarray]]:
    """The standalone limits of the same work (medians of ``args.repeat`` runs where timing is short;
    the detectors' measured again when the host was busy), and the clip's analysis frames."""
    repeat = args.repeat
    camera = next(iter(config.cameras.values()))
    log("standalone: decode only ...")
    decode_runs = []
    frames: list[np.ndarray] = []
    audio = np.zeros(0, np.float32)
    for _ in range(repeat):
        frames, audio, seconds = decode_frames(camera, audio=True)
        decode_runs.append(len(frames) / seconds)
    results: dict[str, Any] = {"decode_only_fps": round(statistics.median(decode_runs), 1), "detect_only": {}}
    for backend in dict.fromkeys(["opencv", *args.backends]):  # opencv always: the goals are judged on it
        log(f"standalone: detect only ({backend}) ...")
        settings = detector_settings(config, backend)
        figures = quietly(
            results, args, f"detect only ({backend})", functools.partial(detect_medians, settings, frames, repeat)
        )
        results["detect_only"][backend] = {**figures, "model": settings.stages.detect.model}
    log("standalone: transport (ZeroMQ ipc) ...")
    results["transport"] = transport_cost(frames[0])
    log("standalone: transcribe only ...")
    results["transcribe_only"] = transcribe_limit(config, audio)
    return results, frames


def detect_medians(config: VigilConfig, frames: list[np.ndarray], repeat: int) -> dict[str, Any]:
    """The median throughput and batch-1 latency of ``repeat`` detect-only runs."""
    runs = [detect_limits(config, frames) for _ in range(repeat)]
    return {
        "fps": statistics.median(r["fps"] for r in runs),
        "batch1_latency_ms": statistics.median(r["batch1_latency_ms"] for r in runs),
        "lanes": runs[0]["lanes"],
    }


def run_suite(args: argparse.Namespace) -> int:
    problem = probe_video(args.clip)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    base = load_or_report(args.config)
    if base is None:
        return 2
    results: dict[str, Any] = {"clip": Path(args.clip).name, "cores": os.cpu_count(), "realtime_fps": args.fps}
    stolen = StealMeter()
    with tempfile.TemporaryDirectory(prefix="vigil-bench-") as tmp:
        folder = Path(tmp)
        one = multi_camera(base, args.clip, 1, "fast", folder / "one")
        sections = set(args.sections)
        replicas = (args.detect_replicas, args.transcribe_replicas)
        results["replicas"] = {"detect": replicas[0], "transcribe": replicas[1], "baseline": args.baseline_replicas}
        limits, frames = standalone(one, args)
        results.update(limits)
        if "fast" in sections:
            fast_section(results, one, frames, args)
        if "realtime" in sections:
            log(f"pipeline: {args.cameras} cameras, realtime ...")
            many = multi_camera(base, args.clip, args.cameras, "realtime", folder / "many", args.fps, replicas)
            realtime = quietly(results, args, "realtime pipeline", lambda: run_pipeline(many, args.log_level))
            results["pipeline_realtime"] = realtime
        if args.baseline:
            baseline_section(results, base, one, folder, args)
    results["cpu_steal_percent"] = stolen.percent()
    results["goals"] = goals(results)
    print(report(results))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2))
    if args.plot:
        print(plot(results, Path(args.plot)))
    return 0


def baseline_section(
    results: dict[str, Any], base: VigilConfig, one: VigilConfig, folder: Path, args: argparse.Namespace
) -> None:
    """vigil with the ultralytics backend (no audio) against one predict loop per camera, alternated
    ``args.pairs`` times; the medians are compared."""
    ultra = detector_settings(one, "ultralytics").stages.detect
    camera = next(iter(one.cameras.values()))
    stride = max(1, round(source_fps(args.clip) / camera.analysis.fps))
    many = multi_camera(
        base,
        args.clip,
        args.cameras,
        "fast",
        folder / "ultra",
        replicas=(args.baseline_replicas, 1),
        backend="ultralytics",
        model=ultra.model,
        threads=max(1, (os.cpu_count() or 1) // args.baseline_replicas),
    )
    # The predict loops do no audio either. yolo11n.yaml's classes are numbers, so the demo's person
    # rules could never match there (detect warned once per camera and replica that 'person' is not a
    # class of the model): the cameras keep no class rules.
    unruled = {"audio": False, "zones": {}, "lines": {}, "masks": {}, "objects": {}, "count_threshold": {}}
    silent = {name: cam.model_copy(update=unruled) for name, cam in many.cameras.items()}
    many = many.model_copy(update={"cameras": silent})
    loops, ours = [], []
    for turn in range(1, args.pairs + 1):  # alternated, so a machine that slows down hits both
        log(f"baseline {turn}/{args.pairs}: {args.cameras} ultralytics predict loops ...")
        loops.append(
            quietly(
                results,
                args,
                "predict loops",
                lambda: baseline(args.clip, args.cameras, ultra.model, ultra.input_size, stride),
            )
        )
        log(f"pipeline {turn}/{args.pairs}: {args.cameras} cameras, fast, ultralytics backend ...")
        ours.append(quietly(results, args, "pipeline", lambda: run_pipeline(many, args.log_level)))
    results["baseline_predict_loops"] = median_run(loops, "fps")
    results["pipeline_fast_ultralytics"] = median_run(ours, "steady_fps")


def fast_section(results: dict[str, Any], one: VigilConfig, frames: list[np.ndarray], args: argparse.Namespace) -> None:
    """The 1-camera fast replay, alternated ``args.pairs`` times with the opencv detector alone (the
    first standalone figure is the one measured above), so a machine that slows down hits both;
    the medians are compared."""
    detect_alone = results["detect_only"]["opencv"]
    alone, alone_steal = [detect_alone["fps"]], [detect_alone["cpu_steal_percent"]]
    runs = []
    for turn in range(1, args.pairs + 1):
        if turn > 1:
            log(f"standalone {turn}/{args.pairs}: detect only (opencv) ...")
            single = quietly(
                results,
                args,
                "detect only",
                lambda: detect_limits(detector_settings(one, "opencv"), frames, latency=False),
            )
            alone.append(single["fps"])
            alone_steal.append(single["cpu_steal_percent"])
        log(f"pipeline {turn}/{args.pairs}: 1 camera, fast ...")
        runs.append(quietly(results, args, "pipeline", lambda: run_pipeline(one, args.log_level)))
    detect_alone.update(fps=statistics.median(alone), fps_runs=alone, cpu_steal_percent_runs=alone_steal)
    results["pipeline_fast_1"] = median_run(runs, "steady_fps")
    results["pipeline_fast_1"]["cpu_steal_percent_runs"] = [run["cpu_steal_percent"] for run in runs]


def quietly(
    results: dict[str, Any], args: argparse.Namespace, what: str, run: Callable[[], dict[str, Any]]
) -> dict[str, Any]:
    """``run()`` with the CPU stolen by other guests meanwhile, measured again while that exceeded
    ``--max-steal`` %; the repeats are added to the bench's tally."""
    max_steal = args.max_steal if args.max_steal >= 0 else None
    result = measured_quietly(with_steal(run), max_steal, args.steal_retries, what, log)
    results["noisy_runs_repeated"] = results.get("noisy_runs_repeated", 0) + result["noisy_runs_repeated"]
    return result


def median_run(runs: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """The run whose ``key`` is the median (the lower middle one for an even count), with every
    run's ``key`` listed under ``<key>_runs``."""
    ordered = sorted(runs, key=lambda run: run[key])
    return {**ordered[(len(ordered) - 1) // 2], f"{key}_runs": [run[key] for run in runs]}


def detector_settings(config: VigilConfig, backend: str) -> VigilConfig:
    detect = config.stages.detect
    if backend == "ultralytics":
        detect = detect.model_copy(update={"backend": "ultralytics", "model": "yolo11n.yaml"})
    return config.model_copy(update={"stages": config.stages.model_copy(update={"detect": detect})})


def source_fps(clip: str) -> float:
    import av

    with av.open(clip) as container:
        rate = container.streams.video[0].average_rate
        return float(rate) if rate else 25.0
