"""A small webhook receiver (standard library only) for the demo and the tests.

It checks the signature of every delivery, keeps what arrived, drops repeats of an alert id
(as a receiver honouring the idempotency key should), and can be told to fail or stall.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from stages.webhook import ALERT_ID_HEADER, SIGNATURE_HEADER, verify

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Received:
    alert_id: str
    payload: dict[str, Any]
    body: bytes
    signature: str | None
    signature_valid: bool
    arrived: float


@dataclass
class ReceiverState:
    secret: str | None
    deliveries: list[Received] = field(default_factory=list)
    seen_ids: set[str] = field(default_factory=set)
    fail_next: int = 0  # answer 500 to this many requests
    on_alert: Callable[[Received], None] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        logger.debug("receiver: %s", format % args)

    def do_POST(self) -> None:
        state = self.server.state
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        with state.lock:
            if state.fail_next > 0:
                state.fail_next -= 1
                self.send_response(500)
                self.end_headers()
                return
        signature = self.headers.get(SIGNATURE_HEADER)
        valid = bool(state.secret and signature and verify(state.secret, body, signature))
        try:
            payload = json.loads(body)
        except ValueError:
            self.send_response(400)
            self.end_headers()
            return
        alert_id = self.headers.get(ALERT_ID_HEADER) or str(payload.get("id"))
        received = Received(alert_id, payload, body, signature, valid, time.time())
        with state.lock:
            duplicate = alert_id in state.seen_ids
            state.seen_ids.add(alert_id)
            if not duplicate:
                state.deliveries.append(received)
        if not duplicate and state.on_alert is not None:
            state.on_alert(received)
        self.send_response(401 if (state.secret and not valid) else 204)
        self.end_headers()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], state: ReceiverState) -> None:
        super().__init__(address, _Handler)
        self.state = state


class WebhookReceiver:
    """``with WebhookReceiver(secret) as r: ... r.url ... r.deliveries``"""

    def __init__(
        self,
        secret: str | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        on_alert: Callable[[Received], None] | None = None,
    ) -> None:
        self.state = ReceiverState(secret=secret, on_alert=on_alert)
        self._server = _Server((host, port), self.state)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True, name="webhook-receiver")

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/alerts"

    @property
    def deliveries(self) -> list[Received]:
        with self.state.lock:
            return list(self.state.deliveries)

    def fail_next(self, count: int) -> None:
        with self.state.lock:
            self.state.fail_next = count

    def __enter__(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)
