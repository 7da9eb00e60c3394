"""Delivery from the outbox to real HTTP receivers (real SQLite, real threads): retries, Retry-After,
timeouts, dead letters, signatures, a dead webhook that never delays a live one, and a full disk
that delays the record of a delivery but never repeats it."""

from __future__ import annotations

import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme

from pipeline.config import WebhookConfig
from pipeline.receiver import WebhookReceiver
from stages.alerting.delivery import DeliveryWorker
from stages.alerting.store import AlertStore, WebhookTarget
from tests.conftest import SECRET
from tests.support.harness import wait_until
from tests.support.ports import free_port
from tests.support.rude_server import RudeServer
from tests.support.small_disk import small_disk

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def stop() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()


def queue_alerts(path: Path, webhooks: list[WebhookConfig], count: int, camera: str = "door") -> list[str]:
    store = AlertStore(path)
    ids = [f"{camera}-{n}" for n in range(count)]
    for alert_id in ids:
        payload = {"id": alert_id, "camera": camera, "event": "alert.opened", "n": len(alert_id)}
        store.add(payload, b"\xff\xd8jpeg", [WebhookTarget.of(w) for w in webhooks])
    store.close()
    return ids


def start_worker(webhook: WebhookConfig, path: Path, stop: threading.Event, **kw: Any) -> DeliveryWorker:
    worker = DeliveryWorker(webhook, str(path), stop, secret=kw.get("secret", SECRET))
    worker.start()
    return worker


def test_a_failing_receiver_gets_every_alert_once_and_in_order_after_retries(tmp_path: Path, stop) -> None:
    path = tmp_path / "outbox.sqlite"
    with WebhookReceiver(SECRET) as receiver:
        receiver.fail_next(3, status=500)
        webhook = WebhookConfig(url=receiver.url, backoff_s=0.05)
        ids = queue_alerts(path, [webhook], 5)
        worker = start_worker(webhook, path, stop)
        assert receiver.wait_for(5, timeout=20)
        got, requests = receiver.deliveries, receiver.requests
    assert [d.alert_id for d in got] == ids
    assert all(d.signature_valid for d in got)
    assert [r.status for r in requests[:4]] == [500, 500, 500, 204]
    assert [r.attempt for r in requests[:4]] == [1, 2, 3, 4], "X-Vigil-Attempt counts the tries"
    assert len({r.delivery_id for r in requests[:4]}) == 1, "one delivery id across every attempt"
    assert wait_until(lambda: worker.delivered == 5, timeout=5), "counted once the outbox is updated"
    assert worker.failed_attempts == 3
    [row] = AlertStore(path).alerts(camera="door", limit=1)
    assert row.deliveries[0].state == "delivered"


def test_retry_after_is_honoured(tmp_path: Path, stop) -> None:
    path = tmp_path / "outbox.sqlite"
    with WebhookReceiver(SECRET) as receiver:
        receiver.fail_next(1, status=503, retry_after="2")
        webhook = WebhookConfig(url=receiver.url, backoff_s=0.01)
        queue_alerts(path, [webhook], 1)
        start_worker(webhook, path, stop)
        assert receiver.wait_for(1, timeout=20)
        first, second = receiver.requests[:2]
    assert first.status == 503 and second.status == 204
    assert second.arrived - first.arrived >= 1.9, "waited as told, not the 10 ms backoff"


def test_a_429_without_retry_after_backs_off_and_delivers(tmp_path: Path, stop) -> None:
    path = tmp_path / "outbox.sqlite"
    with WebhookReceiver(SECRET) as receiver:
        receiver.fail_next(2, status=429)
        webhook = WebhookConfig(url=receiver.url, backoff_s=0.05)
        queue_alerts(path, [webhook], 1)
        start_worker(webhook, path, stop)
        assert receiver.wait_for(1, timeout=20)
        assert [r.status for r in receiver.requests] == [429, 429, 204]


def test_a_hanging_receiver_times_out_and_the_alert_is_retried(tmp_path: Path, stop) -> None:
    path = tmp_path / "outbox.sqlite"
    with WebhookReceiver(SECRET) as receiver:
        receiver.hang_next(1, seconds=15)
        webhook = WebhookConfig(url=receiver.url, timeout_s=0.5, backoff_s=0.05)
        queue_alerts(path, [webhook], 1)
        start_worker(webhook, path, stop)
        assert receiver.wait_for(1, timeout=20)
        requests = receiver.requests
    assert [r.status for r in requests] == ["hung", 204]
    assert requests[1].arrived - requests[0].arrived < 10, "retried after its 0.5 s timeout, not after the 15 s hang"
    store = AlertStore(path)
    assert wait_until(lambda: store.alerts()[0].deliveries[0].state == "delivered", timeout=5)


