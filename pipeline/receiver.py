"""A small webhook receiver (standard library only) for the demo and the tests.

It checks the signature of every delivery, keeps what arrived, and drops repeats (as a receiver
honouring the idempotency key should): by the ``X-Vigil-Delivery-Id`` header when the sender sends
one, else by the alert id. Every POST, repeat or not, is also kept in :attr:`WebhookReceiver.requests`.

For tests it can be told to make real faults, all thread-safe and callable at any time:

* :meth:`WebhookReceiver.fail_next` answers an error status (500, 503, 429, ...), optionally with
  ``Retry-After``, to the next requests;
* :meth:`WebhookReceiver.hang_next` holds the next requests before answering, so the client times out;
* :meth:`WebhookReceiver.go_down` / :meth:`WebhookReceiver.come_up` close and reopen the listening
  socket on the same port, so connections are refused in between (``ECONNREFUSED``).
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final, Literal

from stages.webhook import ALERT_ID_HEADER, ATTEMPT_HEADER, DELIVERY_ID_HEADER, SIGNATURE_HEADER, verify

logger = logging.getLogger(__name__)

HUNG: Final = "hung"
"""The :attr:`RequestRecord.status` of a request held by :meth:`WebhookReceiver.hang_next`."""

_POLL_INTERVAL_S: Final = 0.05  # how quickly serve_forever notices a shutdown (go_down, exit)


@dataclass(frozen=True)
class Received:
    """One alert as first received (repeats are not kept here)."""

    alert_id: str
    payload: dict[str, Any]
    body: bytes
    signature: str | None
    signature_valid: bool
    arrived: float
    delivery_id: str | None = None
    attempt: int | None = None


@dataclass(frozen=True)
class RequestRecord:
    """One POST as received, whatever was answered to it.

    ``status`` is the HTTP status answered, or :data:`HUNG` for a request held by
    :meth:`WebhookReceiver.hang_next` (the client is expected to time out and retry).
    ``alert_id`` is None when neither the header nor a JSON body gave one; ``attempt`` is None
    when the ``X-Vigil-Attempt`` header is missing or not an integer. ``duplicate`` is True for
    a repeat that was answered but not kept in ``deliveries``.
    """

    arrived: float
    alert_id: str | None
    delivery_id: str | None
    attempt: int | None
    status: int | Literal["hung"]
    duplicate: bool


@dataclass
class ReceiverState:
    """What the receiver keeps and the faults it is told to make; guard every access with ``lock``."""

    secret: str | None
    deliveries: list[Received] = field(default_factory=list)
    requests: list[RequestRecord] = field(default_factory=list)
    seen_ids: set[str] = field(default_factory=set)  # alert ids of everything kept in deliveries
    seen_delivery_ids: set[str] = field(default_factory=set)
    fail_next: int = 0  # answer fail_status to this many requests
    fail_status: int = 500
    fail_retry_after: str | None = None
    hang_next: int = 0  # hold this many requests hang_seconds, then answer without delivering
    hang_seconds: float = 0.0
    slow_s: float = 0.0  # every request takes this long, then is answered (and delivered) as usual
    in_flight: int = 0  # requests being handled now
    most_in_flight: int = 0  # the most handled at once so far
    on_alert: Callable[[Received], None] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)
    changed: threading.Condition = field(init=False, repr=False)  # notified when deliveries grows

    def __post_init__(self) -> None:
        self.changed = threading.Condition(self.lock)


def _parse_attempt(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        logger.debug("receiver: %s", format % args)

    def _answer(self, status: int, headers: dict[str, str] | None = None) -> None:
        self._leave()  # before the answer: the client may send its next request the moment it has it
        try:
            self.send_response(status)
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
        except OSError:  # the client gave up (timed out) before the answer
            self.close_connection = True

    def do_POST(self) -> None:
        state = self.server.state
        with state.lock:
            state.in_flight += 1
            state.most_in_flight = max(state.most_in_flight, state.in_flight)
        self._counted = True
        try:
            self._handle_post(state)
        finally:
            self._leave()

    def _leave(self) -> None:
        """This request no longer counts as in flight (once)."""
        if getattr(self, "_counted", False):
            self._counted = False
            with self.server.state.lock:
                self.server.state.in_flight -= 1

    def _handle_post(self, state: ReceiverState) -> None:
        arrived = time.time()
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        delivery_id = self.headers.get(DELIVERY_ID_HEADER) or None  # an empty header counts as absent
        attempt = _parse_attempt(self.headers.get(ATTEMPT_HEADER))
        try:
            payload: Any = json.loads(body)
        except ValueError:
            payload = None
        alert_id = self.headers.get(ALERT_ID_HEADER) or (str(payload.get("id")) if isinstance(payload, dict) else None)

        def record(status: int | Literal["hung"], duplicate: bool = False) -> None:
            # call with state.lock held
            state.requests.append(RequestRecord(arrived, alert_id, delivery_id, attempt, status, duplicate))

        if self._made_fault(state, record):
            return
        if state.slow_s > 0 and self.server.closing.wait(state.slow_s):  # a slow receiver, going down
            self.close_connection = True
            return
        if not isinstance(payload, dict) or alert_id is None:
            with state.lock:
                record(400)
            self._answer(400)
            return
        signature = self.headers.get(SIGNATURE_HEADER)
        valid = bool(state.secret and signature and verify(state.secret, body, signature))
        status = 401 if (state.secret and not valid) else 204
        received = Received(alert_id, payload, body, signature, valid, arrived, delivery_id, attempt)
        with state.lock:
            if delivery_id is not None:
                duplicate = delivery_id in state.seen_delivery_ids
                state.seen_delivery_ids.add(delivery_id)
            else:
                duplicate = alert_id in state.seen_ids
            state.seen_ids.add(alert_id)
            record(status, duplicate)
            if not duplicate:
                state.deliveries.append(received)
                state.changed.notify_all()
        if not duplicate and state.on_alert is not None:
            state.on_alert(received)
        self._answer(status)

    def _made_fault(self, state: ReceiverState, record: Callable[[int | Literal["hung"]], None]) -> bool:
        """Answer with the failure, or hang, the receiver was told to make next; False when none is due."""
        with state.lock:
            if state.fail_next > 0:
                state.fail_next -= 1
                record(state.fail_status)
                fail: tuple[int, str | None] | None = (state.fail_status, state.fail_retry_after)
                hang_s: float | None = None
            elif state.hang_next > 0:
                state.hang_next -= 1
                record(HUNG)
                fail, hang_s = None, state.hang_seconds
            else:
                return False
        if fail is not None:
            status, retry_after = fail
            self._answer(status, {"Retry-After": retry_after} if retry_after is not None else None)
        elif self.server.closing.wait(hang_s or 0.0):  # going down: drop the connection unanswered
            self.close_connection = True
        else:
            self._answer(204)
        return True


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True  # SO_REUSEADDR (already so in HTTPServer): come_up can rebind the port at once

    def __init__(self, address: tuple[str, int], state: ReceiverState, tls: ssl.SSLContext | None = None) -> None:
        super().__init__(address, _Handler)
        if tls is not None:  # HTTPS: each connection's handshake happens in its own handler thread
            self.socket = tls.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)
        self.state = state
        self.closing = threading.Event()  # set when this server goes down: releases hung requests

    def handle_error(self, request: object, client_address: object) -> None:
        # A client that gave up (or refused our certificate): not the receiver's problem to print.
        logger.debug("receiver: connection from %s ended with an error", client_address, exc_info=True)


class WebhookReceiver:
    """``with WebhookReceiver(secret) as r: ... r.url ... r.deliveries``

    The listening socket is bound on construction (``port=0`` picks a free port then); entering
    the context starts serving, leaving it stops serving and closes the socket. The port, and so
    :attr:`url`, stays the same across :meth:`go_down` / :meth:`come_up`.

    To start "down" (connections refused until :meth:`come_up`), pass ``start_down=True``: the
    port is still picked and reserved-by-binding on construction, then the socket is closed.
    """

    def __init__(
        self,
        secret: str | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        on_alert: Callable[[Received], None] | None = None,
        start_down: bool = False,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.state = ReceiverState(secret=secret, on_alert=on_alert)
        self._tls = tls  # a server-side context with the certificate loaded: serve HTTPS
        self._lifecycle = threading.Lock()  # serialises go_down / come_up / enter / exit
        self._entered = False
        self._server: _Server | None = _Server((host, port), self.state, tls)
        bound_host, bound_port = self._server.server_address[:2]
        self._address: tuple[str, int] = (str(bound_host), int(bound_port))
        self._thread: threading.Thread | None = None
        if start_down:
            self.go_down()

    @property
    def url(self) -> str:
        """``http://host:port/alerts`` (``https://`` with TLS); the same whether the receiver is up or down."""
        host, port = self._address
        return f"{'https' if self._tls else 'http'}://{host}:{port}/alerts"

    @property
    def is_up(self) -> bool:
        """True while the listening socket is open (between construction or come_up and go_down or exit)."""
        with self._lifecycle:
            return self._server is not None

    @property
    def deliveries(self) -> list[Received]:
        """First arrivals only (repeats dropped), in arrival order; a copy."""
        with self.state.lock:
            return list(self.state.deliveries)

    @property
    def requests(self) -> list[RequestRecord]:
        """Every POST received (failed, hung, repeated or delivered), in arrival order; a copy."""
        with self.state.lock:
            return list(self.state.requests)

    @property
    def most_in_flight(self) -> int:
        """The most requests this receiver was handling at one time."""
        with self.state.lock:
            return self.state.most_in_flight

    @property
    def duplicates(self) -> int:
        """How many requests were repeats, answered but not kept in :attr:`deliveries`."""
        with self.state.lock:
            return sum(record.duplicate for record in self.state.requests)

    def fail_next(self, count: int, status: int = 500, retry_after: str | None = None) -> None:
        """Answer ``status`` (with ``Retry-After: retry_after`` when given) to the next ``count`` requests.

        Replaces any failures still pending. Failed requests are recorded in :attr:`requests` but
        not delivered nor remembered as seen. Pending failures are used before pending hangs.
        """
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        if not 400 <= status <= 599:
            raise ValueError(f"status must be an HTTP error (400-599), got {status}")
        with self.state.lock:
            self.state.fail_next = count
            self.state.fail_status = status
            self.state.fail_retry_after = retry_after

    def hang_next(self, count: int, seconds: float) -> None:
        """Hold each of the next ``count`` requests ``seconds`` before answering 204.

        Meant to outlast the client's timeout: a hung request is recorded in :attr:`requests` with
        status :data:`HUNG` but is not delivered nor remembered as seen, so the client's retry is
        delivered. :meth:`go_down` (or leaving the context) ends the hold early and drops the
        connection unanswered. Replaces any hangs still pending.
        """
        if count < 0:
            raise ValueError(f"count must be >= 0, got {count}")
        if seconds < 0:
            raise ValueError(f"seconds must be >= 0, got {seconds}")
        with self.state.lock:
            self.state.hang_next = count
            self.state.hang_seconds = seconds

    def slow_down(self, seconds: float) -> None:
        """Take ``seconds`` over every request from now on, then answer as usual (0 for full speed):
        a receiver that is slow but works, so deliveries are in flight for a while."""
        with self.state.lock:
            self.state.slow_s = seconds

    def wait_for(self, count: int, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds until at least ``count`` deliveries; True if they arrived."""
        with self.state.changed:
            return self.state.changed.wait_for(lambda: len(self.state.deliveries) >= count, timeout)

    def go_down(self) -> None:
        """Stop serving and close the listening socket: new connections are refused. No-op when down.

        Requests being handled finish (hung ones are dropped unanswered); what was received is kept.
        """
        with self._lifecycle:
            self._close()

    def come_up(self) -> None:
        """Listen again on the same host and port (and serve, if inside the context). No-op when up.

        Raises OSError if something else took the port meanwhile.
        """
        with self._lifecycle:
            if self._server is None:
                self._server = _Server(self._address, self.state, self._tls)
                if self._entered:
                    self._start()

    def _close(self) -> None:
        # call with self._lifecycle held
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.closing.set()
        if thread is not None:
            server.shutdown()  # returns within _POLL_INTERVAL_S
            thread.join(5)
        server.server_close()

    def _start(self) -> None:
        # call with self._lifecycle held and self._server set
        assert self._server is not None
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": _POLL_INTERVAL_S},
            daemon=True,
            name="webhook-receiver",
        )
        self._thread.start()

    def __enter__(self) -> WebhookReceiver:
        """Start serving (unless down: then serving starts at :meth:`come_up`)."""
        with self._lifecycle:
            self._entered = True
            if self._server is not None and self._thread is None:
                self._start()
        return self

    def __exit__(self, *exc: object) -> None:
        """Stop serving and close the socket (as :meth:`go_down`)."""
        with self._lifecycle:
            self._entered = False
            self._close()
