"""The whole pipeline as five kinds of stage process over ZeroMQ, on the shipped demo clip, with the
real YOLOv3-tiny weights, the real Whisper tiny.en model and a real local HTTP receiver."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import cv2
import numpy as np
import pytest

from pipeline.config import LineConfig, VigilConfig, WebhookConfig, load_config
from pipeline.receiver import Received, WebhookReceiver
from pipeline.supervisor import RunSummary, Supervisor
from tests.conftest import SECRET, SECRET_ENV

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]


def demo_config(tmp_path: Path, receiver_url: str) -> VigilConfig:
    config = load_config(ROOT / "configs" / "demo.yaml")
    alerts = config.alerts.model_copy(
        update={
            "webhooks": [WebhookConfig(url=receiver_url, secret_env=SECRET_ENV)],
            "log_path": str(tmp_path / "alerts.jsonl"),
            "outbox_path": str(tmp_path / "state" / "alerts.sqlite"),
            "pending_path": str(tmp_path / "state" / "fuse-pending.sqlite"),
        }
    )
    runtime = config.runtime.model_copy(update={"ipc_dir": str(tmp_path)})
    return config.model_copy(update={"alerts": alerts, "runtime": runtime})


Replay = tuple[RunSummary, list[Received], Path]


def replay_demo(tmp_path: Path) -> Replay:
    with WebhookReceiver(SECRET) as receiver:
        summary = Supervisor(demo_config(tmp_path, receiver.url)).run()
        return summary, receiver.deliveries, tmp_path


@pytest.fixture(scope="module")
def two_replays(tmp_path_factory: pytest.TempPathFactory) -> list[Replay]:
    return [replay_demo(tmp_path_factory.mktemp("replay")) for _ in range(2)]


def payloads(run: Replay) -> list[dict[str, Any]]:
    return [d.payload for d in run[1]]


def test_demo_replay_finishes_cleanly_and_analyses_every_sampled_frame(two_replays):
    summary, deliveries, _ = two_replays[0]
    assert summary.exit_code == 0, summary.failed
    assert summary.counters["decode:plaza"]["frames_sent"] == 150
    assert summary.counters["detect"]["frames_analysed"] == 150
    assert summary.counters["fuse"]["frames_scored"] == 150
    assert summary.counters["alert"]["alerts"] == len(deliveries) > 0


def test_detect_and_fuse_time_their_own_span_of_frames(two_replays):
    """The bench's throughput comes from these: every frame detect analysed, from its first batch's
    start to its last one's end (as the detector is timed alone), and fuse's frames after its first
    and the milliseconds since."""
    counters = two_replays[0][0].counters
    assert counters["detect"]["span_frames"] == 150
    assert 0 < counters["fuse"]["span_frames"] < 150
    for stage in ("detect", "fuse"):
        assert counters[stage]["span_ms"] > 1000  # 150 frames of YOLO on 2 cores take seconds


def test_fast_replay_runs_a_copy_of_the_model_per_thread_side_by_side(two_replays):
    """The demo's detector has 2 threads: in fast replay, two single-thread copies each run their
    own batch, so the model time of the batches adds up to more than the time they took."""
    counters = two_replays[0][0].counters["detect"]
    assert load_config(ROOT / "configs" / "demo.yaml").stages.detect.lanes("fast") == 2
    assert counters["detect_ms_total"] > 1.3 * counters["span_ms"]


def test_an_alert_shows_a_person_in_the_zone(two_replays):
    zone_alerts = [
        p
        for p in payloads(two_replays[0])
        for zone in p["evidence"].get("zones", [])
        if zone["zone"] == "forecourt" and any(o["label"] == "person" for o in zone["objects"])
    ]
    assert zone_alerts
    assert zone_alerts[0]["event"] == "alert.opened"
    assert zone_alerts[0]["signals"]["zone"]["value"] == 1.0


def test_an_alert_carries_the_spoken_keyword_at_its_media_time(two_replays, demo_meta):
    spoken_at = demo_meta["speech"]["start_s"]
    keyword_alerts = [p for p in payloads(two_replays[0]) if p["evidence"].get("keywords")]
    assert keyword_alerts
    first = keyword_alerts[0]
    hit = first["evidence"]["keywords"][0]
    assert hit["keyword"] in ("help", "police")
    assert abs(hit["time"] - spoken_at) <= 2.0
    assert abs(first["media_time"]["at"] - spoken_at) <= 2.0
    transcript = " ".join(s["text"] for s in first["evidence"]["transcript"]).lower()
    assert "help" in transcript


def test_every_delivery_is_signed_and_carries_a_jpeg_snapshot(two_replays):
    _, deliveries, _ = two_replays[0]
    for delivery in deliveries:
        assert delivery.signature_valid, delivery.alert_id
        jpeg = base64.b64decode(delivery.payload["snapshot"]["data_base64"])
        image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert image is not None and image.shape == (480, 640, 3)


def test_alert_ids_are_unique_and_incidents_open_before_they_update_or_close(two_replays):
    alerts = payloads(two_replays[0])
    assert len({p["id"] for p in alerts}) == len(alerts)
    by_incident: dict[str, list[str]] = {}
    for p in alerts:
        by_incident.setdefault(p["incident_id"], []).append(p["event"])
    for events in by_incident.values():
        assert events[0] == "alert.opened"
        assert events.count("alert.opened") == 1 and events.count("alert.closed") <= 1
        assert "alert.closed" not in events[:-1]


def fingerprint(alert: dict[str, Any]) -> tuple[Any, ...]:
    return (
        alert["camera"],
        alert["event"],
        alert["media_time"]["incident_start"],
        alert["media_time"]["at"],
        round(alert["score"], 3),
        tuple(alert["new_signals"]),
        tuple(alert["reasons"]),
    )


def test_fast_replay_is_deterministic(two_replays):
    first, second = ([fingerprint(a) for a in payloads(run)] for run in two_replays)
    assert first == second


def test_alert_log_holds_every_alert_without_the_image(two_replays):
    log_path = two_replays[0][2] / "alerts.jsonl"
    records = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert [r["id"] for r in records] == [p["id"] for p in payloads(two_replays[0])]
    assert all("data_base64" not in r["snapshot"] and r["snapshot"]["bytes"] > 0 for r in records)


def replay_with_a_tripwire(tmp_path: Path, **scheduled: Any) -> Replay:
    """The demo clip with a line down the middle of the plaza, people only, and no audio analysis
    (``scheduled``: the line's ``armed``, the camera's ``recorded_at`` and the runtime's ``timezone``)."""
    config = demo_config(tmp_path, "http://127.0.0.1:9/unused")
    walkway = LineConfig(points=[(0.5, 0.2), (0.5, 0.8)], armed=scheduled.get("armed", []))
    camera = config.cameras["plaza"].model_copy(
        update={
            "lines": {"walkway": walkway},
            "zones": {},
            "keywords": [],
            "count_threshold": {},
            "audio": False,
            "recorded_at": scheduled.get("recorded_at"),
        }
    )
    runtime = config.runtime.model_copy(update={"timezone": scheduled.get("timezone")})
    config = config.model_copy(update={"cameras": {"plaza": camera}, "runtime": runtime})
    with WebhookReceiver(SECRET) as receiver:
        webhook = WebhookConfig(url=receiver.url, secret_env=SECRET_ENV)
        alerts = config.alerts.model_copy(update={"webhooks": [webhook]})
        summary = Supervisor(config.model_copy(update={"alerts": alerts})).run()
        return summary, receiver.deliveries, tmp_path


def test_people_crossing_a_line_are_tracked_and_alerted_with_the_line_drawn(tmp_path):
    summary, deliveries, _ = replay_with_a_tripwire(tmp_path)
    assert summary.exit_code == 0, summary.failed
    alerts = [d.payload for d in deliveries]
    opened = [p for p in alerts if p["event"] == "alert.opened"]
    assert opened and all(p["signals"]["line"]["value"] == 1.0 for p in opened)
    crossings = [c for p in alerts for c in p["evidence"].get("crossings", [])]
    assert crossings and {c["label"] for c in crossings} == {"person"}
    assert {c["direction"] for c in crossings} <= {"left", "right"}
    counted = {key: n for key, n in summary.crossings.items() if key.startswith("plaza/")}
    assert set(counted) <= {"plaza/left/walkway", "plaza/right/walkway"}
    assert sum(counted.values()) >= len({(c["track"], c["time"]) for c in crossings})
    assert all(isinstance(box["track"], int) for p in alerts for box in p["evidence"]["boxes"])
    first = next(d for d in deliveries if d.payload["id"] == opened[0]["id"])
    jpeg = base64.b64decode(first.payload["snapshot"]["data_base64"])
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).astype(int)
    column = image[120:360, 318:323]  # the line, drawn 2 px wide in magenta, from y 0.25 to 0.75
    magenta = (column[..., 0] > 180) & (column[..., 1] < 90) & (column[..., 2] > 180)
    assert magenta.any(axis=1).mean() > 0.8


