"""The outbox (real SQLite): an alert is stored once, delivered per camera in order, survives a
reopen, moves to the dead letters and back, is refused whole by a full disk, and is pruned once
every webhook has it and it is old enough."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from pipeline.config import WebhookConfig
from stages.alerting.durable import StoreWriteError
from stages.alerting.store import AlertStore, WebhookTarget
from tests.support.small_disk import small_disk

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
    assert url == f"http://127.0.0.1:9/a?token=*** #{HOOK.key[:6]}", "a token in the webhook URL is not shown"
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


def test_an_alert_the_full_disk_refuses_is_not_stored_and_is_once_there_is_room(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk") as disk:
        store = AlertStore(disk.path / "outbox.sqlite")
        store.add(payload("a1"), b"jpeg", [HOOK])
        disk.fill()
        snapshot = os.urandom(300_000)
        with pytest.raises(StoreWriteError, match="database or disk is full"):
            store.add(payload("a2"), snapshot, [HOOK])
        assert [row.id for row in store.alerts()] == ["a1"] and store.pending() == 1, "nothing of a2 was kept"
        assert [d.alert_id for d in store.due(HOOK, time.time())] == ["a1"], "what is stored is still delivered"
        disk.free()
        assert store.add(payload("a2"), snapshot, [HOOK]), "stored when fuse sends it again"
        assert store.snapshot("a2") == snapshot
        store.close()


def test_pruning_deletes_only_alerts_every_webhook_received_before_the_cutoff(tmp_path: Path) -> None:
    store = AlertStore(tmp_path / "outbox.sqlite")
    store.add(payload("delivered-old"), b"jpeg", [HOOK, OTHER])
    store.add(payload("half-delivered-old"), b"jpeg", [HOOK, OTHER])
    store.add(payload("dead-old"), b"jpeg", [HOOK])
    store.add(payload("no-webhook-old"), b"jpeg", [])
    for alert_id in ("delivered-old", "half-delivered-old"):
        store.delivered(alert_id, HOOK)
    store.delivered("delivered-old", OTHER)
    store.bury("dead-old", HOOK, "undelivered after 9 attempts")
    cutoff = time.time() + 0.001
    time.sleep(0.01)
    store.add(payload("delivered-new"), b"jpeg", [HOOK])
    store.delivered("delivered-new", HOOK)

    assert store.prune(cutoff) == 2
    kept = sorted(row.id for row in store.alerts())
    assert kept == ["dead-old", "delivered-new", "half-delivered-old"]
    assert store.pending() == 1 and len(store.dead_letters()) == 1, "deliveries of kept alerts untouched"
    assert store.snapshot("delivered-old") is None
    assert store.prune(cutoff) == 0


def test_pruning_goes_a_batch_at_a_time(tmp_path: Path) -> None:
    store = AlertStore(tmp_path / "outbox.sqlite")
    for n in range(7):
        store.add(payload(f"a{n}"), b"jpeg", [])
    cutoff = time.time() + 1
    assert [store.prune(cutoff, batch=3) for _ in range(4)] == [3, 3, 1, 0]
    assert store.alerts() == []


def test_pruning_gives_the_snapshots_room_back_to_the_disk(tmp_path: Path) -> None:
    """A burst of 300 alerts with 50 KB snapshots, delivered, then past the retention: the file
    shrinks to a fraction (it used to keep its size for ever, the pages only reused)."""
    path = tmp_path / "outbox.sqlite"
    store = AlertStore(path)
    for n in range(300):
        store.add(payload(f"a{n}"), os.urandom(50_000), [HOOK])
        store.delivered(f"a{n}", HOOK)
    store.add(payload("kept"), os.urandom(50_000), [HOOK])  # still pending: kept whatever its age
    full = path.stat().st_size + path.with_name(path.name + "-wal").stat().st_size
    assert full > 15_000_000
    while store.prune(time.time() + 1):
        pass
    assert path.stat().st_size < 1_000_000
    assert [row.id for row in store.alerts()] == ["kept"] and len(store.snapshot("kept") or b"") == 50_000
    store.close()
    reopened = AlertStore(path)
    assert [row.id for row in reopened.alerts()] == ["kept"]
    reopened.close()


def test_two_webhooks_that_differ_only_in_their_token_are_shown_apart_without_it() -> None:
    first = WebhookTarget.of(WebhookConfig(url="https://hooks.example.org/v1?token=abc123"))
    second = WebhookTarget.of(WebhookConfig(url="https://hooks.example.org/v1?token=def456"))
    assert first.shown_url != second.shown_url, "one metrics label, one line of alerts list each"
    for target in (first, second):
        assert target.shown_url.startswith("https://hooks.example.org/v1?token=*** #")
        assert "abc123" not in target.shown_url and "def456" not in target.shown_url
    plain = WebhookTarget.of(WebhookConfig(url="https://hooks.example.org/v2"))
    assert plain.shown_url == "https://hooks.example.org/v2", "nothing hidden, nothing added"
