"""alert: the sink. Every alert from fuse is stored in the SQLite outbox (and appended to the
JSON-lines log) before it is acknowledged; fuse resends until then, and repeats are dropped by
alert id. One worker thread per webhook delivers from the outbox, so whatever was undelivered
when the sink stopped or crashed is delivered after it starts again.

The same goes for each MQTT broker entry (``alerts.mqtt``): a worker per entry, from the same outbox.

When a camera's end of stream arrives, the sink reports the camera done once its alerts are
delivered, or after ``alerts.end_of_stream_wait_s`` (they stay in the outbox either way).
"""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from pathlib import Path
from typing import Any

from pipeline.config import ConfigError, MqttConfig, WebhookConfig
from pipeline.logs import RateLimited
from pipeline.messages import Ack, AlertEvent, EndOfStream, delivery_key
from pipeline.stage import PermanentStageError, RestartStageError, StageContext
from pipeline.transport import AckingReceiver
from stages.alerting.delivery import DeliveryWorker
from stages.alerting.durable import StoreOpenError, StoreWriteError, free_space, open_when_possible
from stages.alerting.pending import eos_id
from stages.alerting.salvage import is_damaged
from stages.alerting.store import AlertStore

logger = logging.getLogger(__name__)

WARN_EVERY_S = 60.0  # a store or log that keeps failing is reported at most this often
PRUNE_EVERY_S = 3600.0  # how often delivered alerts past alerts.retention_days are looked for
PRUNE_BATCH = 500  # deleted per transaction, so storing a new alert never waits long
PRUNE_BATCH_PAUSE_S = 1.0  # between two full batches


class AlertLog:
    """Appends each alert (without the snapshot bytes) as one JSON line. The file is opened for each
    line, so a log rotated away (renamed or removed) is started afresh at the next alert. A line that
    cannot be written (disk full) is logged and skipped: the outbox, not this file, is the record."""

    def __init__(self, path: str | None) -> None:
        self.path = Path(path) if path else None
        self.failures = 0
        self._warned = RateLimited(WARN_EVERY_S)
        if self.path is not None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise PermanentStageError(f"alerts.log_path: cannot create {self.path}: {exc.strerror or exc}") from exc

    def append(self, payload: dict[str, Any], snapshot_bytes: int) -> None:
        if self.path is None:
            return
        line = json.dumps({**payload, "snapshot": {"content_type": "image/jpeg", "bytes": snapshot_bytes}})
        try:
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(line + "\n")
        except OSError as exc:
            self.failures += 1
            if self._warned.due():
                logger.error(
                    "alerts.log_path: cannot append alert %s to %s: %s (%s); the alert is in the outbox "
                    "(%d line(s) missing from the log so far)",
                    payload.get("id"),
                    self.path,
                    exc.strerror or exc,
                    free_space(self.path),
                    self.failures,
                )


class Sink:
    """Stores, acknowledges, and tracks each camera's end of stream."""

    def __init__(self, ctx: StageContext, store: AlertStore, workers: list[DeliveryWorker]) -> None:
        self.ctx = ctx
        self.store = store
        self.workers = workers
        self.targets = [w.target for w in workers]
        self.log = AlertLog(ctx.config.alerts.log_path)
        self.closing: dict[str, tuple[float, str | None]] = {}  # camera -> (deadline, error)
        self.done: set[str] = set()
        self._counted_pending = 0.0
        self._store_failing: float | None = None  # monotonic time of the first refused store, while failing
        self._store_warned = RateLimited(WARN_EVERY_S)
        self._prune_at = 0.0

    def on_alert(self, alert: AlertEvent) -> bool:
        """Store the alert; False when it could not be stored (disk full): it is then not
        acknowledged, so fuse keeps it and sends it again."""
        try:
            added = self.store.add(alert.payload, alert.snapshot, self.targets)
        except StoreWriteError as exc:
            self.ctx.counters["store_failures"] += 1
            if self._store_failing is None:
                self._store_failing = time.monotonic()
            if self._store_warned.due():
                logger.error(
                    "alerts.outbox_path: alert %s not stored: %s; not acknowledged, so fuse keeps it and sends it "
                    "again (%d attempt(s) refused since the first)",
                    alert.payload.get("id"),
                    exc,
                    self.ctx.counters["store_failures"],
                )
            return False
        if self._store_failing is not None:
            logger.warning(
                "alerts.outbox_path: storing alerts again after %.0f s", time.monotonic() - self._store_failing
            )
            self._store_failing = None
            self._store_warned.reset()
        if added:
            self.log.append(alert.payload, len(alert.snapshot))
            self.ctx.counters["alerts"] += 1
            self.ctx.counters["log_failures"] = self.log.failures
            for worker in self.workers:
                worker.wake.set()
        else:
            self.ctx.counters["duplicates"] += 1
        return True

    def prune(self) -> None:
        """Delete delivered alerts older than ``alerts.retention_days``, a batch at a time, at most
        once every PRUNE_EVERY_S (the first call prunes at once)."""
        days = self.ctx.config.alerts.retention_days
        now = time.monotonic()
        if days is None or now < self._prune_at:
            return
        try:
            deleted = self.store.prune(time.time() - days * 86_400.0)
        except StoreWriteError as exc:
            logger.warning("alerts.retention_days: pruning the outbox failed for now: %s", exc)
            deleted = 0
        self.ctx.counters["pruned"] += deleted
        if deleted:
            logger.info("deleted %d delivered alert(s) older than %g day(s) from the outbox", deleted, days)
        self._prune_at = now + (PRUNE_BATCH_PAUSE_S if deleted == PRUNE_BATCH else PRUNE_EVERY_S)

    def on_end(self, end: EndOfStream) -> None:
        if end.camera not in self.done and end.camera not in self.closing:
            deadline = time.monotonic() + self.ctx.config.alerts.end_of_stream_wait_s
            self.closing[end.camera] = (deadline, end.error)

    def check_closing(self) -> None:
        """Report a camera done once its alerts are delivered, or its wait is over."""
        for camera, (deadline, error) in list(self.closing.items()):
            left = self.store.pending(camera, self.targets)
            if left and time.monotonic() < deadline:
                continue
            if left:
                logger.error(
                    "camera %s: %d delivery(ies) still pending at the end of its stream; they stay in the outbox "
                    "and are retried on the next start (run.py alerts list)",
                    camera,
                    left,
                )
            del self.closing[camera]
            self.done.add(camera)
            self.ctx.report("camera-done", error, camera)

    def count(self) -> None:
        now = time.monotonic()
        if now - self._counted_pending >= 1.0:
            pending = [(w.target.shown_url, self.store.pending(webhooks=[w.target])) for w in self.workers]
            for destination, count in pending:  # per destination, for /metrics
                self.ctx.deliveries[delivery_key(destination, "pending")] = count
            self.ctx.counters["deliveries_pending"] = sum(count for _, count in pending)
            self._counted_pending = now
        self.ctx.counters["delivered"] = sum(w.delivered for w in self.workers)
        self.ctx.counters["delivery_failed"] = sum(w.failed_attempts for w in self.workers)
        self.ctx.counters["dead_letters"] = sum(w.dead for w in self.workers)
        for worker in self.workers:
            for measure, count in (
                ("delivered", worker.delivered),
                ("failed", worker.failed_attempts),
                ("dead", worker.dead),
            ):
                self.ctx.deliveries[delivery_key(worker.target.shown_url, measure)] = count


