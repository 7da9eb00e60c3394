"""``run.py alerts list|show|redeliver|clip`` on a real outbox, as a user types it."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

from pipeline.config import WebhookConfig
from pipeline.record_settings import RecordConfig
from stages.alerting.store import AlertStore, WebhookTarget
from tests.stages.test_recording import START, record_clip, video_frames
from tests.support.damage import damage_leaf_holding
from tests.test_run_cli import run

HOOK = WebhookConfig(url="http://127.0.0.1:9/hook?token=abc")


def outbox_with_a_dead_and_a_delivered_alert(tmp_path: Path) -> Path:
    path = tmp_path / "alerts.sqlite"
    store = AlertStore(path)
    target = WebhookTarget.of(HOOK)
    for alert_id, camera in (("5f0c2a77-aaaa", "door"), ("9b1e0000-bbbb", "gate")):
        store.add({"id": alert_id, "camera": camera, "event": "alert.opened", "score": 0.9}, b"\xff\xd8jpeg", [target])
    store.delivered("5f0c2a77-aaaa", target)
    store.failed("9b1e0000-bbbb", target, "unreachable: Connection refused", time.time())
    store.bury("9b1e0000-bbbb", target, "undelivered after 1 attempt(s) over 86400 s")
    store.close()
    return path


def test_list_shows_each_alert_with_its_delivery_state_and_hides_url_tokens(tmp_path: Path) -> None:
    outbox = outbox_with_a_dead_and_a_delivered_alert(tmp_path)
    result = run("alerts", "list", "--outbox", str(outbox))
    assert result.returncode == 0, result.stderr
    door = next(line for line in result.stdout.splitlines() if "5f0c2a77-aaaa" in line)
    gate = next(line for line in result.stdout.splitlines() if "9b1e0000-bbbb" in line)
    assert "delivered (1 attempt)" in door and "token=***" in door and "abc" not in result.stdout
    assert "DEAD (undelivered after 1 attempt(s) over 86400 s)" in gate
    assert "2 alert(s) shown; 0 delivery(ies) pending; 1 dead letter(s)" in result.stdout


def test_dead_letters_are_listed_and_redelivered(tmp_path: Path) -> None:
    outbox = outbox_with_a_dead_and_a_delivered_alert(tmp_path)
    dead = run("alerts", "list", "--dead", "--outbox", str(outbox))
    assert "1 dead letter(s): redeliver with run.py alerts redeliver --all-dead" in dead.stdout
    assert "9b1e0000-bbbb" in dead.stdout
    again = run("alerts", "redeliver", "--all-dead", "--outbox", str(outbox))
    assert again.returncode == 0 and again.stdout.startswith("1 delivery(ies) queued again")
    assert AlertStore(outbox).pending() == 1 and AlertStore(outbox).dead_letters() == []


def test_show_prints_the_payload_and_writes_the_snapshot(tmp_path: Path) -> None:
    outbox = outbox_with_a_dead_and_a_delivered_alert(tmp_path)
    shot = tmp_path / "shot.jpg"
    result = run("alerts", "show", "5f0c", "--outbox", str(outbox), "--snapshot", str(shot))
    assert result.returncode == 0, result.stderr
    shown = json.loads(result.stdout.split("\nsnapshot", 1)[0])
    assert shown["id"] == "5f0c2a77-aaaa" and shown["payload"]["score"] == 0.9
    assert shot.read_bytes() == b"\xff\xd8jpeg"


def test_unknown_ids_and_missing_outboxes_are_one_clear_error(tmp_path: Path) -> None:
    outbox = outbox_with_a_dead_and_a_delivered_alert(tmp_path)
    unknown = run("alerts", "show", "ffff", "--outbox", str(outbox))
    assert unknown.returncode == 2 and "error: no single alert matches 'ffff'" in unknown.stderr
    missing = run("alerts", "list", "--outbox", str(tmp_path / "nope.sqlite"))
    assert missing.returncode == 2 and "error: no outbox at" in missing.stderr
    neither = run("alerts", "redeliver", "--outbox", str(outbox))
    assert neither.returncode == 2 and "give one alert id, or --all-dead" in neither.stderr


def test_a_damaged_outbox_is_one_clear_error_not_a_traceback(tmp_path: Path) -> None:
    outbox = tmp_path / "alerts.sqlite"
    store = AlertStore(outbox)
    for i in range(6):
        store.add(
            {"id": f"a{i}", "camera": "door", "event": "alert.opened"}, bytes([i]) * 3000, [WebhookTarget.of(HOOK)]
        )
    store.close()
    damage_leaf_holding(outbox, "alerts", 3)
    result = run("alerts", "list", "--outbox", str(outbox))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith(f"error: {outbox} is damaged (database disk image is malformed); the alert stage")


def test_times_are_shown_on_the_config_s_clock(tmp_path: Path) -> None:
    outbox = outbox_with_a_dead_and_a_delivered_alert(tmp_path)
    config = tmp_path / "site.yaml"
    config.write_text(
        f"cameras:\n  door: {{source: clip.mp4}}\nalerts:\n  outbox_path: {outbox}\nruntime:\n  timezone: Asia/Tokyo\n"
    )
    listed = run("alerts", "list", "--config", str(config))
    assert listed.returncode == 0, listed.stderr
    door = next(line for line in listed.stdout.splitlines() if "5f0c2a77-aaaa" in line)
    assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d JST  door ", door), door
    dead = run("alerts", "list", "--dead", "--config", str(config))
    assert re.search(r"dead at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d JST: undelivered", dead.stdout), dead.stdout
    shown = run("alerts", "show", "5f0c2a77", "--config", str(config))
    assert json.loads(shown.stdout)["stored_at"].endswith(" JST")


def test_clip_cuts_an_incidents_footage_from_the_cameras_recording(tmp_path: Path, demo_clip: Path) -> None:
    """The recording is made from the demo clip's real packets at an injected clock (tests/stages/test_recording.py)."""
    config = tmp_path / "site.yaml"
    config.write_text(
        "cameras:\n"
        "  door: {source: 'rtsp://127.0.0.1:9/cam', record: {folder: rec, segment_s: 5}}\n"
        "  gate: {source: 'rtsp://127.0.0.1:9/gate'}\n"
        "alerts: {outbox_path: alerts.sqlite, log_path: null}\n"
        "runtime: {timezone: UTC}\n"
    )
    record_clip(demo_clip, RecordConfig(folder=str(tmp_path / "rec"), segment_s=5, min_free_gb=0))
    store = AlertStore(tmp_path / "alerts.sqlite")
    closed = {"camera": "door", "event": "alert.closed", "capture_wall_time": START + 16.0}
    store.add({**closed, "id": "c1a55ed0-0001", "media_time": {"incident_start": 100.0, "at": 108.0}}, b"j", [])
    store.add({**closed, "id": "0bef0e00-0002", "media_time": {"incident_start": 0.0, "at": 0.0}}, b"j", [])
    store.add({**closed, "id": "9a7e0000-0003", "camera": "gate", "media_time": {"at": 1.0}}, b"j", [])
    store.close()
    out = tmp_path / "incident.mp4"
    result = run("alerts", "clip", "c1a5", "--config", str(config), "--out", str(out), "--before", "2", "--after", "1")
    assert result.returncode == 0, result.stderr
    assert re.match(rf"{re.escape(str(out))}: 1[01]\.\d s of camera door from 2027-01-15 08:00:06 UTC ", result.stdout)
    assert "(alert.closed at 2027-01-15 08:00:16 UTC, from 2 segment(s))" in result.stdout
    assert len(video_frames(out)) == 110, "from the keyframe at 6 s (incident at 8 s, 2 s before) to 17 s"
    early = run("alerts", "clip", "0bef", "--config", str(config), "--before", "3600", "--after", "-3000")
    assert early.returncode == 1 and "no recording of camera door covers 2027-01-15 07:00:16 UTC" in early.stderr
    unrecorded = run("alerts", "clip", "9a7e", "--config", str(config))
    assert unrecorded.returncode == 2
    assert f"error: camera gate is not recorded in {config} (cameras.gate.record)" in unrecorded.stderr
