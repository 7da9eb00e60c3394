from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request

import pytest

from pipeline.receiver import ATTEMPT_HEADER, DELIVERY_ID_HEADER, HUNG, WebhookReceiver, _Server
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


def with_ids(body: bytes, alert_id: str, delivery_id: str, attempt: int | None = None) -> dict[str, str]:
    headers = {**signed(body, alert_id), DELIVERY_ID_HEADER: delivery_id}
    if attempt is not None:
        headers[ATTEMPT_HEADER] = str(attempt)
    return headers


def test_drops_repeats_of_a_delivery_id_but_keeps_each_delivery_of_an_alert(receiver):
    body = json.dumps({"id": "d"}).encode()
    assert post(receiver.url, body, with_ids(body, "d", "d-1", attempt=1)) == 204
    assert post(receiver.url, body, with_ids(body, "d", "d-1", attempt=2)) == 204
    assert post(receiver.url, body, with_ids(body, "d", "d-2")) == 204
    assert [(d.alert_id, d.delivery_id) for d in receiver.deliveries] == [("d", "d-1"), ("d", "d-2")]
    assert receiver.duplicates == 1
    assert [r.duplicate for r in receiver.requests] == [False, True, False]


def test_fails_with_the_status_and_retry_after_it_is_told(receiver):
    body = json.dumps({"id": "e"}).encode()
    receiver.fail_next(1, status=503, retry_after="7")
    request = urllib.request.Request(receiver.url, data=body, headers=signed(body, "e"), method="POST")
    with pytest.raises(urllib.error.HTTPError) as failed:
        urllib.request.urlopen(request, timeout=5)
    assert failed.value.code == 503
    assert failed.value.headers["Retry-After"] == "7"
    failed.value.close()
    assert receiver.deliveries == []
    assert post(receiver.url, body, signed(body, "e")) == 204
    assert [d.alert_id for d in receiver.deliveries] == ["e"]


def test_fails_without_retry_after_unless_told(receiver):
    body = json.dumps({"id": "f"}).encode()
    receiver.fail_next(1, status=429)
    request = urllib.request.Request(receiver.url, data=body, headers=signed(body, "f"), method="POST")
    with pytest.raises(urllib.error.HTTPError) as failed:
        urllib.request.urlopen(request, timeout=5)
    assert failed.value.code == 429
    assert "Retry-After" not in failed.value.headers
    failed.value.close()


def test_refuses_to_fail_with_a_success_status(receiver):
    with pytest.raises(ValueError):
        receiver.fail_next(1, status=204)


def test_a_hung_request_times_the_client_out_and_the_retry_is_delivered(receiver):
    body = json.dumps({"id": "g"}).encode()
    receiver.hang_next(1, seconds=1.5)
    request = urllib.request.Request(receiver.url, data=body, headers=with_ids(body, "g", "g-1", 1), method="POST")
    started = time.monotonic()
    with pytest.raises((TimeoutError, urllib.error.URLError)) as timed_out:
        urllib.request.urlopen(request, timeout=0.5)
    assert time.monotonic() - started < 1.0
    if isinstance(timed_out.value, urllib.error.URLError):
        assert isinstance(timed_out.value.reason, TimeoutError)
    assert receiver.deliveries == []
    assert post(receiver.url, body, with_ids(body, "g", "g-1", 2)) == 204
    assert [d.attempt for d in receiver.deliveries] == [2]
    assert [(r.status, r.attempt, r.duplicate) for r in receiver.requests] == [(HUNG, 1, False), (204, 2, False)]


def test_going_down_refuses_connections_and_coming_up_serves_again_at_the_same_url(receiver):
    body = json.dumps({"id": "h"}).encode()
    url = receiver.url
    receiver.go_down()
    assert not receiver.is_up
    assert receiver.url == url
    with pytest.raises(urllib.error.URLError) as refused:
        post(url, body, signed(body, "h"))
    assert isinstance(refused.value.reason, ConnectionRefusedError)
    receiver.come_up()
    assert receiver.is_up
    assert receiver.url == url
    assert post(url, body, signed(body, "h")) == 204
    assert [d.alert_id for d in receiver.deliveries] == ["h"]


def test_going_down_and_up_twice_keeps_what_was_received(receiver):
    body = json.dumps({"id": "i"}).encode()
    assert post(receiver.url, body, signed(body, "i")) == 204
    for _ in range(2):
        receiver.go_down()
        receiver.go_down()  # a no-op when down
        receiver.come_up()
        receiver.come_up()  # a no-op when up
    assert post(receiver.url, body, signed(body, "i")) == 204
    assert [d.alert_id for d in receiver.deliveries] == ["i"]
    assert receiver.duplicates == 1


def test_can_start_down_and_come_up_on_the_port_it_picked():
    with WebhookReceiver("s", start_down=True) as receiver:
        body = json.dumps({"id": "j"}).encode()
        assert not receiver.is_up
        with pytest.raises(urllib.error.URLError) as refused:
            post(receiver.url, body, signed(body, "j"))
        assert isinstance(refused.value.reason, ConnectionRefusedError)
        receiver.come_up()
        assert post(receiver.url, body, signed(body, "j")) == 204
    assert not receiver.is_up


def test_records_every_request_with_what_was_answered(receiver):
    body = json.dumps({"id": "k"}).encode()
    receiver.fail_next(1, status=500)
    before = time.time()
    assert post(receiver.url, body, with_ids(body, "k", "k-1", 1)) == 500
    assert post(receiver.url, body, with_ids(body, "k", "k-1", 2)) == 204
    assert post(receiver.url, body, with_ids(body, "k", "k-1", 3)) == 204
    assert post(receiver.url, body, signed(body, "k", secret="wrong")) == 401
    assert post(receiver.url, b"not json", {}) == 400
    records = receiver.requests
    assert [(r.alert_id, r.delivery_id, r.attempt, r.status, r.duplicate) for r in records] == [
        ("k", "k-1", 1, 500, False),
        ("k", "k-1", 2, 204, False),
        ("k", "k-1", 3, 204, True),
        ("k", None, None, 401, True),
        (None, None, None, 400, False),
    ]
    assert all(before <= r.arrived <= time.time() for r in records)
    assert len(receiver.deliveries) == 1
    assert receiver.duplicates == 2


def test_wait_for_returns_once_enough_deliveries_arrived(receiver):
    assert receiver.wait_for(0, timeout=0.1)
    assert not receiver.wait_for(1, timeout=0.1)
    body = json.dumps({"id": "l"}).encode()
    timer = threading.Timer(0.1, post, (receiver.url, body, signed(body, "l")))
    timer.start()
    assert receiver.wait_for(1, timeout=2)
    timer.join(2)
    assert [d.alert_id for d in receiver.deliveries] == ["l"]


def test_the_server_reuses_the_address_so_it_can_rebind_at_once():
    # SO_REUSEADDR: come_up can rebind the port while closed connections linger in TIME_WAIT
    assert _Server.allow_reuse_address
