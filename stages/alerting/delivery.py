"""Delivery to one webhook: a thread per webhook (one slow or dead receiver never delays another)
working off the outbox. Per camera, alerts go in order; a failed attempt is retried with
exponential backoff and jitter (or when ``Retry-After`` says), until the alert is delivered or
``max_age_s`` has passed, when it moves to the dead letters.
"""

from __future__ import annotations

import base64
import json
import logging
import random
import threading
import time
from collections.abc import Callable

from pipeline.config import WebhookConfig
from stages.alerting.store import AlertStore, DueDelivery, WebhookTarget
from stages.webhook import DeliveryError, Request, post

logger = logging.getLogger(__name__)

IDLE_WAIT_S = 1.0


def with_snapshot(payload: dict[str, object], jpeg: bytes) -> dict[str, object]:
    """The webhook body: the payload plus the JPEG snapshot as base64."""
    snapshot = {"content_type": "image/jpeg", "bytes": len(jpeg), "data_base64": base64.b64encode(jpeg).decode()}
    return {**payload, "snapshot": snapshot}


def retry_delay(webhook: WebhookConfig, attempts: int, rng: random.Random) -> float:
    """Exponential backoff with jitter: uniform in [cap/2, cap], cap = backoff_s * 2^(attempts-1)."""
    cap = min(webhook.max_backoff_s, webhook.backoff_s * 2 ** min(attempts - 1, 32))
    return rng.uniform(cap / 2, cap)


class DeliveryWorker(threading.Thread):
    """Delivers the outbox's alerts to one webhook until ``stop`` is set; ``wake`` is set by the
    sink when a new alert is stored."""

    def __init__(
        self,
        webhook: WebhookConfig,
        store_path: str,
        stop: threading.Event,
        *,
        secret: str | None,
        observe: Callable[[str, float], None] | None = None,
    ) -> None:
        self.target = WebhookTarget.of(webhook)
        super().__init__(daemon=True, name=f"webhook-{self.target.shown_url}")
        self.webhook = webhook
        self.store_path = store_path
        self.secret = secret
        self.wake = threading.Event()
        self._stop = stop
        self._observe = observe
        self._rng = random.Random()
        self.delivered = 0
        self.failed_attempts = 0
        self.dead = 0

    def run(self) -> None:
        store = AlertStore(self.store_path)
        try:
            while not self._stop.is_set():
                due = store.due(self.target, time.time())
                for delivery in due:
                    if self._stop.is_set():
                        break
                    self._attempt(store, delivery)
                if not due:
                    self._wait(store)
        finally:
            store.close()

    def _wait(self, store: AlertStore) -> None:
        next_attempt = store.next_attempt(self.target)
        timeout = IDLE_WAIT_S if next_attempt is None else min(IDLE_WAIT_S, max(0.0, next_attempt - time.time()))
        self.wake.wait(timeout)
        self.wake.clear()

    def _attempt(self, store: AlertStore, delivery: DueDelivery) -> None:
        age = time.time() - delivery.since
        if age > self.webhook.max_age_s:
            reason = f"undelivered after {delivery.attempts} attempt(s) over {age:.0f} s"
            store.bury(delivery.alert_id, self.target, reason)
            self.dead += 1
            logger.error(
                "webhook %s: alert %s moved to the dead letters: %s (run.py alerts list --dead)",
                self.target.shown_url,
                delivery.alert_id,
                reason,
            )
            return
        attempt = delivery.attempts + 1
        body = json.dumps(with_snapshot(delivery.payload, delivery.snapshot)).encode()
        request = Request(delivery.alert_id, delivery.delivery_id, delivery.event, attempt, body)
        try:
            status = post(self.webhook, request, self.secret)
        except DeliveryError as exc:
            delay = exc.retry_after if exc.retry_after is not None else retry_delay(self.webhook, attempt, self._rng)
            store.failed(delivery.alert_id, self.target, str(exc), time.time() + delay)
            self.failed_attempts += 1
            logger.warning(
                "webhook %s: alert %s attempt %d failed: %s; retrying in %.1f s%s",
                self.target.shown_url,
                delivery.alert_id,
                attempt,
                exc,
                delay,
                " (Retry-After)" if exc.retry_after is not None else "",
            )
            return
        store.delivered(delivery.alert_id, self.target)
        self.delivered += 1
        captured = delivery.payload.get("capture_wall_time")
        if self._observe is not None and isinstance(captured, int | float):
            self._observe("capture_to_delivery", time.time() - captured)
        logger.debug("webhook %s: alert %s delivered (HTTP %d)", self.target.shown_url, delivery.alert_id, status)