def run(ctx: StageContext) -> None:
    alerts = ctx.config.alerts
    destinations: list[WebhookConfig | MqttConfig] = [*alerts.webhooks, *alerts.mqtt]
    try:
        secrets = [webhook.secret() for webhook in alerts.webhooks] + [broker.password() for broker in alerts.mqtt]
    except ConfigError as exc:
        raise PermanentStageError(str(exc)) from exc
    try:  # a full disk is waited out (beating, not ready); a folder in the way fails the stage
        store = open_when_possible(
            lambda: AlertStore(alerts.outbox_path, exclusive=True),
            "alerts.outbox_path",
            ctx.should_stop,
            ctx.beat,
        )
    except StoreOpenError as exc:
        raise PermanentStageError(f"alerts.outbox_path: {exc}") from exc
    if store is None:
        return
    receiver = ctx.acking_receiver()
    try:
        workers = [
            DeliveryWorker(
                destination,
                alerts.outbox_path,
                ctx.stop_event,
                secret=secret,
                cameras=list(ctx.config.cameras),
                observe=ctx.observe,
            )
            for destination, secret in zip(destinations, secrets, strict=True)
        ]
    except ConfigError as exc:  # a ca_file that is not PEM: restarting cannot help
        raise PermanentStageError(str(exc)) from exc
    sink = Sink(ctx, store, workers)
    ctx.counters["stores_set_aside"] = int(store.set_aside is not None)
    for worker in workers:
        problem = worker.sender.probe()
        if problem:
            logger.error("%s: %s at start; alerts are kept and retried", worker.label, problem)
        worker.start()
    left = store.pending(webhooks=sink.targets)
    if left:
        logger.warning("%d delivery(ies) left undelivered by an earlier run; delivering them", left)
    if not workers:
        logger.warning("no webhooks or MQTT brokers configured: alerts go to the outbox and the log only")
    ctx.report("ready")
    try:
        serve(ctx, sink, receiver)
    except sqlite3.DatabaseError as exc:
        if not is_damaged(exc):
            raise
        raise RestartStageError(damaged_outbox(alerts.outbox_path, exc)) from exc
    receiver.close()
    settle(workers, 0.75 * ctx.config.runtime.stop_timeout_s)
    store.close()


def settle(workers: list[DeliveryWorker], most_s: float) -> None:
    """At a stop (``stop_event`` set): give the deliveries in flight up to ``most_s`` in all to end
    and be recorded, so that the next start does not send them again."""
    deadline = time.monotonic() + most_s
    for worker in workers:
        worker.wake.set()  # an idle worker sees the stop at once
    for worker in workers:
        worker.join(timeout=max(0.0, deadline - time.monotonic()))
        if worker.is_alive():
            logger.warning(
                "%s: a delivery still in flight at the stop; it may be sent again at the next start", worker.label
            )


def damaged_outbox(path: str, damage: object) -> str:
    return f"alerts.outbox_path: {path} is damaged ({damage}); its next start sets it aside and goes on in a fresh one"


def serve(ctx: StageContext, sink: Sink, receiver: AckingReceiver) -> None:
    """Store and acknowledge what fuse sends until told to stop."""
    while not ctx.should_stop():
        ctx.beat()
        received = receiver.recv(timeout_ms=100)
        if received is not None:
            peer, message = received
            if isinstance(message, AlertEvent):
                if sink.on_alert(message):  # stored and committed before the acknowledgement
                    receiver.reply(peer, Ack((message.payload["id"],)))
            elif isinstance(message, EndOfStream):
                sink.on_end(message)
                receiver.reply(peer, Ack((eos_id(message.camera),)))
            else:
                logger.warning("alert ignores %s messages", message.kind)
        sink.check_closing()
        sink.count()
        sink.prune()
        for worker in sink.workers:
            if worker.damage is not None:
                raise RestartStageError(damaged_outbox(ctx.config.alerts.outbox_path, worker.damage))
            if worker.error is not None:
                raise RuntimeError(f"{worker.label}: delivery worker stopped: {worker.error}")
