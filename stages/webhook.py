"""One webhook POST, signed: HMAC-SHA256 signing and verification, ``Retry-After`` parsing.

Signature header: ``X-Vigil-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>." + body)>``.
Also sent: ``X-Vigil-Delivery-Id`` (stable per alert and webhook across every attempt and restart:
the idempotency key receivers drop repeats by), ``X-Vigil-Alert-Id``, ``X-Vigil-Attempt`` and
``X-Vigil-Event``.
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import http.client
import json
import logging
import socket
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from pipeline.config import ConfigError, WebhookConfig
from stages.alerting.store import DueDelivery, WebhookTarget

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Vigil-Signature"
ALERT_ID_HEADER = "X-Vigil-Alert-Id"
DELIVERY_ID_HEADER = "X-Vigil-Delivery-Id"
ATTEMPT_HEADER = "X-Vigil-Attempt"
EVENT_HEADER = "X-Vigil-Event"


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


class DeliveryError(Exception):
    """A delivery attempt that failed; ``retry_after`` when the receiver said when to come back."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header: delay-seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


@dataclass(frozen=True)
class Request:
    """One delivery attempt: the signed body and the headers that identify it."""

    alert_id: str
    delivery_id: str
    event: str
    attempt: int
    body: bytes


def trusting(ca_file: str | None) -> ssl.SSLContext:
    """TLS that trusts the system's authorities, or only ``ca_file``'s (webhooks and MQTT brokers).
    Raises ConfigError when ``ca_file`` cannot be read as PEM certificates."""
    try:
        return ssl.create_default_context(cafile=ca_file)
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or exc
        raise ConfigError([f"ca_file {ca_file}: cannot be read as PEM certificates ({reason})"]) from None


def tls_context(webhook: WebhookConfig) -> ssl.SSLContext | None:
    """The TLS settings for an https webhook (see ``trusting``); None for http."""
    return trusting(webhook.ca_file) if webhook.url.startswith("https://") else None


def post(webhook: WebhookConfig, request: Request, secret: str | None, tls: ssl.SSLContext | None = None) -> int:
    """One POST; returns the HTTP status or raises DeliveryError with a one-line reason. ``tls``:
    ``tls_context(webhook)``, made once per webhook (the system's defaults when None)."""
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "vigil/0.1",
        ALERT_ID_HEADER: request.alert_id,
        DELIVERY_ID_HEADER: request.delivery_id,
        ATTEMPT_HEADER: str(request.attempt),
        EVENT_HEADER: request.event,
    }
    if secret:
        headers[SIGNATURE_HEADER] = sign(secret, request.body, int(time.time()))
    http_request = urllib.request.Request(webhook.url, data=request.body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(http_request, timeout=webhook.timeout_s, context=tls) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        retry_after = parse_retry_after(exc.headers.get("Retry-After") if exc.headers else None)
        raise DeliveryError(f"HTTP {exc.code} {exc.reason}", retry_after=retry_after) from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, ssl.SSLCertVerificationError):
            hint = "trust its authority with ca_file" if webhook.ca_file is None else f"not signed by {webhook.ca_file}"
            raise DeliveryError(f"TLS certificate not trusted: {reason.verify_message} ({hint})") from None
        text = getattr(reason, "strerror", None) or str(reason)
        if isinstance(reason, TimeoutError | socket.timeout):
            text = f"no answer within {webhook.timeout_s:g} s"
        raise DeliveryError(f"unreachable: {text}") from None
    except TimeoutError as exc:
        raise DeliveryError(f"no answer within {webhook.timeout_s:g} s ({exc.__class__.__name__})") from None
    except (OSError, http.client.HTTPException) as exc:  # closed, reset: the receiver went away mid-request
        reason = getattr(exc, "strerror", None) or str(exc) or exc.__class__.__name__
        raise DeliveryError(f"connection lost before an answer: {reason} ({exc.__class__.__name__})") from None


def probe_webhook(webhook: WebhookConfig, timeout_s: float = 2.0) -> str | None:
    """None when the webhook's host accepts TCP connections, else why not (checked at start)."""
    parsed = urllib.parse.urlsplit(webhook.url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname or "", port), timeout=timeout_s):
            return None
    except OSError as exc:
        reason = exc.strerror or exc.__class__.__name__
        return f"unreachable ({reason})"


def with_snapshot(payload: dict[str, Any], jpeg: bytes) -> dict[str, Any]:
    """The webhook body: the payload plus the JPEG snapshot as base64."""
    snapshot = {"content_type": "image/jpeg", "bytes": len(jpeg), "data_base64": base64.b64encode(jpeg).decode()}
    return {**payload, "snapshot": snapshot}


class WebhookSender:
    """Posts alerts to one webhook (signed when it has a secret); called from the delivery
    worker's pool threads."""

    kind = "webhook"

    def __init__(self, settings: WebhookConfig, secret: str | None) -> None:
        self.settings = settings
        self.target = WebhookTarget.of(settings)
        self._secret = secret
        self._tls = tls_context(settings)  # once: loading the trusted authorities costs milliseconds

    def send(self, delivery: DueDelivery, attempt: int) -> str:
        body = json.dumps(with_snapshot(delivery.payload, delivery.snapshot)).encode()
        request = Request(delivery.alert_id, delivery.delivery_id, delivery.event, attempt, body)
        return f"HTTP {post(self.settings, request, self._secret, self._tls)}"

    def probe(self) -> str | None:
        return probe_webhook(self.settings)

    def close(self) -> None:
        """Nothing held between posts."""
