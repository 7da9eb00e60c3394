"""The alert sink's durable outbox: SQLite in WAL mode, committed (and synced) before an alert is
acknowledged to fuse.

Tables:

* ``alerts``: every alert once (the id is the primary key, so a resent alert is a no-op), with its
  payload and JPEG snapshot, numbered in arrival order (``seq``);
* ``deliveries``: one row per alert and webhook while it is undelivered or after it was delivered;
* ``dead_letters``: deliveries given up after ``max_age_s``, until ``run.py alerts redeliver``.

Each thread opens its own ``AlertStore`` on the same file (SQLite connections are per thread).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
import uuid
from collections.abc import Collection, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.config import MqttConfig, WebhookConfig, redact
from stages.alerting.durable import open_store, release_free_pages, writing
from stages.alerting.salvage import Recovered, readable_rows

SCHEMA = """
CREATE TABLE IF NOT EXISTS alerts (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    incident_id TEXT,
    camera TEXT NOT NULL,
    event TEXT NOT NULL,
    stored_at REAL NOT NULL,
    payload TEXT NOT NULL,
    snapshot BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS deliveries (
    alert_id TEXT NOT NULL,
    alert_seq INTEGER NOT NULL,
    camera TEXT NOT NULL,
    webhook TEXT NOT NULL,
    webhook_url TEXT NOT NULL,
    delivery_id TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    since REAL NOT NULL,
    next_attempt REAL NOT NULL,
    last_error TEXT,
    delivered_at REAL,
    PRIMARY KEY (alert_id, webhook)
);
CREATE INDEX IF NOT EXISTS deliveries_queue ON deliveries (webhook, state, camera, alert_seq);
CREATE TABLE IF NOT EXISTS dead_letters (
    alert_id TEXT NOT NULL,
    alert_seq INTEGER NOT NULL,
    camera TEXT NOT NULL,
    webhook TEXT NOT NULL,
    webhook_url TEXT NOT NULL,
    delivery_id TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    since REAL NOT NULL,
    dead_at REAL NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (alert_id, webhook)
);
"""


ALERT_COLUMNS = "seq, id, incident_id, camera, event, stored_at, payload, snapshot"
DELIVERY_COLUMNS = (
    "alert_id, alert_seq, camera, webhook, webhook_url, delivery_id, state, attempts, since, next_attempt, "
    "last_error, delivered_at"
)
DEAD_LETTER_COLUMNS = "alert_id, alert_seq, camera, webhook, webhook_url, delivery_id, attempts, since, dead_at, reason"


def recover_outbox(old: sqlite3.Connection, new: sqlite3.Connection) -> Recovered:
    """Copy from a damaged outbox (``old``) into a fresh one the alerts still to deliver and the dead
    letters, as they were (numbers, attempts, next attempt), so delivery carries on in the same order.
    Delivered alerts are not copied; a delivery whose alert cannot be read is lost (counted)."""
    deliveries, bad_deliveries = readable_rows(old, "deliveries", DELIVERY_COLUMNS, "state = 'pending'")
    dead, bad_dead = readable_rows(old, "dead_letters", DEAD_LETTER_COLUMNS)
    alerts: list[tuple[Any, ...]] = []
    unreadable = bad_deliveries + bad_dead
    for seq in sorted({row[1] for row in deliveries + dead}):
        try:
            row = old.execute(f"SELECT {ALERT_COLUMNS} FROM alerts WHERE seq = ?", (seq,)).fetchone()
        except sqlite3.DatabaseError:
            row = None
        if row is None:
            unreadable += 1
        else:
            alerts.append(tuple(row))
    found = {row[0] for row in alerts}
    new.executemany(f"INSERT OR IGNORE INTO alerts ({ALERT_COLUMNS}) VALUES ({', '.join('?' * 8)})", alerts)
    new.executemany(
        f"INSERT OR IGNORE INTO deliveries ({DELIVERY_COLUMNS}) VALUES ({', '.join('?' * 12)})",
        [row for row in deliveries if row[1] in found],
    )
    new.executemany(
        f"INSERT OR IGNORE INTO dead_letters ({DEAD_LETTER_COLUMNS}) VALUES ({', '.join('?' * 10)})",
        [row for row in dead if row[1] in found],
    )
    return Recovered(rows=len(alerts), unreadable=unreadable)


@dataclass(frozen=True)
class WebhookTarget:
    """A webhook (or MQTT broker entry) as the outbox knows it: a stable key (a hash of the URL, which
    may hold a token) and the URL with credentials hidden, for display (logs, ``alerts list``, the
    metrics' ``destination`` label); where something was hidden, the key's first 6 characters follow
    (``...?token=*** #3fa2c1``), so two webhooks that differ only in their tokens stay apart."""

    key: str
    shown_url: str

    @classmethod
    def of(cls, destination: WebhookConfig | MqttConfig) -> WebhookTarget:
        """A webhook is known by its URL; an MQTT broker entry by its URL and topic (one broker may
        take the same alerts on two topics)."""
        if isinstance(destination, MqttConfig):
            named = f"{destination.url} {destination.topic}"
            return cls(hashlib.sha256(named.encode()).hexdigest()[:16], f"{destination.url} topic {destination.topic}")
        key = hashlib.sha256(destination.url.encode()).hexdigest()[:16]
        shown = redact(destination.url)
        if shown != destination.url:  # a secret hidden: two URLs that differ only in it must not look alike
            shown = f"{shown} #{key[:6]}"
        return cls(key, shown)


def delivery_id(alert_id: str, webhook_key: str) -> str:
    """Stable across attempts and restarts: the receiver's idempotency key."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"vigil-delivery:{alert_id}:{webhook_key}"))


@dataclass(frozen=True)
class DueDelivery:
    alert_id: str
    alert_seq: int
    camera: str
    event: str
    delivery_id: str
    attempts: int
    since: float
    payload: dict[str, Any]
    snapshot: bytes


@dataclass(frozen=True)
class DeliveryRow:
    alert_id: str
    webhook_url: str
    state: str  # pending | delivered | dead
    attempts: int
    last_error: str | None
    delivered_at: float | None
    next_attempt: float | None


@dataclass(frozen=True)
class AlertRow:
    seq: int
    id: str
    incident_id: str | None
    camera: str
    event: str
    stored_at: float
    payload: dict[str, Any]
    snapshot_bytes: int
    deliveries: tuple[DeliveryRow, ...]


class AlertStore:
    """The outbox. ``exclusive``: the sink's own, claimed for this process (StoreInUseError when
    another vigil's sink holds it); the delivery workers and ``run.py alerts`` open it shared."""

    def __init__(self, path: str | Path, exclusive: bool = False) -> None:
        self.path = Path(path)
        self._db, self._claim, self.set_aside = open_store(
            self.path, SCHEMA, exclusive, recover=recover_outbox if exclusive else None, setting="alerts.outbox_path"
        )

    def close(self) -> None:
        self._db.close()
        if self._claim is not None:
            self._claim.release()

    def _transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        """A write transaction; StoreWriteError (nothing written) when the disk is full or failing."""
        return writing(self._db, self.path)

    # ----- the sink --------------------------------------------------------------------------
    def add(self, payload: dict[str, Any], snapshot: bytes, webhooks: Sequence[WebhookTarget]) -> bool:
        """Store an alert and queue it for every webhook; False (and nothing changes) when this
        alert id is already stored."""
        now = time.time()
        alert_id, camera = payload["id"], payload["camera"]
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT OR IGNORE INTO alerts (id, incident_id, camera, event, stored_at, payload, snapshot) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (alert_id, payload.get("incident_id"), camera, payload["event"], now, json.dumps(payload), snapshot),
            )
            if cursor.rowcount == 0:
                return False
            seq = cursor.lastrowid
            db.executemany(
                "INSERT INTO deliveries (alert_id, alert_seq, camera, webhook, webhook_url, delivery_id, since, "
                "next_attempt) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                [(alert_id, seq, camera, w.key, w.shown_url, delivery_id(alert_id, w.key), now, now) for w in webhooks],
            )
        return True

    def pending(self, camera: str | None = None, webhooks: Sequence[WebhookTarget] | None = None) -> int:
        """Deliveries not yet made (for one camera, to the given webhooks)."""
        sql, args = "SELECT COUNT(*) FROM deliveries WHERE state = 'pending'", []
        if camera is not None:
            sql, args = sql + " AND camera = ?", [camera]
        if webhooks is not None:
            sql += f" AND webhook IN ({','.join('?' * len(webhooks))})"
            args += [w.key for w in webhooks]
        return int(self._db.execute(sql, args).fetchone()[0])

    # ----- a webhook's worker ---------------------------------------------------------------
    def due(self, webhook: WebhookTarget, now: float) -> list[DueDelivery]:
        """For each camera, its oldest undelivered alert to this webhook, if its next attempt is
        due: per-camera order holds, and one camera's stuck alert does not hold back another's."""
        rows = self._db.execute(
            """
            SELECT d.alert_id, d.alert_seq, d.camera, a.event, d.delivery_id, d.attempts, d.since, a.payload,
                   a.snapshot
            FROM deliveries d JOIN alerts a ON a.id = d.alert_id
            WHERE d.webhook = ? AND d.state = 'pending' AND d.next_attempt <= ?
              AND d.alert_seq = (SELECT MIN(alert_seq) FROM deliveries h
                                 WHERE h.webhook = d.webhook AND h.camera = d.camera AND h.state = 'pending')
            ORDER BY d.alert_seq
            """,
            (webhook.key, now),
        ).fetchall()
        return [DueDelivery(r[0], r[1], r[2], r[3], r[4], r[5], r[6], json.loads(r[7]), bytes(r[8])) for r in rows]

    def next_attempt(self, webhook: WebhookTarget, excluding: Collection[str] = ()) -> float | None:
        """When ``due`` will next have an alert for this webhook: the earliest next attempt of each
        camera's oldest undelivered alert. (The alerts queued behind it wait for it, however early
        their own time: counting them made a worker whose webhook was down wake again at once, and
        the alert sink spin on a core for as long as the webhook stayed down.) Cameras ``excluding``
        (their alert is being posted) are left out, for the same reason."""
        skip = f"AND d.camera NOT IN ({','.join('?' * len(excluding))})" if excluding else ""
        row = self._db.execute(
            f"""
            SELECT MIN(d.next_attempt) FROM deliveries d
            WHERE d.webhook = ? AND d.state = 'pending' {skip}
              AND d.alert_seq = (SELECT MIN(alert_seq) FROM deliveries h
                                 WHERE h.webhook = d.webhook AND h.camera = d.camera AND h.state = 'pending')
            """,
            (webhook.key, *excluding),
        ).fetchone()
        return None if row[0] is None else float(row[0])

    def delivered(self, alert_id: str, webhook: WebhookTarget) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE deliveries SET state = 'delivered', attempts = attempts + 1, delivered_at = ?, "
                "last_error = NULL WHERE alert_id = ? AND webhook = ?",
                (time.time(), alert_id, webhook.key),
            )

    def failed(self, alert_id: str, webhook: WebhookTarget, error: str, next_attempt: float) -> None:
        with self._transaction() as db:
            db.execute(
                "UPDATE deliveries SET attempts = attempts + 1, last_error = ?, next_attempt = ? "
                "WHERE alert_id = ? AND webhook = ?",
                (error, next_attempt, alert_id, webhook.key),
            )

    def bury(self, alert_id: str, webhook: WebhookTarget, reason: str) -> None:
        """Move a delivery to the dead letters."""
        with self._transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO dead_letters (alert_id, alert_seq, camera, webhook, webhook_url, delivery_id, "
                "attempts, since, dead_at, reason) SELECT alert_id, alert_seq, camera, webhook, webhook_url, "
                "delivery_id, attempts, since, ?, ? FROM deliveries WHERE alert_id = ? AND webhook = ?",
                (time.time(), reason, alert_id, webhook.key),
            )
            db.execute("DELETE FROM deliveries WHERE alert_id = ? AND webhook = ?", (alert_id, webhook.key))

    def prune(self, stored_before: float, batch: int = 500) -> int:
        """Delete up to ``batch`` alerts stored before ``stored_before`` that every webhook has
        received (with their snapshots and delivery rows); an alert still pending or in the dead
        letters for any webhook is kept whatever its age. Returns how many were deleted."""
        with self._transaction() as db:
            ids = [
                row[0]
                for row in db.execute(
                    """
                    SELECT a.id FROM alerts a
                    WHERE a.stored_at < ?
                      AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.alert_id = a.id AND d.state != 'delivered')
                      AND NOT EXISTS (SELECT 1 FROM dead_letters x WHERE x.alert_id = a.id)
                    ORDER BY a.seq LIMIT ?
                    """,
                    (stored_before, batch),
                )
            ]
            db.executemany("DELETE FROM deliveries WHERE alert_id = ?", [(i,) for i in ids])
            db.executemany("DELETE FROM alerts WHERE id = ?", [(i,) for i in ids])
        if ids:
            release_free_pages(self._db, self.path)  # the snapshots' room back to the disk
        return len(ids)

    # ----- looking in (run.py alerts) ---------------------------------------------------------
    def alerts(self, limit: int = 50, camera: str | None = None) -> list[AlertRow]:
        """The newest alerts first, with every delivery's state."""
        sql = "SELECT seq, id, incident_id, camera, event, stored_at, payload, length(snapshot) FROM alerts"
        args: list[Any] = []
        if camera is not None:
            sql, args = sql + " WHERE camera = ?", [camera]
        rows = self._db.execute(sql + " ORDER BY seq DESC LIMIT ?", [*args, limit]).fetchall()
        return [self._alert_row(row) for row in rows]

    def alert(self, alert_id: str) -> AlertRow | None:
        """One alert by id, or by a unique prefix of its id."""
        rows = self._db.execute(
            "SELECT seq, id, incident_id, camera, event, stored_at, payload, length(snapshot) FROM alerts "
            "WHERE id LIKE ? ORDER BY seq LIMIT 2",
            (alert_id.replace("%", "") + "%",),
        ).fetchall()
        return self._alert_row(rows[0]) if len(rows) == 1 else None

    def snapshot(self, alert_id: str) -> bytes | None:
        row = self._db.execute("SELECT snapshot FROM alerts WHERE id = ?", (alert_id,)).fetchone()
        return None if row is None else bytes(row[0])

    def _alert_row(self, row: Sequence[Any]) -> AlertRow:
        return AlertRow(
            seq=row[0],
            id=row[1],
            incident_id=row[2],
            camera=row[3],
            event=row[4],
            stored_at=row[5],
            payload=json.loads(row[6]),
            snapshot_bytes=row[7],
            deliveries=tuple(self._deliveries_of(row[1])),
        )

    def _deliveries_of(self, alert_id: str) -> Iterator[DeliveryRow]:
        for r in self._db.execute(
            "SELECT alert_id, webhook_url, state, attempts, last_error, delivered_at, next_attempt FROM deliveries "
            "WHERE alert_id = ? ORDER BY webhook_url",
            (alert_id,),
        ):
            yield DeliveryRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6] if r[2] == "pending" else None)
        for r in self._db.execute(
            "SELECT alert_id, webhook_url, attempts, reason FROM dead_letters WHERE alert_id = ? ORDER BY webhook_url",
            (alert_id,),
        ):
            yield DeliveryRow(r[0], r[1], "dead", r[2], r[3], None, None)

    def dead_letters(self) -> list[tuple[str, str, str, int, float, str]]:
        """(alert id, camera, webhook, attempts, dead at, reason), oldest first."""
        return [
            (r[0], r[1], r[2], r[3], r[4], r[5])
            for r in self._db.execute(
                "SELECT alert_id, camera, webhook_url, attempts, dead_at, reason FROM dead_letters ORDER BY alert_seq"
            )
        ]

    def redeliver(self, alert_id: str | None = None) -> int:
        """Queue an alert again to every webhook (dead or delivered), or every dead letter when
        ``alert_id`` is None, with a fresh maximum age; returns how many deliveries were queued."""
        now = time.time()
        where, args = ("WHERE alert_id = ?", [alert_id]) if alert_id is not None else ("", [])
        with self._transaction() as db:
            cursor = db.execute(
                "INSERT OR REPLACE INTO deliveries (alert_id, alert_seq, camera, webhook, webhook_url, delivery_id, "
                "state, attempts, since, next_attempt) SELECT alert_id, alert_seq, camera, webhook, webhook_url, "
                f"delivery_id, 'pending', 0, ?, ? FROM dead_letters {where}",
                [now, now, *args],
            )
            count = cursor.rowcount
            db.execute(f"DELETE FROM dead_letters {where}", args)
            if alert_id is not None:  # and send one alert again even where it was delivered
                count += db.execute(
                    "UPDATE deliveries SET state = 'pending', attempts = 0, since = ?, next_attempt = ?, "
                    "delivered_at = NULL WHERE alert_id = ? AND state = 'delivered'",
                    (now, now, alert_id),
                ).rowcount
        return count
