"""Fuse's pending store (real SQLite): the unacknowledged alerts, counted per camera, without reading
the hour of acknowledged ones it keeps, and alerts a full disk refuses held until there is room."""

from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path

import zmq

from pipeline.messages import AlertEvent, EndOfStream, Message
from pipeline.transport import AckedSender, AckingReceiver
from stages.alerting.pending import AlertLink, PendingAlerts
from tests.support.small_disk import small_disk


def alert(alert_id: str, camera: str) -> AlertEvent:
    return AlertEvent(payload={"id": alert_id, "camera": camera}, snapshot=b"jpeg")


def test_unacknowledged_alerts_are_counted_per_camera_until_acknowledged(tmp_path: Path) -> None:
    store = PendingAlerts(tmp_path / "pending.sqlite")
    for i in range(6):
        store.add(alert(f"a{i}", "door" if i % 2 else "yard"))
    store.ack(("a0", "a1", "a2"))
    assert store.unacked_count() == 3
    assert store.unacked_count("door") == 2 and store.unacked_count("yard") == 1
    assert [a.payload["id"] for a in store.unacked()] == ["a3", "a4", "a5"]


def test_counting_the_unacknowledged_reads_an_index_not_every_alert_kept(tmp_path: Path) -> None:
    """Fuse counts them often; a busy site keeps thousands of acknowledged alerts for an hour (a scan
    of 20,000 took 1.3 ms, the index 4 us)."""
    store = PendingAlerts(tmp_path / "pending.sqlite")
    for sql, args in (
        ("SELECT COUNT(*) FROM pending WHERE acked_at IS NULL", ()),
        ("SELECT COUNT(*) FROM pending WHERE acked_at IS NULL AND camera = ?", ("door",)),
    ):
        plan = " ".join(row[-1] for row in store._db.execute("EXPLAIN QUERY PLAN " + sql, args))
        assert "USING INDEX pending_unacked" in plan, plan


def test_alerts_emitted_while_the_disk_is_full_are_held_in_memory_and_written_once_there_is_room(
    tmp_path: Path,
) -> None:
    with small_disk(tmp_path / "disk") as disk:
        path = disk.path / "pending.sqlite"
        store = PendingAlerts(path)
        store.add(alert("a0", "door"))
        disk.fill()
        big = [AlertEvent(payload={"id": f"a{i}", "camera": "door"}, snapshot=os.urandom(300_000)) for i in (1, 2, 3)]
        for event in big:
            store.add(event)  # no error: fuse goes on
        store.ack(("a0", "a1"))  # a0's mark cannot be written; a1 was only in memory
        assert store.held_in_memory == 3, "a2 and a3, and the acknowledgement of a0"
        assert [a.payload["id"] for a in store.unacked()] == ["a2", "a3"], "still sent to the sink"
        assert store.unacked_count() == 2 and store.unacked_count("door") == 2 and store.unacked_count("yard") == 0
        assert store.unacked()[1].snapshot == big[2].snapshot
        disk.free()
        assert store.flush() and store.held_in_memory == 0
        store.close()
        reopened = PendingAlerts(path)
        assert [a.payload["id"] for a in reopened.unacked()] == ["a2", "a3"], "written, and a0's acknowledgement too"
        reopened.close()


