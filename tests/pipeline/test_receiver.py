from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest

from pipeline.receiver import WebhookReceiver
from stages.webhook import ALERT_ID_HEADER, SIGNATURE_HEADER, sign


def post(url: str, body: bytes, headers: dict[str, str]) -> int:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def signed(body: bytes, alert_id: str, secret: str = "s") -> dict[str, str]:
    return {SIGNATURE_HEADER: sign(secret, body, int(time.time())), ALERT_ID_HEADER: alert_id}


@pytest.fixture
def receiver():
    with WebhookReceiver("s") as server:
        yield server


def test_keeps_signed_deliveries_and_drops_repeats_of_an_alert_id(receiver):
    body = json.dumps({"id": "a"}).encode()
    assert post(receiver.url, body, signed(body, "a")) == 204
    assert post(receiver.url, body, signed(body, "a")) == 204
    assert [d.alert_id for d in receiver.deliveries] == ["a"]
    assert receiver.deliveries[0].signature_valid


def test_refuses_a_bad_signature(receiver):
    body = json.dumps({"id": "b"}).encode()
    assert post(receiver.url, body, signed(body, "b", secret="wrong")) == 401
    assert receiver.deliveries[0].signature_valid is False


def test_can_be_told_to_fail(receiver):
    body = json.dumps({"id": "c"}).encode()
    receiver.fail_next(2)
    assert [post(receiver.url, body, signed(body, "c")) for _ in range(3)] == [500, 500, 204]
