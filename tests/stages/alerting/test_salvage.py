"""A damaged alert store (pages overwritten on disk, as a failing card or a torn write leaves them):
its owner sets it aside and starts a fresh one with what can still be read of what was to be sent,
instead of failing on it at every restart. The damage is real: bytes overwritten in the file."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest

from pipeline.config import WebhookConfig
from pipeline.messages import AlertEvent
from pipeline.receiver import WebhookReceiver
from pipeline.supervisor import Supervisor
from stages.alerting.durable import StoreDamagedError, open_durable
from stages.alerting.pending import PendingAlerts
from stages.alerting.salvage import readable_rows, set_aside
from stages.alerting.store import AlertStore, WebhookTarget
from tests.conftest import SECRET, make_config, webhook
from tests.support.damage import damage_leaf_holding, lose_index_writes

HOOK = WebhookTarget.of(WebhookConfig(url="http://127.0.0.1:9/hook"))
SNAPSHOT_BYTES = 3000  # with 4 KiB pages, each row fills a leaf page of its own


def outbox_with_ten_alerts(path: Path) -> None:
    """a00..a09 queued to one webhook; the even ones delivered, a09 given up (a dead letter)."""
    store = AlertStore(path)
    for i in range(10):
        store.add({"id": f"a{i:02d}", "camera": "plaza", "event": "alert.opened"}, bytes([i]) * SNAPSHOT_BYTES, [HOOK])
    for i in range(0, 10, 2):
        store.delivered(f"a{i:02d}", HOOK)
    store.failed("a03", HOOK, "HTTP 503", next_attempt=123.0)
    store.bury("a09", HOOK, "too old")
    store.close()


def test_a_damaged_outbox_is_set_aside_and_what_was_undelivered_carried_into_a_fresh_one(tmp_path, caplog):
    outbox = tmp_path / "alerts.sqlite"
    outbox_with_ten_alerts(outbox)
    damage_leaf_holding(outbox, "alerts", 5)  # a05's page: undelivered, so lost with it
    with caplog.at_level(logging.ERROR):
        store = AlertStore(outbox, exclusive=True)
    try:
        rows = {row.id: row for row in store.alerts(limit=100)}
        assert sorted(rows) == ["a01", "a03", "a07", "a09"], "the undelivered and the dead, less the damaged"
        assert store.pending(webhooks=[HOOK]) == 3
        assert store.snapshot("a07") == bytes([7]) * SNAPSHOT_BYTES
        a03 = rows["a03"].deliveries[0]
        assert (a03.attempts, a03.last_error, a03.next_attempt) == (1, "HTTP 503", 123.0), "its retry state kept"
        assert [d[0] for d in store.dead_letters()] == ["a09"]
        assert [row.seq for row in store.alerts(limit=100)] == [10, 8, 4, 2], "numbers (camera order) kept"
    finally:
        store.close()
    aside = [p for p in tmp_path.iterdir() if ".damaged-" in p.name and not p.name.endswith(("-wal", "-shm"))]
    assert len(aside) == 1, "the damaged file is kept beside the fresh one"
    message = caplog.text
    assert f"alerts.outbox_path: {outbox} is damaged" in message and str(aside[0]) in message
    assert "with the 4 alert(s) still to send read from it; 1 row(s) of it could not be read" in message


def test_looking_a_store_over_names_its_damage(tmp_path):
    outbox = tmp_path / "alerts.sqlite"
    outbox_with_ten_alerts(outbox)
    damage_leaf_holding(outbox, "alerts", 0)
    with pytest.raises(StoreDamagedError, match=f"{outbox} is damaged"):
        open_durable(outbox, "", check=True)


def test_a_damaged_pending_file_keeps_the_unacknowledged_alerts_that_can_be_read(tmp_path, caplog):
    path = tmp_path / "pending.sqlite"
    pending = PendingAlerts(path)
    for i in range(8):
        pending.add(AlertEvent(payload={"id": f"p{i}", "camera": "plaza"}, snapshot=bytes([i]) * SNAPSHOT_BYTES))
    pending.ack(("p0", "p1"))
    pending.close()
    damage_leaf_holding(path, "pending", 6)  # p6
    with caplog.at_level(logging.ERROR):
        fresh = PendingAlerts(path, exclusive=True)
    try:
        assert [a.payload["id"] for a in fresh.unacked()] == ["p2", "p3", "p4", "p5", "p7"]
        assert fresh.unacked()[-1].snapshot == bytes([7]) * SNAPSHOT_BYTES
    finally:
        fresh.close()
    assert "alerts.pending_path:" in caplog.text and "5 alert(s) still to send" in caplog.text


def add_alerts_whose_queue_entries_the_disk_loses(outbox: Path, ids: range) -> None:
    """Alerts added to the outbox whose rows reach the disk but whose deliveries_queue entries do not."""

    def add() -> None:
        store = AlertStore(outbox)
        for i in ids:
            store.add(
                {"id": f"a{i:02d}", "camera": "plaza", "event": "alert.opened"}, bytes([i]) * SNAPSHOT_BYTES, [HOOK]
            )
        store.close()

    lose_index_writes(outbox, "deliveries_queue", add)


def test_an_outbox_index_a_lost_write_left_behind_is_rebuilt_in_place_and_no_alert_is_forgotten(tmp_path, caplog):
    outbox = tmp_path / "alerts.sqlite"
    outbox_with_ten_alerts(outbox)
    add_alerts_whose_queue_entries_the_disk_loses(outbox, range(10, 13))
    with sqlite3.connect(outbox) as db:
        assert db.execute("PRAGMA quick_check").fetchall() == [("ok",)], "every page is well formed"
        count = "SELECT COUNT(*) FROM deliveries {} WHERE webhook = ?"
        by_table = db.execute(count.format("NOT INDEXED"), (HOOK.key,)).fetchone()[0]
        by_index = db.execute(count.format("INDEXED BY deliveries_queue"), (HOOK.key,)).fetchone()[0]
        assert (by_table, by_index) == (12, 9), "the queue's index lacks the three newest alerts"
    db.close()
    with caplog.at_level(logging.WARNING):
        store = AlertStore(outbox, exclusive=True)
    try:
        assert store.pending(webhooks=[HOOK]) == 7, "a01, a03, a05, a07 and the three the index had lost"
        assert store.set_aside is None, "nothing set aside: the file is kept with its history"
        assert [d[0] for d in store.dead_letters()] == ["a09"]
        assert len(store.alerts(limit=100)) == 13
    finally:
        store.close()
    assert [p.name for p in tmp_path.iterdir() if ".damaged-" in p.name] == []
    assert "alerts.outbox_path: index(es) deliveries_queue did not match their tables (row 10 missing" in caplog.text
    assert "rebuilt from the tables, no alert lost" in caplog.text


def test_a_pending_file_index_a_lost_write_left_behind_is_rebuilt_and_every_unacknowledged_alert_counted(tmp_path):
    path = tmp_path / "pending.sqlite"
    pending = PendingAlerts(path)
    pending.add(AlertEvent(payload={"id": "p0", "camera": "plaza"}, snapshot=b"0"))
    pending.close()

    def add() -> None:
        more = PendingAlerts(path)
        for i in range(1, 4):
            more.add(AlertEvent(payload={"id": f"p{i}", "camera": "plaza"}, snapshot=bytes([i])))
        more.close()

    lose_index_writes(path, "pending_unacked", add)
    shared = PendingAlerts(path)  # not the owner: it does not look the file over
    try:
        assert shared.unacked_count("plaza") == 1, "counted by the index, three are missed"
    finally:
        shared.close()
    fresh = PendingAlerts(path, exclusive=True)
    try:
        assert fresh.unacked_count("plaza") == 4 and fresh.stores_set_aside == 0
        assert [a.payload["id"] for a in fresh.unacked()] == ["p0", "p1", "p2", "p3"]
    finally:
        fresh.close()


def test_an_index_that_cannot_be_rebuilt_leaves_the_store_to_be_set_aside(tmp_path):
    path = tmp_path / "s.sqlite"
    schema = "CREATE TABLE IF NOT EXISTS t (x); CREATE UNIQUE INDEX IF NOT EXISTS t_x ON t (x);"
    db = open_durable(path, schema)
    db.execute("INSERT INTO t VALUES (1)")
    db.close()

    def duplicate() -> None:  # a second 1 that only the lost index write would have refused
        with sqlite3.connect(path) as raw:
            raw.execute("PRAGMA writable_schema = ON")
            raw.execute("UPDATE sqlite_schema SET sql = 'CREATE INDEX t_x ON t (x)' WHERE name = 't_x'")
        raw.close()
        with sqlite3.connect(path) as raw:
            raw.execute("INSERT INTO t VALUES (1)")
            raw.execute("PRAGMA writable_schema = ON")
            raw.execute("UPDATE sqlite_schema SET sql = 'CREATE UNIQUE INDEX t_x ON t (x)' WHERE name = 't_x'")
        raw.close()

    lose_index_writes(path, "t_x", duplicate)
    with pytest.raises(StoreDamagedError, match="rebuilding the index failed: UNIQUE constraint failed"):
        open_durable(path, schema, check=True)


def test_rows_are_read_past_a_damaged_page(tmp_path):
    path = tmp_path / "alerts.sqlite"
    outbox_with_ten_alerts(path)
    damage_leaf_holding(path, "alerts", 2)
    db = sqlite3.connect(path)
    with pytest.raises(sqlite3.DatabaseError):
        db.execute("SELECT id, snapshot FROM alerts").fetchall()  # a scan stops at the damaged page
    rows, unreadable = readable_rows(db, "alerts", "id")
    db.close()
    assert [r[0] for r in rows] == [f"a{i:02d}" for i in range(10) if i != 2] and unreadable == 1


def test_set_aside_moves_the_write_ahead_log_with_the_file(tmp_path):
    path = tmp_path / "s.sqlite"
    db = open_durable(path, "CREATE TABLE t (x);")
    db.execute("INSERT INTO t VALUES (1)")  # committed to the WAL, not yet to the file
    aside = set_aside(path)
    assert not path.exists() and Path(f"{aside}-wal").exists()
    db.close()
    assert sqlite3.connect(aside).execute("SELECT x FROM t").fetchall() == [(1,)]


@pytest.mark.timeout(120)
def test_the_alert_stage_on_a_damaged_outbox_starts_and_delivers_what_it_recovered(tmp_path):
    outbox = tmp_path / "alerts.sqlite"
    with WebhookReceiver(SECRET) as receiver:
        target = WebhookTarget.of(WebhookConfig(url=receiver.url))
        store = AlertStore(outbox)
        for i in range(6):
            store.add(
                {"id": f"a{i}", "camera": "plaza", "event": "alert.opened"}, bytes([i]) * SNAPSHOT_BYTES, [target]
            )
        store.close()
        damage_leaf_holding(outbox, "alerts", 4)
        alerts = {"webhooks": [webhook(receiver.url)], "log_path": None, "outbox_path": str(outbox)}
        config = make_config(tmp_path, alerts={**alerts, "pending_path": str(tmp_path / "p.sqlite")})

        def stop_once_delivered(supervisor: Supervisor) -> None:
            if len(receiver.deliveries) >= 5:
                supervisor.request_stop()

        supervisor = Supervisor(config, only=["alert"], on_tick=stop_once_delivered)
        summary = supervisor.run()
    assert not summary.failed and [s.restarts for s in supervisor.stages] == [0]
    assert summary.counters["alert"]["stores_set_aside"] == 1
    assert sorted(d.alert_id for d in receiver.deliveries) == ["a0", "a1", "a2", "a3", "a5"]
    assert all(d.signature_valid for d in receiver.deliveries)


def test_fuse_replaces_a_pending_file_damaged_while_open_without_losing_the_alert_it_is_writing(tmp_path, caplog):
    path = tmp_path / "pending.sqlite"
    pending = PendingAlerts(path, exclusive=True)
    try:
        for i in range(8):
            pending.add(AlertEvent(payload={"id": f"p{i}", "camera": "plaza"}, snapshot=bytes([i]) * SNAPSHOT_BYTES))
        pending.ack(("p0", "p1"))
        damage_leaf_holding(path, "pending", 5)  # p5, under the open connection
        with caplog.at_level(logging.ERROR):
            pending.add(AlertEvent(payload={"id": "p8", "camera": "plaza"}, snapshot=b"new"))
            unacked = [a.payload["id"] for a in pending.unacked()]
        assert unacked == ["p2", "p3", "p4", "p6", "p7", "p8"], "only the alert on the damaged page is gone"
        assert "alerts.pending_path:" in caplog.text and "set aside as" in caplog.text
        assert pending.stores_set_aside == 1
        pending.ack(("p8",))
        assert pending.unacked_count() == 5, "the fresh file takes writes"
    finally:
        pending.close()


@pytest.mark.timeout(120)
def test_an_outbox_damaged_while_the_sink_delivers_restarts_it_once_and_delivery_goes_on(tmp_path, capfd):
    outbox = tmp_path / "alerts.sqlite"
    with WebhookReceiver(SECRET) as receiver:
        receiver.slow_down(0.5)  # each delivery in flight half a second: the damage comes mid-queue
        target = WebhookTarget.of(WebhookConfig(url=receiver.url))
        store = AlertStore(outbox)
        for i in range(8):
            payload = {"id": f"a{i}", "camera": "plaza", "event": "alert.opened"}
            store.add(payload, bytes([i]) * SNAPSHOT_BYTES, [target])
        store.close()
        alerts = {"webhooks": [webhook(receiver.url)], "log_path": None, "outbox_path": str(outbox)}
        config = make_config(tmp_path, alerts={**alerts, "pending_path": str(tmp_path / "p.sqlite")})
        damaged: list[bool] = []

        def damage_then_stop_once_delivered(supervisor: Supervisor) -> None:
            if not damaged and len(receiver.deliveries) >= 1:
                damage_leaf_holding(outbox, "alerts", 5)  # a5, not yet read by the worker
                damaged.append(True)
            if len({d.alert_id for d in receiver.deliveries}) >= 7:
                supervisor.request_stop()

        supervisor = Supervisor(config, only=["alert"], on_tick=damage_then_stop_once_delivered, tick_s=0.05)
        summary = supervisor.run()
    assert not summary.failed and [s.restarts for s in supervisor.stages] == [1]
    assert summary.counters["alert"]["stores_set_aside"] == 1, "counted by the sink that replaced it"
    assert sorted({d.alert_id for d in receiver.deliveries}) == ["a0", "a1", "a2", "a3", "a4", "a6", "a7"]
    logged = capfd.readouterr().err  # the stage's own process logs to stderr
    assert f"alert restarts: alerts.outbox_path: {outbox} is damaged" in logged and "Traceback" not in logged
    assert "a fresh one started with the 2 alert(s) still to send read from it; 1 row(s)" in logged
