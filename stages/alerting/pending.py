"""Fuse's side of at-least-once: every alert is written to SQLite before it is sent to the sink,
and sent again until the sink acknowledges it, so neither a crash of fuse nor one of the sink
loses it. The sink drops the repeats by alert id.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from pipeline.logs import RateLimited
from pipeline.messages import Ack, AlertEvent, EndOfStream
from pipeline.transport import AckedSender
from stages.alerting.durable import (
    StoreDamagedError,
    StoreWriteError,
    open_store,
    release_free_pages,
    replace_damaged,
    write_or_raise,
    writing,
)
from stages.alerting.salvage import Recovered, is_damaged, readable_rows

logger = logging.getLogger(__name__)
T = TypeVar("T")

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
CREATE TABLE IF NOT EXISTS open_incidents (
    camera TEXT PRIMARY KEY,
    incident_id TEXT NOT NULL,
    payload TEXT NOT NULL,
    snapshot BLOB NOT NULL
);
"""
SETTING = "alerts.pending_path"
COLUMNS = "seq, id, camera, emitted_at, payload, snapshot, acked_at"
INCIDENT_COLUMNS = "camera, incident_id, payload, snapshot"
KEEP_ACKED_S = 3600.0  # acknowledged alerts are kept an hour, for looking into, then pruned
PRUNE_EVERY_S = 3600.0  # how often a running fuse deletes what was acknowledged over KEEP_ACKED_S ago
WARN_EVERY_S = 60.0  # a file that keeps refusing writes is reported at most this often


def recover_pending(old: sqlite3.Connection, new: sqlite3.Connection) -> Recovered:
    """Copy from a damaged pending file (``old``) into a fresh one the alerts the sink has not
    acknowledged, so they are sent again, and the incidents left open, so they are closed; the
    acknowledged alerts (kept only for looking into) are not."""
    rows, unreadable = readable_rows(old, "pending", COLUMNS, "acked_at IS NULL")
    new.executemany(f"INSERT OR IGNORE INTO pending ({COLUMNS}) VALUES ({', '.join('?' * 7)})", rows)
    incidents: list[tuple] = []
    lost = 0
    with contextlib.suppress(sqlite3.DatabaseError):  # its schema unreadable: the pending rows are what matter
        if old.execute("SELECT 1 FROM sqlite_schema WHERE name = 'open_incidents'").fetchone():  # newer files
            incidents, lost = readable_rows(old, "open_incidents", INCIDENT_COLUMNS)
    new.executemany(f"INSERT OR REPLACE INTO open_incidents ({INCIDENT_COLUMNS}) VALUES (?, ?, ?, ?)", incidents)
    return Recovered(rows=len(rows), unreadable=unreadable + lost)