def test_a_line_armed_at_night_alerts_only_on_crossings_after_the_recording_s_clock_reaches_22_00(tmp_path):
    """The demo's 30 s as if recorded from 21:59:40 in Berlin, its line armed 22:00-06:00: crossings
    before media time 20 s are counted, never alerted; each alert carries the recording's time."""
    recorded_at = datetime(2026, 11, 28, 21, 59, 40)
    summary, deliveries, _ = replay_with_a_tripwire(
        tmp_path, armed=["22:00-06:00"], recorded_at=recorded_at, timezone="Europe/Berlin"
    )
    assert summary.exit_code == 0, summary.failed
    alerts = [d.payload for d in deliveries]
    crossings = [c for p in alerts for c in p["evidence"].get("crossings", [])]
    assert crossings and min(c["time"] for c in crossings) >= 20.0
    assert all(p["media_time"]["incident_start"] >= 20.0 for p in alerts)
    alerted = len({(c["track"], c["time"]) for c in crossings})
    assert sum(summary.crossings.values()) > alerted  # the evening's crossings still counted
    for payload in alerts:
        clock = recorded_at.replace(tzinfo=ZoneInfo("Europe/Berlin")) + timedelta(seconds=payload["media_time"]["at"])
        assert datetime.fromisoformat(payload["local_time"]) == clock
        assert payload["local_time"].endswith("+01:00")
