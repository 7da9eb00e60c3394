"""Delivery to one webhook or MQTT broker entry (a destination): a thread per destination (one slow
or dead receiver never delays another) working off the outbox. Per camera, alerts go in order, one at
a time; different cameras' alerts are sent side by side (up to the destination's ``concurrency``),
so a slow receiver or one camera's failing alert does not hold back the other cameras. A failed
attempt is retried with exponential backoff and jitter (or when ``Retry-After`` says), until the
alert is delivered or ``max_age_s`` has passed, when it moves to the dead letters.
"""

from __future__ import annotations

import logging
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Protocol

from pipeline.config import MqttConfig, WebhookConfig
from pipeline.logs import RateLimited
from stages.alerting.durable import StoreWriteError, open_when_possible
from stages.alerting.salvage import is_damaged
from stages.alerting.store import AlertStore, DueDelivery, WebhookTarget
from stages.webhook import DeliveryError, WebhookSender

logger = logging.getLogger(__name__)

IDLE_WAIT_S = 1.0
STORE_RETRY_S = 5.0  # after the outbox could not be written (disk full)


class Sender(Protocol):
    """Sends one alert to one destination (``stages.webhook.WebhookSender``,
    ``stages.alerting.mqtt.MqttSender``); ``send`` runs on the worker's pool threads."""

    @property
    def kind(self) -> str:
        """``webhook`` or ``mqtt``, for the logs."""
        ...

    @property
    def settings(self) -> WebhookConfig | MqttConfig: ...

    @property
    def target(self) -> WebhookTarget: ...

    def send(self, delivery: DueDelivery, attempt: int) -> str:
        """Deliver; returns what acknowledged it (``HTTP 200``), or raises DeliveryError."""
        ...

    def probe(self) -> str | None:
        """None when the destination accepts connections, else why not."""
        ...

    def close(self) -> None: ...


def sender_for(
    destination: WebhookConfig | MqttConfig, secret: str | None, cameras: Sequence[str] = (), *, check: bool = False
) -> Sender:
    """The sender of a webhook (``secret``: its signing key) or of an MQTT broker entry (``secret``:
    its password; ``cameras``: those it announces to Home Assistant, if asked); ``check``: only to
    probe it (``check --probe``), beside a running vigil."""
    if isinstance(destination, MqttConfig):
        from stages.alerting.mqtt import MqttSender  # paho only where a broker is configured

        return MqttSender(destination, secret, cameras, check=check)
    return WebhookSender(destination, secret)


@dataclass(frozen=True)
class Posted:
    """What one attempt came to: what acknowledged it, or the error to retry after; and when it ended."""

    answer: str | None
    error: DeliveryError | None
    ended: float


def retry_delay(webhook: WebhookConfig | MqttConfig, attempts: int, rng: random.Random) -> float:
    """Exponential backoff with jitter: uniform in [cap/2, cap], cap = backoff_s * 2^(attempts-1)."""
    cap = min(webhook.max_backoff_s, webhook.backoff_s * 2 ** min(attempts - 1, 32))
    return rng.uniform(cap / 2, cap)