class PendingAlerts:
    """The alerts fuse has emitted, acknowledged or not (SQLite, WAL).

    When the disk is full, an alert (or an acknowledgement) that cannot be written is held in
    memory, still sent to the sink and counted as unacknowledged, and written at the next
    chance; only a stop of fuse while the disk still refuses loses what is held so."""

    def __init__(self, path: str | Path, exclusive: bool = False) -> None:
        self.path = Path(path)
        self._db, self._claim, aside = open_store(  # exclusive: fuse's own, one per file
            self.path, SCHEMA, exclusive, recover=recover_pending if exclusive else None, setting=SETTING
        )
        self._unwritten: dict[str, AlertEvent] = {}  # emitted, not yet in the file
        self._acks_unwritten: set[str] = set()  # acknowledged, not yet marked so in the file
        self._failing_since: float | None = None
        self._warned = RateLimited(WARN_EVERY_S)
        self.stores_set_aside = int(aside is not None)  # damaged files replaced, at open or since
        self.prune()

    def prune(self) -> int:
        """Delete the alerts (snapshots and all) acknowledged more than KEEP_ACKED_S ago; returns how
        many. Called at start and hourly: without it a fuse that runs for months keeps them all."""
        try:
            cutoff = time.time() - KEEP_ACKED_S
            cursor = self._using(
                lambda db: write_or_raise(
                    self.path, lambda: db.execute("DELETE FROM pending WHERE acked_at < ?", (cutoff,))
                )
            )
            if cursor.rowcount:
                self._using(lambda db: release_free_pages(db, self.path))
        except StoreWriteError as exc:
            logger.warning("alerts.pending_path: old acknowledged alerts not pruned for now: %s", exc)
            return 0
        return int(cursor.rowcount)

    @property
    def held_in_memory(self) -> int:
        """Alerts and acknowledgements waiting for room on the disk."""
        return len(self._unwritten) + len(self._acks_unwritten)

    def add(self, alert: AlertEvent) -> None:
        self._unwritten[alert.payload["id"]] = alert
        self.flush()

    def ack(self, ids: tuple[str, ...]) -> None:
        for alert_id in ids:
            if self._unwritten.pop(alert_id, None) is None:  # one held in memory needs no mark: the sink has it
                self._acks_unwritten.add(alert_id)
        self.flush()

    def flush(self) -> bool:
        """Write what is held in memory; False (and it stays held) while the disk refuses."""
        if not self._unwritten and not self._acks_unwritten:
            return True
        now = time.time()

        def write(db: sqlite3.Connection) -> None:
            with writing(db, self.path):
                db.executemany(
                    "INSERT OR IGNORE INTO pending (id, camera, emitted_at, payload, snapshot) VALUES (?, ?, ?, ?, ?)",
                    [
                        (i, a.payload["camera"], now, json.dumps(a.payload), a.snapshot)
                        for i, a in self._unwritten.items()
                    ],
                )
                for alert in self._unwritten.values():
                    keep_open_incident(db, alert)
                db.executemany(
                    "UPDATE pending SET acked_at = ? WHERE id = ? AND acked_at IS NULL",
                    [(now, i) for i in self._acks_unwritten],
                )

        try:
            self._using(write)
        except StoreWriteError as exc:
            if self._failing_since is None:
                self._failing_since = time.monotonic()
            if self._warned.due():
                logger.error(
                    "alerts.pending_path: %s; %d alert(s) and %d acknowledgement(s) held in memory until they can "
                    "be written (alerts are sent to the sink meanwhile; they are lost only if fuse stops first)",
                    exc,
                    len(self._unwritten),
                    len(self._acks_unwritten),
                )
            return False
        if self._failing_since is not None:
            logger.warning(
                "alerts.pending_path: writing again after %.0f s; nothing held in memory was lost",
                time.monotonic() - self._failing_since,
            )
            self._failing_since = None
            self._warned.reset()
        self._unwritten.clear()
        self._acks_unwritten.clear()
        return True

    def unacked(self) -> list[AlertEvent]:
        self.flush()
        rows = self._using(
            lambda db: db.execute(
                "SELECT id, payload, snapshot FROM pending WHERE acked_at IS NULL ORDER BY seq"
            ).fetchall()
        )
        stored = [
            AlertEvent(payload=json.loads(payload), snapshot=bytes(snapshot))
            for alert_id, payload, snapshot in rows
            if alert_id not in self._acks_unwritten
        ]
        return stored + list(self._unwritten.values())

    def open_incidents(self) -> list[AlertEvent]:
        """The latest alert of each incident that was open when the file was last written (one per
        camera): after a crash of fuse, incidents its successor knows nothing of."""
        self.flush()
        rows = self._using(
            lambda db: db.execute("SELECT payload, snapshot FROM open_incidents ORDER BY camera").fetchall()
        )
        return [AlertEvent(payload=json.loads(payload), snapshot=bytes(snapshot)) for payload, snapshot in rows]

    def unacked_count(self, camera: str | None = None) -> int:
        held = sum(1 for a in self._unwritten.values() if camera is None or a.payload["camera"] == camera)
        where, args = (
            ("WHERE acked_at IS NULL", []) if camera is None else ("WHERE acked_at IS NULL AND camera = ?", [camera])
        )
        if not self._acks_unwritten:
            count = self._using(lambda db: db.execute(f"SELECT COUNT(*) FROM pending {where}", args).fetchone())
            return held + int(count[0])
        ids = [row[0] for row in self._using(lambda db: db.execute(f"SELECT id FROM pending {where}", args).fetchall())]
        return held + sum(1 for i in ids if i not in self._acks_unwritten)

    def emitted_ids(self) -> list[str]:
        stored = [
            row[0] for row in self._using(lambda db: db.execute("SELECT id FROM pending ORDER BY seq").fetchall())
        ]
        return stored + [i for i in self._unwritten if i not in stored]

    def _using(self, query: Callable[[sqlite3.Connection], T]) -> T:
        """``query(db)``; when it finds the file damaged, the file is set aside, a fresh one started
        with the unacknowledged alerts that can be read from it, and the query run again there. Done
        in place, not by a restart of fuse, which would lose what it holds in memory (the alert it was
        writing, its incidents)."""
        try:
            return query(self._db)
        except sqlite3.DatabaseError as exc:
            if not is_damaged(exc):
                raise
            damage = StoreDamagedError(f"{self.path} is damaged ({exc})")
        with contextlib.suppress(sqlite3.Error):
            self._db.close()
        self._db, _ = replace_damaged(self.path, SCHEMA, damage, recover_pending, SETTING)
        self.stores_set_aside += 1
        return query(self._db)

    def close(self) -> None:
        if not self.flush():
            logger.error(
                "alerts.pending_path: fuse stops with %d alert(s) not written to %s; those the sink has not "
                "stored are lost",
                len(self._unwritten),
                self.path,
            )
        self._db.close()
        if self._claim is not None:
            self._claim.release()


