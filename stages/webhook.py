"""Webhook delivery: HMAC-SHA256 signing and one worker thread per webhook (so a slow or dead
receiver never delays another), with retries and exponential backoff with jitter.

Signature header: ``X-Vigil-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>``.
Also sent: ``X-Vigil-Alert-Id`` (stable per alert event: receivers drop repeats by it) and
``X-Vigil-Event``.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import queue
import random
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from dataclasses import dataclass

from pipeline.config import WebhookConfig, redact

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Vigil-Signature"
ALERT_ID_HEADER = "X-Vigil-Alert-Id"
EVENT_HEADER = "X-Vigil-Event"
MAX_BACKOFF_S = 60.0


def sign(secret: str, body: bytes, timestamp: int) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify(secret: str, body: bytes, header: str, *, tolerance_s: float = 300.0, now: float | None = None) -> bool:
    """True when ``header`` is a valid signature of ``body`` made within ``tolerance_s``."""
    try:
        fields = dict(part.split("=", 1) for part in header.split(","))
        timestamp = int(fields["t"])
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance_s:
        return False
    expected = sign(secret, body, timestamp).split("v1=", 1)[1]
    return hmac.compare_digest(expected, fields.get("v1", ""))


@dataclass(frozen=True)
class Delivery:
    alert_id: str
    event: str
    camera: str
    body: bytes


class DeliveryError(Exception):
    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def post(webhook: WebhookConfig, delivery: Delivery) -> int:
    """One POST; returns the HTTP status or raises DeliveryError with a one-line reason."""
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "vigil/0.1",
        ALERT_ID_HEADER: delivery.alert_id,
        EVENT_HEADER: delivery.event,
    }
    if webhook.secret:
        headers[SIGNATURE_HEADER] = sign(webhook.secret, delivery.body, int(time.time()))
    request = urllib.request.Request(webhook.url, data=delivery.body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=webhook.timeout_s) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        retry_after = exc.headers.get("Retry-After") if exc.headers else None
        seconds = float(retry_after) if retry_after and retry_after.isdigit() else None
        raise DeliveryError(f"HTTP {exc.code} {exc.reason}", retry_after=seconds) from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        text = getattr(reason, "strerror", None) or str(reason)
        raise DeliveryError(f"unreachable: {text}") from None
    except (TimeoutError, OSError) as exc:
        raise DeliveryError(f"no answer: {exc.__class__.__name__} {exc}") from None


def probe_webhook(webhook: WebhookConfig, timeout_s: float = 2.0) -> str | None:
    """None when the webhook's host accepts TCP connections, else why not (checked at start)."""
    parsed = urllib.parse.urlsplit(webhook.url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname or "", port), timeout=timeout_s):
            return None
    except OSError as exc:
        reason = exc.strerror or exc.__class__.__name__
        return f"unreachable at start ({reason})"


class WebhookWorker(threading.Thread):
    """Delivers in order to one webhook; ``outstanding`` counts undelivered alerts per camera."""

    def __init__(self, webhook: WebhookConfig, stop: threading.Event) -> None:
        super().__init__(daemon=True, name=f"webhook-{redact(webhook.url)}")
        self.webhook = webhook
        self.url = redact(webhook.url)
        self._stop_event = stop
        self._queue: queue.Queue[Delivery] = queue.Queue()
        self._lock = threading.Lock()
        self.outstanding: Counter[str] = Counter()
        self.delivered = 0
        self.failed = 0

    def submit(self, delivery: Delivery) -> None:
        with self._lock:
            self.outstanding[delivery.camera] += 1
        self._queue.put(delivery)

    def pending_for(self, camera: str) -> int:
        with self._lock:
            return self.outstanding[camera]

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                delivery = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            self._deliver(delivery)
            with self._lock:
                self.outstanding[delivery.camera] -= 1

    def _deliver(self, delivery: Delivery) -> None:
        attempts = self.webhook.max_attempts
        for attempt in range(1, attempts + 1):
            try:
                status = post(self.webhook, delivery)
            except DeliveryError as exc:
                if attempt == attempts:
                    self.failed += 1
                    logger.error(
                        "webhook %s: gave up on alert %s after %d attempts: %s",
                        self.url,
                        delivery.alert_id,
                        attempts,
                        exc,
                    )
                    return
                backoff = self.webhook.backoff_s * 2 ** (attempt - 1)
                delay = exc.retry_after if exc.retry_after is not None else random.uniform(backoff / 2, backoff)
                delay = min(delay, MAX_BACKOFF_S)
                logger.warning(
                    "webhook %s: %s (attempt %d/%d); retrying in %.1f s",
                    self.url,
                    exc,
                    attempt,
                    attempts,
                    delay,
                )
                if self._stop_event.wait(delay):
                    return
                continue
            self.delivered += 1
            logger.debug("webhook %s: alert %s delivered (HTTP %d)", self.url, delivery.alert_id, status)
            return
