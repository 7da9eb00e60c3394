from __future__ import annotations

import hashlib
import hmac
import json
import time

import pytest

from pipeline.config import WebhookConfig
from stages.webhook import DeliveryError, Request, parse_retry_after, post, sign, verify
from tests.support.rude_server import RudeServer

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


def test_retry_after_is_read_as_seconds_or_an_http_date() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("Sun, 29 Nov 2026 00:01:40 GMT", now=1_795_910_400.0) == 100.0
    assert parse_retry_after("soon") is None and parse_retry_after(None) is None


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (b"", "connection lost before an answer: Remote end closed connection without response"),
        (b"HTTP/1.1 abc nonsense\r\n\r\n", "connection lost before an answer:"),
    ],
)
def test_a_receiver_that_closes_or_answers_nonsense_is_a_retryable_delivery_error(reply, reason):
    server = RudeServer(reply)
    try:
        request = Request("a1", "d1", "alert.opened", 1, b"{}")
        with pytest.raises(DeliveryError) as caught:
            post(WebhookConfig(url=server.url, timeout_s=5), request, SECRET)
    finally:
        server.close()
    assert str(caught.value).startswith(reason)
    assert "no answer within" not in str(caught.value), "it answered at once: not a timeout"