def keep_open_incident(db: sqlite3.Connection, alert: AlertEvent) -> None:
    """Record ``alert`` as its camera's open incident (opened, updated), or forget it (closed)."""
    payload = alert.payload
    if "incident_id" not in payload:
        return
    if payload.get("event") == "alert.closed":
        db.execute(
            "DELETE FROM open_incidents WHERE camera = ? AND incident_id = ?",
            (payload["camera"], payload["incident_id"]),
        )
        return
    db.execute(
        f"INSERT OR REPLACE INTO open_incidents ({INCIDENT_COLUMNS}) VALUES (?, ?, ?, ?)",
        (payload["camera"], payload["incident_id"], json.dumps(payload), alert.snapshot),
    )


def eos_id(camera: str) -> str:
    return f"eos:{camera}"


@dataclass
class AlertLink:
    """Sends alerts and ends of stream to the sink and resends whatever it has not acknowledged
    within ``resend_s``. A camera's end of stream goes once all its alerts are acknowledged, or
    ``end_wait_s`` after it came (the sink cannot store them: its disk is full); what is still
    unacknowledged then stays in the pending file and is sent again on the next start."""

    store: PendingAlerts
    sender: AckedSender
    resend_s: float
    end_wait_s: float = math.inf
    _sent_at: dict[str, float] = field(default_factory=dict)
    _ends: dict[str, EndOfStream] = field(default_factory=dict)
    _ends_at: dict[str, float] = field(default_factory=dict)
    _prune_at: float = field(default_factory=lambda: time.monotonic() + PRUNE_EVERY_S)  # the store pruned at open
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

    def end(self, end: EndOfStream, now: float | None = None) -> None:
        self._ends[end.camera] = end
        self._ends_at[end.camera] = time.monotonic() if now is None else now

    def pump(self, now: float | None = None) -> None:
        """Take in acknowledgements, resend what is overdue, send ends of stream that are due."""
        now = time.monotonic() if now is None else now
        if now >= self._prune_at:
            self.store.prune()
            self._prune_at = now + PRUNE_EVERY_S
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
            if camera in self.acked_ends:
                continue
            left = self.store.unacked_count(camera)
            if left and now - self._ends_at[camera] < self.end_wait_s:
                continue
            if left and key not in self._sent_at:
                logger.error(
                    "camera %s: %d alert(s) still not acknowledged by the sink %.0f s after its end of stream; "
                    "they stay in %s and are sent again on the next start",
                    camera,
                    left,
                    now - self._ends_at[camera],
                    self.store.path,
                )
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
