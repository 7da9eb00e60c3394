"""The benchmark's results as the issue's goals (ratios), a text report and a PNG plot."""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from bench.steal import NOISY_PERCENT


def goals(results: dict[str, Any]) -> dict[str, Any]:
    """The issue's goals, each as a measured ratio and whether it holds."""
    out: dict[str, Any] = {}
    detect = results["detect_only"]["opencv"]
    slowest = min(results["decode_only_fps"], detect["fps"])
    if "pipeline_fast_1" in results:
        fast = results["pipeline_fast_1"]
        ratio = fast["steady_fps"] / slowest
        out["fast_pipeline_vs_slowest_stage"] = {"ratio": round(ratio, 3), "goal": ">= 0.9", "met": ratio >= 0.9}
        pairs = list(zip(detect.get("fps_runs", []), fast.get("steady_fps_runs", []), strict=False))
        if len(pairs) > 1:
            # each pipeline run against the standalone run just before it: a machine whose speed
            # drifts during the bench moves both figures of a pair, so the pairs show the noise
            paired = [round(run / min(results["decode_only_fps"], alone), 3) for alone, run in pairs]
            out["fast_pipeline_vs_slowest_stage"]["paired_ratios"] = paired
            out["fast_pipeline_vs_slowest_stage"]["paired_median"] = round(statistics.median(paired), 3)
    realtime = results.get("pipeline_realtime", {"latency": {}})["latency"]
    live = realtime.get("capture_to_detection")
    if live:
        limit = 2 * detect["batch1_latency_ms"] + 100
        out["realtime_p95_detection_latency"] = {
            "p95_ms": live["p95_ms"],
            "limit_ms": limit,
            "ratio": round(live["p95_ms"] / limit, 3),
            "goal": "<= 1 (2 x batch-1 latency + 100 ms)",
            "met": live["p95_ms"] <= limit,
        }
    speech = realtime.get("keyword_after_utterance_end")
    if speech:
        out["keyword_to_fuse_p95"] = {"p95_ms": speech["p95_ms"], "goal": "<= 3000 ms", "met": speech["p95_ms"] <= 3000}
    if "transport" in results and "pipeline_fast_1" in results:
        # two hops carry the pixels (decode -> detect -> fuse); the share of the machine's CPU they take
        cost_s = 2 * results["transport"]["cpu_ms_per_message"] / 1000 * results["pipeline_fast_1"]["steady_fps"]
        share = cost_s / (results["cores"] or 1)
        out["transport_share_of_cpu"] = {
            "percent": round(100 * share, 2),
            "goal": "shared memory only if > 5 %",
            "met": share <= 0.05,
        }
    if "baseline_predict_loops" in results:
        ours = results["pipeline_fast_ultralytics"]["steady_fps"]
        theirs = results["baseline_predict_loops"]["fps"]
        out["vigil_vs_predict_loops"] = {"ratio": round(ours / theirs, 3), "goal": "> 1", "met": ours > theirs}
    return out


