from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time

from pipeline.config import WebhookConfig
from pipeline.receiver import WebhookReceiver
from stages.webhook import Delivery, WebhookWorker, sign, verify
from tests.support.ports import free_port

SECRET = "s3cret"


def receiver_snippet_verify(secret: str, body: bytes, header: str) -> bool:
    """The verification snippet from the README, verbatim in spirit: HMAC of "<t>." + body."""
    fields = dict(part.split("=", 1) for part in header.split(","))
    expected = hmac.new(secret.encode(), fields["t"].encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, fields["v1"]) and abs(time.time() - int(fields["t"])) < 300


def test_signature_verifies_and_a_changed_body_does_not():
    body = json.dumps({"id": "a1", "score": 0.9}).encode()
    header = sign(SECRET, body, int(time.time()))
    assert verify(SECRET, body, header)
    assert receiver_snippet_verify(SECRET, body, header)
    tampered = body.replace(b"0.9", b"0.1")
    assert not verify(SECRET, tampered, header)
    assert not receiver_snippet_verify(SECRET, tampered, header)
    assert not verify("other-secret", body, header)


def test_old_signatures_are_refused():
    body = b"{}"
    header = sign(SECRET, body, int(time.time()) - 3600)
    assert not verify(SECRET, body, header)
    assert not verify(SECRET, body, "garbage")


def delivery(n: int, camera: str = "cam") -> Delivery:
    return Delivery(f"id-{n}", "alert.opened", camera, json.dumps({"id": f"id-{n}", "n": n}).encode())


def wait_until(condition, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return False


def test_worker_retries_a_failing_receiver_and_delivers_in_order():
    stop = threading.Event()
    with WebhookReceiver(SECRET) as receiver:
        receiver.fail_next(3)
        worker = WebhookWorker(WebhookConfig(url=receiver.url, secret=SECRET, backoff_s=0.05), stop)
        worker.start()
        for n in range(5):
            worker.submit(delivery(n))
        assert wait_until(lambda: worker.pending_for("cam") == 0)
        stop.set()
        got = receiver.deliveries
    assert [d.alert_id for d in got] == [f"id-{n}" for n in range(5)]
    assert all(d.signature_valid for d in got)
    assert worker.delivered == 5 and worker.failed == 0


def test_unreachable_webhook_is_logged_clearly_and_given_up(caplog):
    stop = threading.Event()
    url = f"http://127.0.0.1:{free_port()}/hook"
    worker = WebhookWorker(WebhookConfig(url=url, max_attempts=2, backoff_s=0.05), stop)
    worker.start()
    with caplog.at_level(logging.WARNING, logger="stages.webhook"):
        worker.submit(delivery(1))
        assert wait_until(lambda: worker.pending_for("cam") == 0)
    stop.set()
    assert worker.failed == 1
    messages = [r.getMessage() for r in caplog.records]
    assert any(url in m and "unreachable" in m and "Connection refused" in m for m in messages)
    assert any("gave up on alert id-1 after 2 attempts" in m for m in messages)


def test_a_dead_webhook_does_not_delay_a_live_one():
    stop = threading.Event()
    dead = WebhookWorker(WebhookConfig(url=f"http://127.0.0.1:{free_port()}/x", max_attempts=50, backoff_s=0.5), stop)
    with WebhookReceiver(SECRET) as receiver:
        live = WebhookWorker(WebhookConfig(url=receiver.url, secret=SECRET), stop)
        dead.start()
        live.start()
        began = time.monotonic()
        for n in range(10):
            dead.submit(delivery(n))
            live.submit(delivery(n))
        assert wait_until(lambda: live.pending_for("cam") == 0, timeout=5)
        elapsed = time.monotonic() - began
        stop.set()
        assert len(receiver.deliveries) == 10
    assert dead.pending_for("cam") > 0
    assert elapsed < 5
