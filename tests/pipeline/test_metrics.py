"""Prometheus /metrics and /healthz: the text parses with the official client's parser, histograms are
cumulative, health turns 503 when a stage is down; and a real replay serves them while it runs."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from pipeline.messages import delivery_key
from pipeline.metrics import Histogram, ProcessSample, Snapshot, StageView, ThroughputSpan, health, render
from pipeline.supervisor import Supervisor
from tests.conftest import make_config


def view(instance: str, **changes: Any) -> StageView:
    stage, _, camera = instance.partition(":")
    values: dict[str, Any] = {
        "instance": instance,
        "stage": stage,
        "camera": camera or None,
        "up": True,
        "failed": None,
        "restarts": 0,
        "heartbeat_age_s": 0.5,
        "counters": {},
        "histograms": {},
        "process": ProcessSample(1.5, 100 * 2**20),
    }
    return StageView(**{**values, **changes})


def families(text: str) -> dict[str, Any]:
    return {family.name: family for family in text_string_to_metric_families(text)}


def test_a_throughput_span_counts_the_frames_after_the_first_batch_and_the_time_since_it_ended() -> None:
    counters: Counter[str] = Counter()
    span = ThroughputSpan()
    span.count(counters, 4)
    assert counters == {}  # the first batch only starts the span
    for _ in range(2):
        time.sleep(0.06)
        span.count(counters, 4)
    assert counters["span_frames"] == 8
    assert counters["span_ms"] >= 120


def test_a_span_of_timed_batches_runs_from_the_earliest_start_and_counts_every_frame() -> None:
    """Batches run side by side finish out of order: the span starts at the earliest beginning."""
    counters: Counter[str] = Counter()
    span = ThroughputSpan()
    began = time.perf_counter()
    time.sleep(0.05)
    span.count(counters, 4, began=began + 0.02)  # finished first, began later
    span.count(counters, 4, began=began)
    assert counters["span_frames"] == 8
    assert 50 <= counters["span_ms"] < 1000


def test_histogram_buckets_and_quantiles() -> None:
    hist = Histogram()
    for seconds in (0.005, 0.04, 0.04, 0.3, 12.0):
        hist.observe(seconds)
    assert hist.count == 5 and hist.sum_s == pytest.approx(12.385)
    assert hist.quantile(0.5) == pytest.approx(0.04625)  # 2.5th of 5: 3/4 into (0.035, 0.05] holding 2
    assert hist.quantile(1.0) == 15.0 and Histogram().quantile(0.5) != Histogram().quantile(0.5)  # NaN
    assert Histogram.from_wire(hist.to_wire()) == hist


def test_the_exposition_parses_and_carries_counters_gauges_histograms_and_camera_states() -> None:
    hist = Histogram()
    for seconds in (0.02, 0.2, 0.2):
        hist.observe(seconds)
    snapshot = Snapshot(
        stages=[
            view("decode:gate", counters={"frames_sent": 120, "frames_dropped": 3, "reconnects": 2}),
            view(
                "detect", counters={"frames_analysed": 117, "queue_depth": 4}, histograms={"capture_to_detection": hist}
            ),
        ],
        cameras={"gate": "streaming"},
        camera_states=("connecting", "streaming", "stalled"),
        heartbeat_timeout_s=30,
    )
    parsed = families(render(snapshot))
    sent = parsed["vigil_frames_sent"].samples[0]
    assert sent.labels == {"stage": "decode", "instance": "decode:gate", "camera": "gate"} and sent.value == 120
    assert parsed["vigil_frames_sent"].type == "counter" and parsed["vigil_queue_depth"].type == "gauge"
    buckets = [s for s in parsed["vigil_capture_to_detection_seconds"].samples if s.name.endswith("_bucket")]
    assert [s.value for s in buckets if s.labels["le"] in ("0.02", "0.2", "+Inf")] == [1, 3, 3]
    states = {s.labels["state"]: s.value for s in parsed["vigil_camera_state"].samples}
    assert states == {"connecting": 0, "streaming": 1, "stalled": 0}
    assert parsed["vigil_stage_resident_memory_bytes"].samples[0].value == 100 * 2**20


def test_health_is_503_with_the_reason_when_a_stage_is_down_silent_or_failed() -> None:
    def snapshot(*stages: StageView) -> Snapshot:
        return Snapshot(list(stages), {}, (), heartbeat_timeout_s=30)

    ok, body = health(snapshot(view("detect"), view("decode:gate")))
    assert ok and body["status"] == "ok"
    ok, body = health(snapshot(view("detect", up=False), view("fuse", heartbeat_age_s=45.0)))
    assert not ok and body["problems"] == ["detect is not running", "fuse silent for 45 s"]
    ok, body = health(snapshot(view("decode:gate", up=False, failed="unauthorized")))
    assert not ok and body["problems"] == ["decode:gate failed for good: unauthorized"]


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_running_pipeline_serves_metrics_and_health_for_every_stage(tmp_path: Path) -> None:
    config = make_config(tmp_path)
    scraped: dict[str, Any] = {}

    def scrape(supervisor: Supervisor) -> None:
        analysed = supervisor.counters.get("detect", {}).get("frames_analysed", 0)
        if "metrics" not in scraped and analysed >= 20 and supervisor.metrics is not None:
            scraped["metrics"] = get(supervisor.metrics.url + "/metrics")
            scraped["health"] = get(supervisor.metrics.url + "/healthz")
            scraped["missing"] = get(supervisor.metrics.url + "/nope")

    summary = Supervisor(config, on_tick=scrape, tick_s=0.2).run()
    assert summary.exit_code == 0
    status, text = scraped["metrics"]
    assert status == 200
    parsed = families(text)
    up = {s.labels["instance"]: s.value for s in parsed["vigil_stage_up"].samples}
    assert up == {"alert": 1, "fuse": 1, "detect": 1, "transcribe": 1, "decode:plaza": 1}
    assert parsed["vigil_frames_analysed"].samples[0].value >= 20
    latency = parsed["vigil_capture_to_detection_seconds"]
    count = next(s for s in latency.samples if s.name.endswith("_count"))
    assert count.value >= 20
    cpu = {s.labels["instance"]: s.value for s in parsed["vigil_stage_cpu_seconds"].samples}
    assert cpu["detect"] > 0
    health_status, body = scraped["health"]
    assert health_status == 200 and json.loads(body)["status"] == "ok"
    assert scraped["missing"][0] == 404


def test_line_crossings_are_counted_per_camera_line_and_direction() -> None:
    fuse = view("fuse", crossings={"plaza/left/walkway": 5, "plaza/right/walkway": 3, "yard/down/fence/north": 1})
    found = families(render(Snapshot([fuse, view("detect")], {}, (), 30.0)))["vigil_line_crossings"]
    assert found.type == "counter"
    samples = {(s.labels["camera"], s.labels["line"], s.labels["direction"]): s.value for s in found.samples}
    assert samples == {
        ("plaza", "walkway", "left"): 5,
        ("plaza", "walkway", "right"): 3,
        ("yard", "fence/north", "down"): 1,
    }


def test_each_scheduled_rule_s_armed_state_is_a_gauge_per_camera_kind_and_rule() -> None:
    fuse = view("fuse", armed={"yard/zone/door": 0, "yard/line/fence/north": 1})
    found = families(render(Snapshot([fuse, view("detect")], {}, (), 30.0)))["vigil_rule_armed"]
    assert found.type == "gauge"
    samples = {(s.labels["camera"], s.labels["kind"], s.labels["rule"]): s.value for s in found.samples}
    assert samples == {("yard", "zone", "door"): 0, ("yard", "line", "fence/north"): 1}


def test_deliveries_are_counted_per_destination_and_outcome_with_a_pending_gauge() -> None:
    hook, broker = "https://hooks.example/a", "mqtt://broker:1883 topic vigil/{camera}/alerts"
    tally = {
        delivery_key(hook, "delivered"): 7,
        delivery_key(hook, "failed"): 2,
        delivery_key(hook, "dead"): 0,
        delivery_key(hook, "pending"): 1,
        delivery_key(broker, "delivered"): 8,
        delivery_key(broker, "pending"): 0,
    }
    found = families(render(Snapshot([view("alert", deliveries=tally)], {}, (), 30.0)))
    counted = found["vigil_alert_deliveries"]  # the parser names a counter without its _total
    assert counted.type == "counter"
    outcomes = {
        (s.labels["destination"], s.labels["outcome"]): s.value for s in counted.samples if s.name.endswith("_total")
    }
    assert outcomes == {(hook, "delivered"): 7, (hook, "failed"): 2, (hook, "dead"): 0, (broker, "delivered"): 8}
    pending = found["vigil_alert_deliveries_pending"]
    assert pending.type == "gauge"
    assert {s.labels["destination"]: s.value for s in pending.samples} == {hook: 1, broker: 0}
