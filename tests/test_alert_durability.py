"""Alerts are never lost (real processes, real SQLite, a real HTTP receiver, the demo clip): not when
the receiver is down for 30 s, not when the alert sink is SIGKILLed mid-delivery, not when fuse is
SIGKILLed right after it emitted an alert, not when the sink's disk is full."""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from pipeline.config import VigilConfig
from pipeline.receiver import WebhookReceiver
from pipeline.supervisor import RunSummary, Supervisor
from stages.alerting.pending import PendingAlerts
from stages.alerting.store import AlertStore
from tests.conftest import SECRET, make_config, webhook
from tests.support.ports import free_port
from tests.support.small_disk import small_disk

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def durable_config(tmp_path: Path, url: str, outbox: Path | None = None, **hook: Any) -> VigilConfig:
    settings = {"backoff_s": 0.2, "max_backoff_s": 2.0, **hook}
    alerts = {"webhooks": [webhook(url, **settings)], "end_of_stream_wait_s": 90, "resend_s": 1.0}
    return make_config(tmp_path, alerts=alerts if outbox is None else {**alerts, "outbox_path": str(outbox)})


def stored_ids(config: VigilConfig) -> list[str]:
    store = AlertStore(config.alerts.outbox_path)
    return [row.id for row in store.alerts(limit=1000)]


def pid_of(supervisor: Supervisor, stage: str) -> int | None:
    for s in supervisor.stages:
        if s.spec.name == stage and s.process is not None and s.process.is_alive():
            return s.process.pid
    return None


def assert_each_alert_delivered_once(config: VigilConfig, receiver: WebhookReceiver, summary: RunSummary) -> None:
    ids = stored_ids(config)
    delivered = [d.alert_id for d in receiver.deliveries]
    assert summary.exit_code == 0, summary.failed
    assert len(ids) >= 3, "the demo clip raises several alerts"
    assert sorted(delivered) == sorted(ids), "every stored alert reached the receiver, none twice"
    assert len({d.delivery_id for d in receiver.deliveries}) == len(ids)
    assert all(d.signature_valid for d in receiver.deliveries)
    assert AlertStore(config.alerts.outbox_path).pending() == 0


def test_every_alert_arrives_once_after_the_receiver_was_down_for_30_s(tmp_path: Path) -> None:
    with WebhookReceiver(SECRET, start_down=True) as receiver:
        config = durable_config(tmp_path, receiver.url)
        started = time.time()

        def back_after_30_s(supervisor: Supervisor) -> None:
            if not receiver.is_up and time.time() - started >= 30:
                receiver.come_up()

        summary = Supervisor(config, on_tick=back_after_30_s, tick_s=0.2).run()
        first = min(d.arrived for d in receiver.deliveries)
        assert_each_alert_delivered_once(config, receiver, summary)
    assert first - started >= 30, "nothing could arrive while the receiver was down"


def test_sigkill_of_the_alert_sink_mid_delivery_loses_nothing(tmp_path: Path) -> None:
    killed: list[int] = []
    with WebhookReceiver(SECRET) as receiver:
        receiver.slow_down(1.0)  # every delivery is in flight for a second
        config = durable_config(tmp_path, receiver.url, timeout_s=5)

        def kill_the_sink_after_two(supervisor: Supervisor) -> None:
            if not killed and len(receiver.deliveries) >= 2 and (pid := pid_of(supervisor, "alert")):
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)

        supervisor = Supervisor(config, on_tick=kill_the_sink_after_two, tick_s=0.05)
        summary = supervisor.run()
        assert killed, "the sink was killed while alerts were still to deliver"
        assert len(stored_ids(config)) > 2
        assert_each_alert_delivered_once(config, receiver, summary)
    assert [s.restarts for s in supervisor.stages if s.spec.name == "alert"] == [1]


def test_sigkill_of_fuse_right_after_it_emits_an_alert_loses_nothing(tmp_path: Path) -> None:
    """The sink is paused (SIGSTOP) so it cannot acknowledge; fuse is SIGKILLed as soon as its first
    alert is written to its pending store; then the sink resumes and fuse is restarted."""
    state: dict[str, Any] = {}
    with WebhookReceiver(SECRET) as receiver:
        config = durable_config(tmp_path, receiver.url)
        pending = Path(config.alerts.pending_path)

        def scenario(supervisor: Supervisor) -> None:
            sink = pid_of(supervisor, "alert")
            if "paused" not in state and sink and supervisor.counters.get("alert"):
                os.kill(sink, signal.SIGSTOP)
                state["paused"] = sink
            if "paused" in state and "killed" not in state and emitted(pending):
                fuse = pid_of(supervisor, "fuse")
                if fuse:
                    os.kill(fuse, signal.SIGKILL)
                    state["killed"] = emitted(pending)
                    os.kill(state["paused"], signal.SIGCONT)

        supervisor = Supervisor(config, on_tick=scenario, tick_s=0.02)
        summary = supervisor.run()
        delivered = {d.alert_id for d in receiver.deliveries}
    assert [s.restarts for s in supervisor.stages if s.spec.name == "fuse"] == [1]
    assert state.get("killed"), "fuse was killed with an alert not yet acknowledged"
    assert set(state["killed"]) <= delivered, "the alert fuse emitted just before it died was delivered"
    assert_each_alert_delivered_once(config, receiver, summary)
    by_incident: dict[str, list[dict[str, Any]]] = {}
    for d in receiver.deliveries:
        by_incident.setdefault(d.payload["incident_id"], []).append(d.payload)
    killed_in = by_incident[
        next(d.payload["incident_id"] for d in receiver.deliveries if d.alert_id in state["killed"])
    ]
    assert [p["event"] for p in killed_in][-1] == "alert.closed", "the incident the killed fuse had open was closed"
    assert killed_in[-1]["closed_by"] == "restart" and "started again without it" in killed_in[-1]["reasons"][0]
    assert all(p["event"] == "alert.closed" for p in (alerts[-1] for alerts in by_incident.values())), "none left open"


