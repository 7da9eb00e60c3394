"""The alert sink: the webhook body, the JSON-lines log (a full disk skips lines, never the alert),
stores that cannot be made, and the outbox's retention."""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import time

import pytest

from pipeline.config import WebhookConfig
from pipeline.receiver import WebhookReceiver
from pipeline.supervisor import Supervisor
from stages.alert import AlertLog
from stages.alerting.store import AlertStore, WebhookTarget
from stages.webhook import with_snapshot
from tests.conftest import SECRET, SECRET_ENV, make_config
from tests.support.small_disk import small_disk
from tests.support.store_holder import hold_in_another_process


def test_webhook_body_carries_the_snapshot_as_base64():
    body = with_snapshot({"id": "a", "event": "alert.opened"}, b"\xff\xd8jpeg")
    assert body["snapshot"]["content_type"] == "image/jpeg" and body["snapshot"]["bytes"] == 6
    assert base64.b64decode(body["snapshot"]["data_base64"]) == b"\xff\xd8jpeg"
    assert body["id"] == "a"


def test_alert_log_appends_one_json_line_per_alert_without_image_bytes(tmp_path):
    log = AlertLog(str(tmp_path / "sub" / "alerts.jsonl"))
    log.append({"id": "a"}, 100)
    log.append({"id": "b"}, 200)
    lines = [json.loads(line) for line in (tmp_path / "sub" / "alerts.jsonl").read_text().splitlines()]
    assert lines == [
        {"id": "a", "snapshot": {"content_type": "image/jpeg", "bytes": 100}},
        {"id": "b", "snapshot": {"content_type": "image/jpeg", "bytes": 200}},
    ]


def test_no_log_path_means_no_file(tmp_path):
    AlertLog(None).append({"id": "a"}, 1)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("stage", "setting"), [("alert", "outbox_path"), ("fuse", "pending_path")])
def test_an_alert_store_that_cannot_be_made_fails_its_stage_for_good_naming_the_setting(tmp_path, stage, setting):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    alerts = {
        "log_path": None,
        "outbox_path": str(tmp_path / "alerts.sqlite"),
        "pending_path": str(tmp_path / "pending.sqlite"),
    }
    config = make_config(tmp_path, alerts={**alerts, setting: str(blocker / "store.sqlite")})
    supervisor = Supervisor(config, only=[stage])
    summary = supervisor.run()
    reason = summary.failed.get(stage, "")
    assert reason.startswith(f"alerts.{setting}: cannot open {blocker / 'store.sqlite'}: "), summary
    restarts = {s.spec.instance: s.restarts for s in supervisor.stages}
    assert restarts == {stage: 0}, "a store that cannot be made is not retried"


def test_alert_log_lines_a_full_disk_refuses_are_counted_and_skipped_and_the_next_ones_written(tmp_path):
    with small_disk(tmp_path / "disk", size="64k") as disk:
        log = AlertLog(str(disk.path / "alerts.jsonl"))
        disk.fill()
        log.append({"id": "lost", "text": "x" * 8192}, 1)  # does not raise: the outbox holds the alert
        assert log.failures == 1
        disk.free()
        log.append({"id": "b"}, 2)
        lines = [json.loads(line) for line in (disk.path / "alerts.jsonl").read_text().splitlines() if line.strip()]
    assert [line["id"] for line in lines if line.get("id") == "b"] == ["b"]


@pytest.mark.timeout(120)
def test_the_sink_deletes_delivered_alerts_past_the_retention_and_keeps_the_undelivered(tmp_path):
    outbox = tmp_path / "alerts.sqlite"
    store = AlertStore(outbox)
    hook = WebhookTarget.of(WebhookConfig(url="http://127.0.0.1:9/hook"))
    for alert_id in ("old-delivered", "old-undelivered", "new-delivered"):
        store.add({"id": alert_id, "camera": "plaza", "event": "alert.opened"}, b"jpeg", [hook])
    store.delivered("old-delivered", hook)
    store.delivered("new-delivered", hook)
    store.close()
    forty_days_ago = time.time() - 40 * 86_400
    with sqlite3.connect(outbox) as db:  # stored 40 days ago, as far as the outbox can tell
        db.execute("UPDATE alerts SET stored_at = ? WHERE id LIKE 'old-%'", (forty_days_ago,))
    alerts = {"log_path": None, "outbox_path": str(outbox), "pending_path": str(tmp_path / "p.sqlite")}

    def stop_once_pruned(supervisor: Supervisor) -> None:
        if supervisor.counters.get("alert", {}).get("pruned"):
            supervisor.request_stop()

    summary = Supervisor(make_config(tmp_path, alerts=alerts), only=["alert"], on_tick=stop_once_pruned).run()
    assert summary.counters["alert"]["pruned"] == 1
    kept = sorted(row.id for row in AlertStore(outbox).alerts())
    assert kept == ["new-delivered", "old-undelivered"], "only what was delivered and older than 30 days went"


@pytest.mark.timeout(120)
def test_a_sink_whose_outbox_another_vigil_holds_fails_for_good_naming_it(tmp_path):
    """Past the check before start (two hosts sharing a folder, or a race): the stage itself refuses."""
    outbox = tmp_path / "alerts.sqlite"
    alerts = {"log_path": None, "outbox_path": str(outbox), "pending_path": str(tmp_path / "p.sqlite")}
    holder = hold_in_another_process(outbox)
    try:
        supervisor = Supervisor(make_config(tmp_path, alerts=alerts), only=["alert"])
        summary = supervisor.run()
    finally:
        holder.kill()
        holder.wait()
    who = f"pid {holder.pid}, started by pid {os.getpid()}"
    assert summary.failed == {"alert": f"alerts.outbox_path: {outbox} is in use by another vigil process ({who})"}
    assert [s.restarts for s in supervisor.stages] == [0]


@pytest.mark.timeout(120)
def test_a_delivery_in_flight_when_the_sink_stops_is_recorded_and_not_sent_again(tmp_path):
    outbox = tmp_path / "alerts.sqlite"
    with WebhookReceiver(SECRET) as receiver:
        webhook = WebhookConfig(url=receiver.url, secret_env=SECRET_ENV)
        store = AlertStore(outbox)
        store.add({"id": "a1", "camera": "plaza", "event": "alert.opened"}, b"jpeg", [WebhookTarget.of(webhook)])
        store.close()
        receiver.slow_down(2.0)  # the post is still in flight when the stop comes
        alerts = {
            "log_path": None,
            "outbox_path": str(outbox),
            "pending_path": str(tmp_path / "p.sqlite"),
            "webhooks": [webhook.model_dump()],
        }

        def stop_while_posting(supervisor: Supervisor) -> None:
            if receiver.most_in_flight:
                supervisor.request_stop()

        Supervisor(make_config(tmp_path, alerts=alerts), only=["alert"], on_tick=stop_while_posting).run()
        assert receiver.most_in_flight == 1, "the stop came while the post was in flight"
        assert [d.alert_id for d in receiver.deliveries] == ["a1"]
    store = AlertStore(outbox)
    assert store.pending() == 0, "the delivery made during the stop was recorded, so no next start sends it again"
    (row,) = store.alerts()
    assert [d.state for d in row.deliveries] == ["delivered"]