def report(results: dict[str, Any]) -> str:
    lines = [f"vigil bench: {results['clip']} on {results['cores']} cores"]
    if "replicas" in results:
        lines.append(
            f"  replicas in the realtime run: detect {results['replicas']['detect']}, "
            f"transcribe {results['replicas']['transcribe']}; detect in the ultralytics run: "
            f"{results['replicas'].get('baseline', results['replicas']['detect'])}"
        )
    lines.append(f"  decode only                 {results['decode_only_fps']:8.1f} analysis frames/s")
    for backend, figures in results["detect_only"].items():
        lanes = figures.get("lanes", 1)
        how = f"{lanes} model copies side by side" if lanes > 1 else "one model"
        lines.append(
            f"  detect only ({backend:<11})   {figures['fps']:8.1f} frames/s ({how}), batch-1 "
            f"{figures['batch1_latency_ms']} ms"
        )
    t = results["transcribe_only"]
    lines.append(f"  transcribe only             {t['x_realtime']:8.1f} x realtime ({t['audio_s']} s of audio)")
    if "transport" in results:
        x = results["transport"]
        lines.append(
            f"  transport (ipc)             {x['messages_per_s']:8.1f} frames/s, {x['cpu_ms_per_message']} ms CPU per "
            f"{x['frame_bytes'] // 1024} KiB frame"
        )
    for key, title in (
        ("pipeline_fast_1", "pipeline, 1 camera, fast"),
        ("pipeline_realtime", "pipeline, realtime"),
        ("pipeline_fast_ultralytics", "pipeline, ultralytics, fast"),
    ):
        run = results.get(key)
        if run is None:
            continue
        det = run["latency"]["capture_to_detection"] or {}
        lines.append(
            f"  {title:<28}{run['steady_fps']:8.1f} frames/s "
            f"({run['cameras']} camera(s), {run['fps_per_camera']}/camera), "
            f"dropped {run['dropped_at_decode']}, skipped {run['skipped_at_detect']}, "
            f"capture->detection p50/p95/p99 {det.get('p50_ms')}/{det.get('p95_ms')}/{det.get('p99_ms')} ms"
        )
        if "detector" in run:
            spent = run["detector"]
            lines.append(
                f"  {'':<28}detector: model {spent['model_s']} s for {run['analysed']} frames, waited "
                f"{spent['input_wait_s']} s for frames and {spent['turn_wait_s']} s for transcribe's turns"
            )
    if "baseline_predict_loops" in results:
        b = results["baseline_predict_loops"]
        lines.append(
            f"  baseline predict loops      {b['fps']:8.1f} frames/s "
            f"({b['cameras']} loops, {b['threads_each']} thread(s) each)"
        )
        ours = results["pipeline_fast_ultralytics"]
        if "fps_runs" in b and "steady_fps_runs" in ours:
            lines.append(
                f"  alternated runs (median compared): loops {b['fps_runs']}, vigil {ours['steady_fps_runs']} frames/s"
            )
    fast, alone = results.get("pipeline_fast_1", {}), results["detect_only"].get("opencv", {})
    if "steady_fps_runs" in fast and "fps_runs" in alone:
        lines.append(
            f"  alternated runs (median compared): detect only {alone['fps_runs']}, "
            f"pipeline fast {fast['steady_fps_runs']} frames/s"
        )
        if "cpu_steal_percent_runs" in fast and "cpu_steal_percent_runs" in alone:
            lines.append(
                f"  CPU stolen by the host in those runs: detect only {alone['cpu_steal_percent_runs']}, "
                f"pipeline fast {fast['cpu_steal_percent_runs']} %"
            )
    steal = results.get("cpu_steal_percent")
    if steal is not None:
        lines.append(f"  CPU stolen by the host (other guests) during the bench: {steal} %")
        if results.get("noisy_runs_repeated"):
            lines.append(f"  timed runs measured again because of it: {results['noisy_runs_repeated']}")
        if steal > NOISY_PERCENT:
            lines.append(
                f"  WARNING: more than {NOISY_PERCENT:g} % of the CPU went to other guests: the figures "
                "measure the host's load as much as vigil; run again when it is quieter"
            )
    lines.append("  goals:")
    for name, goal in results["goals"].items():
        shown = {k: v for k, v in goal.items() if k not in ("met", "goal")}
        lines.append(f"    {'MET ' if goal['met'] else 'MISS'} {name}: {shown} (goal {goal['goal']})")
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> str:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "plot skipped: matplotlib is not installed (pip install matplotlib)"
    runs = [
        (key, results[key])
        for key in ("pipeline_fast_1", "pipeline_realtime", "pipeline_fast_ultralytics")
        if key in results
    ]
    figure, axes = plt.subplots(2, 1, figsize=(9, 6), sharex=True)
    for key, run in runs:
        series = run["series"]
        label = f"{key} ({run['cameras']} cam)"
        axes[0].plot([r["t"] for r in series], [r["analysed_fps"] for r in series], label=label)
        axes[1].plot([r["t"] for r in series], [r["detection_p95_ms"] for r in series], label=label)
    axes[0].set_ylabel("analysed frames/s")
    axes[1].set_ylabel("capture->detection p95 (ms)")
    axes[1].set_xlabel("seconds since start")
    axes[0].legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    return f"plot written to {path}"
