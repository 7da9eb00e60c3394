"""Fuse's pending store (real SQLite): the unacknowledged alerts, counted per camera, without reading
the hour of acknowledged ones it keeps."""

from __future__ import annotations

from pathlib import Path

from pipeline.messages import AlertEvent
from stages.alerting.pending import PendingAlerts


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