def test_a_dead_webhook_does_not_delay_a_live_one(tmp_path: Path, stop) -> None:
    path = tmp_path / "outbox.sqlite"
    dead = WebhookConfig(url=f"http://127.0.0.1:{free_port()}/hook", backoff_s=0.2)
    with WebhookReceiver(SECRET) as receiver:
        live = WebhookConfig(url=receiver.url)
        queue_alerts(path, [dead, live], 10)
        started = time.time()
        start_worker(dead, path, stop)
        start_worker(live, path, stop)
        assert receiver.wait_for(10, timeout=20)
        latest = max(d.arrived for d in receiver.deliveries) - started
    store = AlertStore(path)
    assert store.pending(webhooks=[WebhookTarget.of(dead)]) == 10
    assert latest < 3, f"the live webhook got all 10 alerts {latest:.1f} s after start"
    row = store.alert("door-0")
    assert row is not None
    dead_row = next(d for d in row.deliveries if d.webhook_url == dead.url)
    assert dead_row.state == "pending" and "refused" in (dead_row.last_error or "")


def test_a_slow_receiver_gets_several_cameras_alerts_at_once_and_each_cameras_in_order(tmp_path: Path, stop) -> None:
    path = tmp_path / "outbox.sqlite"
    with WebhookReceiver(SECRET) as receiver:
        receiver.slow_down(0.5)
        webhook = WebhookConfig(url=receiver.url, concurrency=3)
        cameras = ["door", "gate", "yard", "dock", "roof"]
        queued = {camera: queue_alerts(path, [webhook], 3, camera=camera) for camera in cameras}
        start_worker(webhook, path, stop)
        assert receiver.wait_for(15, timeout=30)
        got = receiver.deliveries
        most = receiver.most_in_flight
    assert most == 3, "three cameras' alerts in flight at once, never more than concurrency"
    for camera, ids in queued.items():
        assert [d.alert_id for d in got if d.payload["camera"] == camera] == ids, "each camera's in order"
    assert len({d.delivery_id for d in got}) == 15


def test_one_cameras_hanging_alert_does_not_hold_back_another_cameras(tmp_path: Path, stop) -> None:
    path = tmp_path / "outbox.sqlite"
    with WebhookReceiver(SECRET) as receiver:
        receiver.hang_next(1, seconds=30)  # the first request (door-0) hangs past its timeout
        webhook = WebhookConfig(url=receiver.url, timeout_s=20, backoff_s=0.05)
        queue_alerts(path, [webhook], 1, camera="door")
        worker = start_worker(webhook, path, stop)
        assert wait_until(lambda: len(receiver.requests) == 1, timeout=10)  # door-0, hanging
        gate = queue_alerts(path, [webhook], 4, camera="gate")
        worker.wake.set()  # as the sink does when it stores an alert
        assert receiver.wait_for(4, timeout=15), "gate's alerts arrive while door's first is still hanging"
        got = [d.alert_id for d in receiver.deliveries]
    assert got == gate


def test_with_concurrency_one_alerts_go_one_at_a_time(tmp_path: Path, stop) -> None:
    path = tmp_path / "outbox.sqlite"
    with WebhookReceiver(SECRET) as receiver:
        receiver.slow_down(0.2)
        webhook = WebhookConfig(url=receiver.url, concurrency=1)
        for camera in ("door", "gate", "yard"):
            queue_alerts(path, [webhook], 2, camera=camera)
        start_worker(webhook, path, stop)
        assert receiver.wait_for(6, timeout=20)
        most = receiver.most_in_flight
    assert most == 1


def test_a_worker_whose_webhook_is_down_sleeps_until_the_next_retry(tmp_path: Path, stop) -> None:
    path = tmp_path / "outbox.sqlite"
    dead = WebhookConfig(url=f"http://127.0.0.1:{free_port()}/hook", backoff_s=30)
    queue_alerts(path, [dead], 5)  # one camera: the other four wait behind the first
    worker = start_worker(dead, path, stop)
    assert wait_until(lambda: worker.failed_attempts == 1, timeout=10)
    assert worker.ident is not None
    clock = time.pthread_getcpuclockid(worker.ident)
    cpu_before = time.clock_gettime(clock)
    time.sleep(2.0)
    cpu_s = time.clock_gettime(clock) - cpu_before
    # waiting for the retry in 30 s costs nothing; it spun on a core before (1.6-2.0 s of the 2 s)
    assert cpu_s < 0.2, f"the worker used {cpu_s:.2f} s of CPU in 2 s while waiting for its webhook"
    assert worker.failed_attempts == 1, "no retry before its backoff"


