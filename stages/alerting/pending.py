"""Fuse's side of at-least-once: every alert is written to SQLite before it is sent to the sink,
and sent again until the sink acknowledges it, so neither a crash of fuse nor one of the sink
loses it. The sink drops the repeats by alert id.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.messages import Ack, AlertEvent, EndOfStream
from pipeline.transport import AckedSender
from stages.alerting.durable import open_durable

logger = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS pending (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    camera TEXT NOT NULL,
    emitted_at REAL NOT NULL,
    payload TEXT NOT NULL,
    snapshot BLOB NOT NULL,
    acked_at REAL
);
CREATE INDEX IF NOT EXISTS pending_unacked ON pending (camera) WHERE acked_at IS NULL;
"""
KEEP_ACKED_S = 3600.0  # acknowledged alerts are kept an hour, for looking into, then pruned


class PendingAlerts:
    """The alerts fuse has emitted, acknowledged or not (SQLite, WAL)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._db = open_durable(self.path, SCHEMA)
        self._db.execute("DELETE FROM pending WHERE acked_at < ?", (time.time() - KEEP_ACKED_S,))

    def add(self, alert: AlertEvent) -> None:
        self._db.execute(
            "INSERT OR IGNORE INTO pending (id, camera, emitted_at, payload, snapshot) VALUES (?, ?, ?, ?, ?)",
            (alert.payload["id"], alert.payload["camera"], time.time(), json.dumps(alert.payload), alert.snapshot),
        )

    def ack(self, ids: tuple[str, ...]) -> None:
        self._db.executemany(
            "UPDATE pending SET acked_at = ? WHERE id = ? AND acked_at IS NULL", [(time.time(), i) for i in ids]
        )

    def unacked(self) -> list[AlertEvent]:
        rows = self._db.execute("SELECT payload, snapshot FROM pending WHERE acked_at IS NULL ORDER BY seq")
        return [AlertEvent(payload=json.loads(payload), snapshot=bytes(snapshot)) for payload, snapshot in rows]

    def unacked_count(self, camera: str | None = None) -> int:
        sql, args = "SELECT COUNT(*) FROM pending WHERE acked_at IS NULL", []
        if camera is not None:
            sql, args = sql + " AND camera = ?", [camera]
        return int(self._db.execute(sql, args).fetchone()[0])

    def emitted_ids(self) -> list[str]:
        return [row[0] for row in self._db.execute("SELECT id FROM pending ORDER BY seq")]

    def close(self) -> None:
        self._db.close()


def eos_id(camera: str) -> str:
    return f"eos:{camera}"


@dataclass
class AlertLink:
    """Sends alerts and ends of stream to the sink and resends whatever it has not acknowledged
    within ``resend_s``. A camera's end of stream goes only once all its alerts are acknowledged."""

    store: PendingAlerts
    sender: AckedSender
    resend_s: float
    _sent_at: dict[str, float] = field(default_factory=dict)
    _ends: dict[str, EndOfStream] = field(default_factory=dict)
    acked_ends: set[str] = field(default_factory=set)

    def start(self) -> int:
        """Send again what a previous run of fuse left unacknowledged; returns how many."""
        left = self.store.unacked()
        if left:
            logger.warning("%d alert(s) from before a restart not yet acknowledged by the sink; resending", len(left))
        for alert in left:
            self._send(alert)
        return len(left)

    def emit(self, alert: AlertEvent) -> None:
        self.store.add(alert)  # durable before it leaves
        self._send(alert)

    def end(self, end: EndOfStream) -> None:
        self._ends[end.camera] = end

    def pump(self, now: float | None = None) -> None:
        """Take in acknowledgements, resend what is overdue, send ends of stream that are due."""
        now = time.monotonic() if now is None else now
        while (message := self.sender.recv(0)) is not None:
            if isinstance(message, Ack):
                self._on_ack(message.ids)
        overdue = [i for i, sent in self._sent_at.items() if now - sent >= self.resend_s]
        if overdue:
            for alert in self.store.unacked():
                if alert.payload["id"] in overdue:
                    self._send(alert, now)
        for camera, end in self._ends.items():
            key = eos_id(camera)
            if camera in self.acked_ends or self.store.unacked_count(camera):
                continue
            if now - self._sent_at.get(key, -1e9) >= self.resend_s and self.sender.try_send(end):
                self._sent_at[key] = now

    def _send(self, alert: AlertEvent, now: float | None = None) -> None:
        if self.sender.try_send(alert):
            self._sent_at[alert.payload["id"]] = time.monotonic() if now is None else now
        else:
            self._sent_at.setdefault(alert.payload["id"], -1e9)  # queue full: try again on the next pump

    def _on_ack(self, ids: tuple[str, ...]) -> None:
        alert_ids = tuple(i for i in ids if not i.startswith("eos:"))
        if alert_ids:
            self.store.ack(alert_ids)
        for i in ids:
            self._sent_at.pop(i, None)
            if i.startswith("eos:"):
                self.acked_ends.add(i.removeprefix("eos:"))

    @property
    def idle(self) -> bool:
        """Nothing unacknowledged and every end of stream acknowledged."""
        return not self.store.unacked_count() and set(self._ends) <= self.acked_ends
