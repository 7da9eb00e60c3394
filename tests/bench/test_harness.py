"""The benchmark's arithmetic: goals as ratios, the sampled time series, per-process CPU and memory."""

from __future__ import annotations

from typing import Any

import pytest

from bench.harness import span_rate
from bench.report import goals, report
from bench.sampler import Sample, Sampler
from pipeline.metrics import Histogram


def hist(*seconds: float) -> Histogram:
    h = Histogram()
    for s in seconds:
        h.observe(s)
    return h


def test_the_series_takes_throughput_and_p95_per_interval_and_cpu_per_process() -> None:
    sampler = Sampler()
    sampler.samples = [
        Sample(0.0, 0, Histogram(), {"detect": 10.0}, {"detect": 100 * 2**20}),
        Sample(1.0, 10, hist(*[0.04] * 10), {"detect": 10.8}, {"detect": 120 * 2**20}),
        Sample(2.0, 30, hist(*[0.04] * 10, *[0.4] * 20), {"detect": 11.8}, {"detect": 110 * 2**20}),
    ]
    series = sampler.series()
    assert [r["analysed_fps"] for r in series] == [10.0, 20.0]
    assert series[0]["detection_p95_ms"] == pytest.approx(49.2)  # only the first interval's frames
    assert 200 < series[1]["detection_p95_ms"] <= 500, "the second interval's frames only"
    assert sampler.processes() == {"detect": {"cpu_percent": 90.0, "rss_mib": 120}}


def results(pipeline_fps: float, p95_ms: float, speech_p95_ms: float, ours: float, theirs: float) -> dict[str, Any]:
    run = {
        "cameras": 4,
        "steady_fps": pipeline_fps,
        "fps_per_camera": pipeline_fps / 4,
        "dropped_at_decode": 0,
        "skipped_at_detect": 0,
        "analysed": 150,
        "detector": {"model_s": 6.2, "input_wait_s": 0.01, "turn_wait_s": 0.22},
        "latency": {
            "capture_to_detection": {"p50_ms": p95_ms / 2, "p95_ms": p95_ms, "p99_ms": p95_ms},
            "keyword_after_utterance_end": {"p50_ms": 1, "p95_ms": speech_p95_ms, "p99_ms": 1},
        },
    }
    return {
        "clip": "demo.mp4",
        "cores": 2,
        "decode_only_fps": 160.0,
        "detect_only": {"opencv": {"fps": 15.0, "batch1_latency_ms": 70.0}},
        "transcribe_only": {"x_realtime": 20.0, "audio_s": 30.0},
        "transport": {"frame_bytes": 921_600, "messages_per_s": 5000.0, "cpu_ms_per_message": 0.25},
        "pipeline_fast_1": {**run, "cameras": 1},
        "pipeline_realtime": run,
        "pipeline_fast_ultralytics": {**run, "steady_fps": ours},
        "baseline_predict_loops": {"fps": theirs, "cameras": 4, "threads_each": 1},
    }


def test_a_stages_rate_is_its_replicas_frames_over_the_longest_span() -> None:
    counters = {
        "detect:0": {"span_frames": 96, "span_ms": 4000, "frames_analysed": 100},
        "detect:1": {"span_frames": 36, "span_ms": 2000},
        "decode:cam0": {"span_frames": 1000, "span_ms": 1},  # another stage's
        "fuse": {"frames_scored": 10},  # no span yet
    }
    assert span_rate(counters, "detect") == pytest.approx(132 / 4.0)
    assert span_rate(counters, "fuse") == 0.0


def test_goals_are_ratios_against_the_parts_and_the_baseline() -> None:
    met = goals(results(pipeline_fps=14.0, p95_ms=200.0, speech_p95_ms=2500.0, ours=12.0, theirs=9.0))
    assert met["fast_pipeline_vs_slowest_stage"] == {"ratio": 0.933, "goal": ">= 0.9", "met": True}
    assert met["realtime_p95_detection_latency"]["limit_ms"] == 240.0 and met["realtime_p95_detection_latency"]["met"]
    assert met["keyword_to_fuse_p95"]["met"] and met["vigil_vs_predict_loops"]["ratio"] == pytest.approx(1.333)
    assert met["transport_share_of_cpu"] == {"percent": 0.35, "goal": "shared memory only if > 5 %", "met": True}
    missed = goals(results(pipeline_fps=12.0, p95_ms=300.0, speech_p95_ms=3500.0, ours=8.0, theirs=9.0))
    assert [name for name, goal in missed.items() if goal["met"]] == ["transport_share_of_cpu"]


def test_the_fast_goal_lists_each_pipeline_run_against_the_standalone_run_before_it() -> None:
    data = results(pipeline_fps=14.0, p95_ms=200.0, speech_p95_ms=2500.0, ours=12.0, theirs=9.0)
    data["detect_only"]["opencv"].update(fps=15.0, fps_runs=[15.0, 12.0, 16.0])
    data["pipeline_fast_1"].update(steady_fps=14.0, steady_fps_runs=[14.0, 11.4, 12.8])
    fast = goals(data)["fast_pipeline_vs_slowest_stage"]
    assert fast["ratio"] == 0.933  # the medians, as before
    assert fast["paired_ratios"] == [0.933, 0.95, 0.8] and fast["paired_median"] == 0.933


def test_the_report_names_every_goal_and_whether_it_is_met() -> None:
    data = results(pipeline_fps=14.0, p95_ms=200.0, speech_p95_ms=2500.0, ours=8.0, theirs=9.0)
    data["goals"] = goals(data)
    text = report(data)
    assert "MET  fast_pipeline_vs_slowest_stage" in text and "MISS vigil_vs_predict_loops" in text
    assert "baseline predict loops" in text and "transcribe only" in text
    assert "detector: model 6.2 s for 150 frames, waited 0.01 s for frames and 0.22 s for transcribe's turns" in text


def test_alternated_runs_are_compared_by_their_medians():
    from bench.harness import median_run

    runs = [{"fps": 30.0, "n": 1}, {"fps": 40.0, "n": 2}, {"fps": 35.0, "n": 3}]
    assert median_run(runs, "fps") == {"fps": 35.0, "n": 3, "fps_runs": [30.0, 40.0, 35.0]}
    assert median_run(runs[:2], "fps")["fps"] == 30.0  # the lower middle one


def test_the_report_warns_when_other_guests_took_much_of_the_cpu() -> None:
    data = results(pipeline_fps=14.0, p95_ms=200.0, speech_p95_ms=2500.0, ours=12.0, theirs=9.0)
    data["goals"] = goals(data)
    quiet = report({**data, "cpu_steal_percent": 0.4})
    assert "during the bench: 0.4 %" in quiet and "WARNING" not in quiet
    assert "WARNING: more than 5 % of the CPU went to other guests" in report({**data, "cpu_steal_percent": 21.0})
