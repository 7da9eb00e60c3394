"""The outbox (real SQLite): an alert is stored once, delivered per camera in order, survives a
reopen, and moves to the dead letters and back."""

from __future__ import annotations

import time
from pathlib import Path

from pipeline.config import WebhookConfig
from stages.alerting.store import AlertStore, WebhookTarget

HOOK = WebhookTarget.of(WebhookConfig(url="http://127.0.0.1:9/a?token=abc"))
OTHER = WebhookTarget.of(WebhookConfig(url="http://127.0.0.1:9/b"))


def payload(alert_id: str, camera: str = "door") -> dict[str, object]:
    return {"id": alert_id, "incident_id": "i-" + alert_id, "camera": camera, "event": "alert.opened"}


def test_an_alert_is_stored_once_however_often_it_is_sent(tmp_path: Path) -> None:
    store = AlertStore(tmp_path / "outbox.sqlite")
    assert store.add(payload("a1"), b"jpeg", [HOOK, OTHER])
    assert not store.add(payload("a1"), b"jpeg", [HOOK, OTHER])
    assert len(store.alerts()) == 1
    assert store.pending() == 2 and store.pending(webhooks=[HOOK]) == 1


def test_undelivered_alerts_survive_closing_and_reopening(tmp_path: Path) -> None:
    store = AlertStore(tmp_path / "outbox.sqlite")
    store.add(payload("a1"), b"jpeg-bytes", [HOOK])
    store.close()
    reopened = AlertStore(tmp_path / "outbox.sqlite")
    [due] = reopened.due(HOOK, time.time())
    assert due.alert_id == "a1" and due.snapshot == b"jpeg-bytes" and due.payload["camera"] == "door"


def test_per_camera_order_holds_and_a_stuck_camera_does_not_hold_back_another(tmp_path: Path) -> None:
    store = AlertStore(tmp_path / "outbox.sqlite")
    for alert_id, camera in (("a1", "door"), ("b1", "gate"), ("a2", "door"), ("b2", "gate")):
        store.add(payload(alert_id, camera), b"j", [HOOK])
    assert [d.alert_id for d in store.due(HOOK, time.time())] == ["a1", "b1"]
    store.failed("a1", HOOK, "HTTP 500", next_attempt=time.time() + 60)  # door's head is waiting
    store.delivered("b1", HOOK)
    assert [d.alert_id for d in store.due(HOOK, time.time())] == ["b2"], "a2 waits behind a1; gate goes on"
    assert store.next_attempt(HOOK) is not None


def test_the_next_attempt_is_the_waiting_head_of_each_camera_not_an_alert_queued_behind_it(tmp_path: Path) -> None:
    store = AlertStore(tmp_path / "outbox.sqlite")
    for alert_id, camera in (("a1", "door"), ("a2", "door"), ("a3", "door"), ("b1", "gate")):
        store.add(payload(alert_id, camera), b"j", [HOOK])
    retry_at = time.time() + 60
    store.failed("a1", HOOK, "connection refused", next_attempt=retry_at)
    store.failed("b1", HOOK, "connection refused", next_attempt=retry_at + 30)
    assert store.due(HOOK, time.time()) == []
    # a2 and a3 were queued with a next attempt of "now", but only a1 can go first: the worker
    # sleeps until a1's retry, not until a2's time (already past: it woke again at once, forever)
    assert store.next_attempt(HOOK) == retry_at
    store.delivered("a1", HOOK)
    next_attempt = store.next_attempt(HOOK)
    assert next_attempt is not None and next_attempt <= time.time()
    assert [d.alert_id for d in store.due(HOOK, time.time())] == ["a2"]


def test_dead_letters_can_be_redelivered(tmp_path: Path) -> None:
    store = AlertStore(tmp_path / "outbox.sqlite")
    store.add(payload("a1"), b"j", [HOOK])
    store.failed("a1", HOOK, "unreachable", next_attempt=time.time())
    store.bury("a1", HOOK, "undelivered after 1 attempt(s) over 90000 s")
    assert store.pending() == 0
    [(alert_id, camera, url, attempts, _, reason)] = store.dead_letters()
    assert (alert_id, camera, attempts) == ("a1", "door", 1) and "90000 s" in reason
    assert url == "http://127.0.0.1:9/a?token=***", "a token in the webhook URL is not shown"
    [row] = store.alerts()
    assert [(d.state, d.last_error) for d in row.deliveries] == [("dead", reason)]
    assert store.redeliver() == 1
    assert store.dead_letters() == [] and store.pending() == 1
    [due] = store.due(HOOK, time.time())
    assert due.attempts == 0


def test_redelivering_one_alert_sends_it_again_even_when_it_was_delivered(tmp_path: Path) -> None:
    store = AlertStore(tmp_path / "outbox.sqlite")
    store.add(payload("a1"), b"j", [HOOK])
    store.delivered("a1", HOOK)
    assert store.pending() == 0
    assert store.redeliver("a1") == 1 and store.pending() == 1


def test_an_alert_is_found_by_a_prefix_of_its_id(tmp_path: Path) -> None:
    store = AlertStore(tmp_path / "outbox.sqlite")
    store.add(payload("5f0c2a77-1111"), b"j", [HOOK])
    store.add(payload("5f0c9999-2222"), b"j", [HOOK])
    assert store.alert("5f0c2") is not None and store.alert("5f0c2").id == "5f0c2a77-1111"  # type: ignore[union-attr]
    assert store.alert("5f0c") is None, "ambiguous"