def test_an_end_of_stream_waits_for_its_alerts_acknowledgement_but_only_end_wait_s(tmp_path: Path) -> None:
    """A sink that never acknowledges (its disk full): the end of stream goes anyway after
    ``end_wait_s``, the alert behind it (real ZeroMQ, over ipc)."""
    context = zmq.Context()
    endpoint = f"ipc://{tmp_path}/sink"
    sink = AckingReceiver(context, endpoint)
    store = PendingAlerts(tmp_path / "pending.sqlite")
    link = AlertLink(store, AckedSender(context, endpoint), resend_s=30.0, end_wait_s=1.0)
    link.emit(alert("a1", "door"))
    ended = time.monotonic()
    link.end(EndOfStream("door", "alerts"))
    got: list[tuple[float, Message]] = []
    while time.monotonic() - ended < 5 and not any(isinstance(m, EndOfStream) for _, m in got):
        link.pump()
        if (received := sink.recv(timeout_ms=20)) is not None:
            got.append((time.monotonic() - ended, received[1]))
    assert [type(m) for _, m in got] == [AlertEvent, EndOfStream]
    assert got[1][0] >= 1.0, f"the end went {got[1][0]:.2f} s after it came, before its wait was over"
    assert store.unacked_count("door") == 1, "the alert stays pending, to be sent on the next start"
    store.close()
    sink.close()
    context.destroy(linger=0)


def test_acknowledged_alerts_are_pruned_an_hour_on_by_a_running_fuse_and_the_unacknowledged_never(
    tmp_path: Path,
) -> None:
    path = tmp_path / "pending.sqlite"
    store = PendingAlerts(path)
    for alert_id in ("a1", "a2", "a3"):
        store.add(alert(alert_id, "door"))
    store.ack(("a1", "a2"))
    with sqlite3.connect(path) as db:  # a1 acknowledged two hours ago, as far as the file can tell
        db.execute("UPDATE pending SET acked_at = acked_at - 7200 WHERE id = 'a1'")
    context = zmq.Context()
    link = AlertLink(store, AckedSender(context, f"ipc://{tmp_path}/nobody"), resend_s=30.0)
    link.pump()
    assert store.emitted_ids() == ["a1", "a2", "a3"], "not before the hour is up"
    link.pump(now=time.monotonic() + 3601)
    assert store.emitted_ids() == ["a2", "a3"], "a2 is kept its hour; a3 until it is acknowledged"
    store.close()
    context.destroy(linger=0)


def test_pruned_acknowledged_alerts_give_their_room_back_to_the_disk(tmp_path: Path) -> None:
    path = tmp_path / "pending.sqlite"
    store = PendingAlerts(path)
    ids = [f"a{i}" for i in range(200)]
    for alert_id in ids:
        store.add(AlertEvent(payload={"id": alert_id, "camera": "door"}, snapshot=os.urandom(50_000)))
    store.ack(tuple(ids))
    with sqlite3.connect(path) as db:  # acknowledged two hours ago
        db.execute("UPDATE pending SET acked_at = acked_at - 7200")
    store.add(alert("waiting", "door"))
    assert store.prune() == 200
    assert path.stat().st_size < 1_000_000, "the snapshots' pages are given back, not only reused"
    assert store.emitted_ids() == ["waiting"]
    store.close()


def incident_alert(camera: str, incident: str, event: str, sequence: int) -> AlertEvent:
    payload = {"id": f"{incident}-{sequence}", "incident_id": incident, "camera": camera, "event": event}
    return AlertEvent(payload={**payload, "sequence": sequence}, snapshot=f"{incident}-{sequence}".encode())


def test_each_camera_s_open_incident_is_kept_at_its_latest_alert_until_it_is_closed(tmp_path: Path) -> None:
    path = tmp_path / "pending.sqlite"
    pending = PendingAlerts(path)
    pending.add(incident_alert("yard", "i1", "alert.opened", 1))
    pending.add(incident_alert("gate", "g1", "alert.opened", 1))
    pending.add(incident_alert("yard", "i1", "alert.updated", 2))
    pending.add(incident_alert("gate", "g1", "alert.closed", 2))
    pending.close()
    reopened = PendingAlerts(path)
    try:
        (left,) = reopened.open_incidents()
        assert (left.payload["incident_id"], left.payload["sequence"], left.snapshot) == ("i1", 2, b"i1-2")
        reopened.add(incident_alert("yard", "i1", "alert.closed", 3))
        assert reopened.open_incidents() == []
    finally:
        reopened.close()