def test_an_alert_too_old_to_deliver_becomes_a_dead_letter_and_can_be_redelivered(tmp_path: Path, stop) -> None:
    path = tmp_path / "outbox.sqlite"
    port = free_port()
    webhook = WebhookConfig(url=f"http://127.0.0.1:{port}/hook", backoff_s=0.05, max_backoff_s=0.1, max_age_s=0.5)
    queue_alerts(path, [webhook], 2)
    worker = start_worker(webhook, path, stop)
    store = AlertStore(path)
    assert wait_until(lambda: len(store.dead_letters()) == 2, timeout=10)
    assert worker.dead == 2 and store.pending() == 0
    with WebhookReceiver(SECRET, port=port) as receiver:
        assert store.redeliver() == 2
        worker.wake.set()
        assert receiver.wait_for(2, timeout=10)
    assert store.dead_letters() == []


def test_a_delivery_the_full_disk_cannot_record_is_recorded_later_and_never_posted_twice(tmp_path: Path, stop) -> None:
    with small_disk(tmp_path / "disk") as disk, WebhookReceiver(SECRET) as receiver:
        path = disk.path / "outbox.sqlite"
        webhook = WebhookConfig(url=receiver.url)
        ids = queue_alerts(path, [webhook], 2)
        store = AlertStore(path)  # the sink's own connection, open before the disk fills
        disk.fill()
        worker = DeliveryWorker(webhook, str(path), stop, secret=SECRET, store_retry_s=0.2)
        worker.start()
        assert receiver.wait_for(1, timeout=10)
        time.sleep(1.0)  # five rounds of trying to record it
        assert [r.alert_id for r in receiver.requests] == ids[:1], "posted once; the next waits for the record"
        assert store.pending() == 2, "the store could not record the delivery yet"
        disk.free()
        assert receiver.wait_for(2, timeout=10)
        assert wait_until(lambda: store.pending() == 0, timeout=5)
        assert [r.alert_id for r in receiver.requests] == ids, "each posted once, in order"
        assert worker.error is None and worker.is_alive()
        store.close()


def test_an_https_webhook_gets_alerts_when_its_ca_file_is_given_and_names_the_problem_when_not(
    tmp_path: Path, stop
) -> None:
    """A real TLS receiver whose certificate a private authority signed (trustme makes both)."""
    authority = trustme.CA()
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(served)
    ca_file = tmp_path / "site-ca.pem"
    authority.cert_pem.write_to_path(str(ca_file))
    with WebhookReceiver(SECRET, tls=served) as trusting, WebhookReceiver(SECRET, tls=served) as untrusting:
        assert trusting.url.startswith("https://127.0.0.1:")
        trusted = WebhookConfig(url=trusting.url, ca_file=str(ca_file))
        system_only = WebhookConfig(url=untrusting.url, backoff_s=30)
        path = tmp_path / "outbox.sqlite"
        ids = queue_alerts(path, [trusted, system_only], 2)
        start_worker(trusted, path, stop)
        refused = start_worker(system_only, path, stop)
        assert trusting.wait_for(2, timeout=10)
        assert [d.alert_id for d in trusting.deliveries] == ids
        assert all(d.signature_valid for d in trusting.deliveries)
        assert wait_until(lambda: refused.failed_attempts >= 1, timeout=10)
        assert untrusting.requests == [], "nothing was sent to a receiver whose certificate is not trusted"
    row = AlertStore(path).alert(ids[0])
    assert row is not None
    error = next(d.last_error for d in row.deliveries if d.webhook_url == system_only.url)
    assert error == (
        "TLS certificate not trusted: unable to get local issuer certificate (trust its authority with ca_file)"
    )


def test_a_receiver_answering_nonsense_is_retried_and_the_worker_lives_on(tmp_path: Path, stop) -> None:
    """An HTTP status line that is not HTTP escaped as http.client.BadStatusLine and stopped the
    worker (the sink then crash-looped on the same alert)."""
    path = tmp_path / "outbox.sqlite"
    server = RudeServer(b"HTTP/1.1 abc nonsense\r\n\r\n")
    try:
        webhook = WebhookConfig(url=server.url, backoff_s=0.05, max_backoff_s=0.1)
        queue_alerts(path, [webhook], 1)
        worker = start_worker(webhook, path, stop)
        assert wait_until(lambda: worker.failed_attempts >= 3, timeout=10)
        assert worker.error is None and worker.is_alive()
    finally:
        server.close()
    [row] = AlertStore(path).alerts(limit=1)
    assert "connection lost before an answer" in (row.deliveries[0].last_error or "")