def emitted(pending: Path) -> list[str]:
    """Alert ids fuse has written to its pending store (read with plain sqlite3, as a test should)."""
    if not pending.exists():
        return []
    try:
        with sqlite3.connect(f"file:{pending}?mode=ro", uri=True, timeout=1) as db:
            return [row[0] for row in db.execute("SELECT id FROM pending ORDER BY seq")]
    except sqlite3.OperationalError:
        return []


def test_a_dead_webhook_never_delays_the_live_one(tmp_path: Path) -> None:
    dead_url = f"http://127.0.0.1:{free_port()}/hook"
    with WebhookReceiver(SECRET) as receiver:
        config = make_config(
            tmp_path,
            alerts={
                "webhooks": [webhook(dead_url, backoff_s=0.2), webhook(receiver.url)],
                "end_of_stream_wait_s": 5,
            },
        )
        summary = Supervisor(config).run()
        arrived = {d.alert_id: d.arrived for d in receiver.deliveries}
    store = AlertStore(config.alerts.outbox_path)
    rows = store.alerts(limit=1000)
    assert summary.exit_code == 0, summary.failed
    assert sorted(arrived) == sorted(row.id for row in rows), "the live receiver got every alert"
    lags = [arrived[row.id] - row.stored_at for row in rows]
    assert max(lags) < 3.0, f"each alert reached the live receiver within {max(lags):.2f} s of being stored"
    dead = [d for row in rows for d in row.deliveries if d.webhook_url == dead_url]
    assert dead and all(d.state == "pending" for d in dead), "kept for the dead one, to deliver when it is back"


def test_alerts_a_full_disk_refuses_are_kept_by_fuse_and_delivered_once_there_is_room(tmp_path: Path) -> None:
    """The sink's outbox is on a real tmpfs filled to the last byte before the run: the sink refuses
    each alert (it cannot store it, so it does not acknowledge it) and goes on running; fuse keeps
    them and sends them again; 20 s in, the room is given back and every alert arrives, once."""
    with small_disk(tmp_path / "disk", size="8m") as disk, WebhookReceiver(SECRET) as receiver:
        config = durable_config(tmp_path, receiver.url, outbox=disk.path / "alerts.sqlite")
        # Made, and held open, while there was room: SQLite's shared-memory file stays, so the sink
        # can open the outbox on the full disk (one it cannot open, it waits for; tests/stages/alerting).
        holder = AlertStore(config.alerts.outbox_path)
        disk.fill()
        started = time.time()

        def room_after_20_s(supervisor: Supervisor) -> None:
            if time.time() - started >= 20 and (disk.path / ".filler").exists():
                disk.free()

        supervisor = Supervisor(config, on_tick=room_after_20_s, tick_s=0.2)
        summary = supervisor.run()
        first = min(d.arrived for d in receiver.deliveries)
        assert_each_alert_delivered_once(config, receiver, summary)
        holder.close()
    assert summary.counters["alert"].get("store_failures", 0) >= 1, "the sink was refused by the disk"
    assert [s.restarts for s in supervisor.stages] == [0] * len(supervisor.stages), "no stage crashed over it"
    assert first - started >= 20, "nothing was stored (so nothing delivered) before there was room"


def test_an_incident_open_when_vigil_stops_is_closed_and_the_close_delivered(tmp_path: Path) -> None:
    """Stopped (as by Ctrl-C) mid-clip with an incident open: fuse closes it on its way out, durably,
    and the sink delivers the close, on this run or, if it stopped first, on the next."""
    with WebhookReceiver(SECRET) as receiver:
        config = durable_config(tmp_path, receiver.url)
        config = config.model_copy(update={"runtime": config.runtime.model_copy(update={"mode": "realtime"})})

        def stop_once_opened(supervisor: Supervisor) -> None:
            if any(d.payload["event"] == "alert.opened" for d in receiver.deliveries):
                supervisor.request_stop()

        Supervisor(config, on_tick=stop_once_opened).run()
        opened = next(d.payload for d in receiver.deliveries if d.payload["event"] == "alert.opened")
        pending = PendingAlerts(config.alerts.pending_path)
        closes = [a for a in pending.unacked() if a.payload["event"] == "alert.closed"]
        pending.close()
        if not any(d.payload["event"] == "alert.closed" for d in receiver.deliveries):
            assert closes, "the close the sink did not take is kept in fuse's pending file"

            def stop_once_closed(supervisor: Supervisor) -> None:
                if any(d.payload["event"] == "alert.closed" for d in receiver.deliveries):
                    supervisor.request_stop()

            Supervisor(config, only=["fuse", "alert"], on_tick=stop_once_closed).run()
    (closed,) = [d.payload for d in receiver.deliveries if d.payload["event"] == "alert.closed"]
    assert closed["incident_id"] == opened["incident_id"] and closed["closed_by"] == "stop"
    assert closed["reasons"][0] == "vigil stopped while the incident was open"
    pending = PendingAlerts(config.alerts.pending_path)
    assert pending.open_incidents() == [], "nothing left for a restart to close"
    pending.close()