class DeliveryWorker(threading.Thread):
    """Delivers the outbox's alerts to one webhook or MQTT broker entry until ``stop`` is set;
    ``wake`` is set by the sink when a new alert is stored. ``secret``: the webhook's signing key, or
    the broker's password."""

    def __init__(
        self,
        destination: WebhookConfig | MqttConfig,
        store_path: str,
        stop: threading.Event,
        *,
        secret: str | None,
        cameras: Sequence[str] = (),
        observe: Callable[[str, float], None] | None = None,
        store_retry_s: float = STORE_RETRY_S,
    ) -> None:
        self.sender = sender_for(destination, secret, cameras)
        self.target = self.sender.target
        self.label = f"{self.sender.kind} {self.target.shown_url}"  # for the logs: "webhook https://..."
        super().__init__(daemon=True, name=self.label)
        self.settings = destination
        self.store_path = store_path
        self.wake = threading.Event()
        self._stopping = stop  # not _stop: threading.Thread has a _stop method, which join() calls
        self._observe = observe
        self._rng = random.Random()
        self.delivered = 0
        self.failed_attempts = 0
        self.dead = 0
        self.error: str | None = None  # why the thread stopped before ``stop`` was set
        self.damage: str | None = None  # the outbox found damaged: the sink restarts to set it aside
        self._store_warned = RateLimited(60.0)
        self._store_retry_s = store_retry_s
        self._unrecorded: dict[str, None] = {}  # alert ids delivered whose delivery the store has not recorded
        self._in_flight: dict[str, tuple[DueDelivery, Future[Posted]]] = {}  # camera -> its alert being posted
        self._posting = ThreadPoolExecutor(destination.concurrency, thread_name_prefix=f"post-{self.target.key[:6]}")

    def run(self) -> None:
        try:
            store = open_when_possible(lambda: AlertStore(self.store_path), self.label, self._stopping.is_set)
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            logger.exception("%s: cannot open the outbox", self.label)
            return
        if store is None:
            return
        try:
            while not self._stopping.is_set():
                try:
                    self._deliver_due(store)
                except StoreWriteError as exc:
                    # Disk full: an attempt's outcome could not be recorded. A delivery made is kept in
                    # memory until it is (never posted twice); a failed attempt is simply made again.
                    if self._store_warned.due():
                        logger.error("%s: %s; retrying in %.0f s", self.label, exc, self._store_retry_s)
                    self._stopping.wait(self._store_retry_s)
            self._settle(store)
        except sqlite3.DatabaseError as exc:
            if is_damaged(exc):
                self.damage = str(exc)  # the sink sees it and restarts
            else:
                self.error = f"{type(exc).__name__}: {exc}"
                logger.exception("%s: delivery worker stopped", self.label)
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"  # the sink sees it and fails, to be restarted
            logger.exception("%s: delivery worker stopped", self.label)
        finally:
            self._posting.shutdown(wait=False, cancel_futures=True)
            self.sender.close()
            store.close()

    def _deliver_due(self, store: AlertStore) -> None:
        for alert_id in list(self._unrecorded):  # delivered, but not yet recorded: before anything new
            store.delivered(alert_id, self.target)
            del self._unrecorded[alert_id]
            self.delivered += 1
        finished = self._collect(store)
        due = [
            d
            for d in store.due(self.target, time.time())
            if d.alert_id not in self._unrecorded and d.camera not in self._in_flight
        ]
        progressed = finished
        for delivery in due:
            if self._stopping.is_set() or len(self._in_flight) >= self.settings.concurrency:
                break
            if not self._bury_if_too_old(store, delivery):
                self._start(delivery)
            progressed += 1
        if not progressed:
            self._wait(store)

    def _wait(self, store: AlertStore) -> None:
        """Until a post ends (its future sets ``wake``), the sink stores an alert, or the next retry
        of a camera with nothing in flight is due."""
        if len(self._in_flight) >= self.settings.concurrency:
            timeout = IDLE_WAIT_S
        else:
            next_attempt = store.next_attempt(self.target, excluding=self._in_flight.keys())
            timeout = IDLE_WAIT_S if next_attempt is None else min(IDLE_WAIT_S, max(0.0, next_attempt - time.time()))
        self.wake.wait(timeout)
        self.wake.clear()

    def _bury_if_too_old(self, store: AlertStore, delivery: DueDelivery) -> bool:
        age = time.time() - delivery.since
        if age <= self.settings.max_age_s:
            return False
        reason = f"undelivered after {delivery.attempts} attempt(s) over {age:.0f} s"
        store.bury(delivery.alert_id, self.target, reason)
        self.dead += 1
        logger.error(
            "%s: alert %s moved to the dead letters: %s (run.py alerts list --dead)",
            self.label,
            delivery.alert_id,
            reason,
        )
        return True

    def _start(self, delivery: DueDelivery) -> None:
        """Send the delivery on the pool; ``_collect`` records how it went."""
        future = self._posting.submit(self._send, delivery)
        future.add_done_callback(lambda _: self.wake.set())
        self._in_flight[delivery.camera] = (delivery, future)

    def _send(self, delivery: DueDelivery) -> Posted:
        try:
            answer = self.sender.send(delivery, delivery.attempts + 1)
        except DeliveryError as exc:
            return Posted(None, exc, time.time())
        return Posted(answer, None, time.time())

    def _collect(self, store: AlertStore) -> int:
        """Record the posts that have ended; returns how many. (One that cannot be recorded for now
        raises StoreWriteError; those after it stay in flight, recorded on the next round.)"""
        ended = 0
        for camera, (delivery, future) in list(self._in_flight.items()):
            if future.done():
                del self._in_flight[camera]
                self._record(store, delivery, future.result())
                ended += 1
        return ended

    def _settle(self, store: AlertStore) -> None:
        """At a stop: wait for the posts in flight (each ends within timeout_s) and record them, so
        none is posted again at the next start."""
        for _, future in list(self._in_flight.values()):
            future.exception(timeout=self.settings.timeout_s + 5.0)
        self._collect(store)

    def _record(self, store: AlertStore, delivery: DueDelivery, posted: Posted) -> None:
        attempt = delivery.attempts + 1
        if posted.error is not None:
            exc = posted.error
            delay = exc.retry_after if exc.retry_after is not None else retry_delay(self.settings, attempt, self._rng)
            store.failed(delivery.alert_id, self.target, str(exc), time.time() + delay)
            self.failed_attempts += 1
            logger.warning(
                "%s: alert %s attempt %d failed: %s; retrying in %.1f s%s",
                self.label,
                delivery.alert_id,
                attempt,
                exc,
                delay,
                " (Retry-After)" if exc.retry_after is not None else "",
            )
            return
        self._unrecorded[delivery.alert_id] = None
        store.delivered(delivery.alert_id, self.target)  # StoreWriteError: recorded on the next round
        self._unrecorded.pop(delivery.alert_id)
        self.delivered += 1  # counted once recorded
        captured = delivery.payload.get("capture_wall_time")
        if self._observe is not None and isinstance(captured, int | float):
            self._observe("capture_to_delivery", posted.ended - captured)
        logger.debug("%s: alert %s delivered (%s)", self.label, delivery.alert_id, posted.answer)
