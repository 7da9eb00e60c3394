"""Delivery from the outbox to a real MQTT broker (Debian's mosquitto on a loopback port, a real
paho subscriber, real SQLite): topics per camera and event, the snapshot as JPEG bytes before its
JSON, order per camera, a refused login and a broker that goes away, each retried until every alert
is delivered once."""

from __future__ import annotations

import json
import logging
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from prometheus_client.parser import text_string_to_metric_families

from pipeline.config import MqttConfig, WebhookConfig
from pipeline.metrics import render
from pipeline.preflight import probe_destinations
from pipeline.receiver import WebhookReceiver
from pipeline.supervisor import Supervisor
from stages.alerting.delivery import DeliveryWorker
from stages.alerting.mqtt import MqttSender
from stages.alerting.store import AlertStore, WebhookTarget
from tests.conftest import SECRET, SECRET_ENV, make_config
from tests.support.harness import wait_until
from tests.support.mqtt_broker import MOSQUITTO_PASSWD, MqttBroker, Subscriber

pytestmark = pytest.mark.timeout(60)
JPEG = b"\xff\xd8\xff\xe0 a snapshot \xff\xd9"


@pytest.fixture
def stop() -> Iterator[threading.Event]:
    event = threading.Event()
    yield event
    event.set()


def queue(path: Path, destinations: list[MqttConfig | WebhookConfig], alerts: list[tuple[str, str, str]]) -> None:
    """Store (id, camera, event) alerts for every destination, as the sink does."""
    store = AlertStore(path)
    for alert_id, camera, event in alerts:
        payload = {"id": alert_id, "camera": camera, "event": event, "capture_wall_time": 1.0}
        store.add(payload, JPEG, [WebhookTarget.of(d) for d in destinations])
    store.close()


def delivered_ids(path: Path, destination: MqttConfig) -> list[str]:
    store = AlertStore(path)
    target = WebhookTarget.of(destination)
    try:
        return [
            row.id
            for row in reversed(store.alerts())
            for d in row.deliveries
            if d.webhook_url == target.shown_url and d.state == "delivered"
        ]
    finally:
        store.close()


def test_alerts_are_published_per_camera_in_order_with_the_snapshot_first(tmp_path: Path, stop) -> None:
    outbox = tmp_path / "outbox.sqlite"
    with MqttBroker(tmp_path / "broker") as broker, Subscriber(broker) as subscriber:
        mqtt = MqttConfig(url=broker.url, topic="site/{camera}/{event}", snapshot_topic="site/{camera}/snapshot")
        alerts = [("a1", "door", "alert.opened"), ("b1", "yard", "alert.opened"), ("a2", "door", "alert.closed")]
        queue(outbox, [mqtt], alerts)
        worker = DeliveryWorker(mqtt, str(outbox), stop, secret=None)
        worker.start()
        assert subscriber.wait_for(6, topic_prefix="site/"), subscriber.messages
        wait_until(lambda: worker.delivered == 3, timeout=10)
    bodies = {m.topic: json.loads(m.payload) for m in subscriber.messages if not m.topic.endswith("/snapshot")}
    assert set(bodies) == {"site/door/alert.opened", "site/yard/alert.opened", "site/door/alert.closed"}
    assert bodies["site/yard/alert.opened"]["id"] == "b1"
    assert bodies["site/door/alert.closed"]["snapshot"] == {
        "content_type": "image/jpeg",
        "bytes": len(JPEG),
        "topic": "site/door/snapshot",
    }
    door = [m.topic for m in subscriber.messages if m.topic.startswith("site/door/")]
    assert door == ["site/door/snapshot", "site/door/alert.opened", "site/door/snapshot", "site/door/alert.closed"]
    assert all(m.payload == JPEG for m in subscriber.on("site/door/snapshot"))
    assert not any(m.retain for m in subscriber.messages)
    assert worker.failed_attempts == 0 and worker.error is None
    assert delivered_ids(outbox, mqtt) == ["a1", "b1", "a2"]


def test_each_cameras_incident_state_is_kept_for_subscribers_that_come_later(tmp_path: Path, stop) -> None:
    outbox = tmp_path / "outbox.sqlite"
    with MqttBroker(tmp_path / "broker") as broker:
        mqtt = MqttConfig(url=broker.url, topic="site/{camera}/alerts", state_topic="site/{camera}/incident")
        alerts = [("a1", "door", "alert.opened"), ("b1", "yard", "alert.opened"), ("a2", "door", "alert.closed")]
        queue(outbox, [mqtt], alerts)
        worker = DeliveryWorker(mqtt, str(outbox), stop, secret=None)
        worker.start()
        wait_until(lambda: worker.delivered == 3, timeout=10)
        with Subscriber(broker) as later:  # Home Assistant restarted: the broker hands it the retained state
            assert later.wait_for(2, timeout=10), later.messages
    assert {m.topic: (m.payload, m.retain) for m in later.messages} == {
        "site/door/incident": (b"closed", True),
        "site/yard/incident": (b"open", True),
    }, "only the retained states, the alerts themselves are not kept"


def test_home_assistant_is_told_of_each_camera_at_every_connection_retained(tmp_path: Path, stop, caplog) -> None:
    caplog.set_level(logging.INFO, logger="stages.alerting.mqtt")
    outbox = tmp_path / "outbox.sqlite"
    broker = MqttBroker(tmp_path / "broker").start()  # no persistence: a restart forgets what was retained
    try:
        mqtt = MqttConfig(
            url=broker.url,
            topic="site/{camera}/alerts",
            snapshot_topic="site/{camera}/snapshot",
            state_topic="site/{camera}/incident",
            home_assistant={"node_id": "north"},
            backoff_s=0.5,
            max_backoff_s=0.5,
        )
        worker = DeliveryWorker(mqtt, str(outbox), stop, secret=None, cameras=["door", "yard"])
        assert worker.sender.probe() is None, "the sink logs in at start: the cameras are announced before any alert"
        with Subscriber(broker) as home_assistant:  # Home Assistant (re)starting: it reads what is retained
            assert home_assistant.wait_for(6, timeout=10, topic_prefix="homeassistant/"), home_assistant.messages
            assert home_assistant.wait_for(1, timeout=10, topic_prefix="vigil/north/status")
        assert home_assistant.on("vigil/north/status")[0].payload == b"online"
        announced = [m for m in home_assistant.messages if m.topic.startswith("homeassistant/")]
        configs = {m.topic: json.loads(m.payload) for m in announced}
        assert all(m.retain for m in home_assistant.messages)
        assert sorted(configs) == [
            f"homeassistant/{component}/north/{camera}_{name}/config"
            for component, name in (("binary_sensor", "incident"), ("camera", "snapshot"), ("sensor", "alert_score"))
            for camera in ("door", "yard")
        ]
        incident = configs["homeassistant/binary_sensor/north/door_incident/config"]
        assert incident["state_topic"] == "site/door/incident"
        assert (incident["payload_on"], incident["payload_off"]) == ("open", "closed")
        assert incident["unique_id"] == "north_door_incident"
        assert incident["device"]["identifiers"] == ["north_door"]
        assert configs["homeassistant/camera/north/yard_snapshot/config"]["topic"] == "site/yard/snapshot"
        score = configs["homeassistant/sensor/north/door_alert_score/config"]
        assert score["state_topic"] == score["json_attributes_topic"] == "site/door/alerts"
        assert score["value_template"] == "{{ value_json.score }}"
        assert {c["device"]["name"] for c in configs.values()} == {"door", "yard"}
        # the broker restarts and has forgotten them: the connection made for the next alert announces again
        broker.kill()
        broker.start()
        worker.start()
        queue(outbox, [mqtt], [("a1", "door", "alert.opened")])
        worker.wake.set()
        wait_until(lambda: worker.delivered == 1, timeout=15)
        with Subscriber(broker) as home_assistant:  # 6 configs, vigil's status, door's state
            assert home_assistant.wait_for(8, timeout=10), home_assistant.messages
        assert sum(m.topic.startswith("homeassistant/") for m in home_assistant.messages) == 6
        assert home_assistant.on("site/door/incident")[0].payload == b"open"
    finally:
        broker.kill()
    assert "announced 6 entities to Home Assistant under homeassistant/" in caplog.text


KILLED_SINK = """
import sys, time
from pipeline.config import MqttConfig
from stages.alerting.mqtt import MqttSender
mqtt = MqttConfig(url=sys.argv[1], state_topic="site/{camera}/incident", home_assistant={})
sender = MqttSender(mqtt, None, ["door"])
assert sender.probe() is None
print("connected", flush=True)
time.sleep(60)
"""


def test_home_assistant_sees_vigil_online_then_offline_at_a_stop_or_when_its_process_dies(tmp_path: Path) -> None:
    status = "vigil/vigil/status"
    with MqttBroker(tmp_path / "broker") as broker:
        with Subscriber(broker) as home_assistant:
            mqtt = MqttConfig(url=broker.url, state_topic="site/{camera}/incident", home_assistant={})
            sender = MqttSender(mqtt, None, ["door"])
            assert sender.probe() is None
            assert home_assistant.wait_for(1, topic_prefix=status), home_assistant.messages
            sender.close()
            assert home_assistant.wait_for(2, topic_prefix=status), home_assistant.messages
            assert [m.payload for m in home_assistant.on(status)] == [b"online", b"offline"]
            configs = [json.loads(m.payload) for m in home_assistant.messages if m.topic.startswith("homeassistant/")]
            assert len(configs) == 2 and all(c["availability_topic"] == status for c in configs)
            # killed (no clean disconnect, no chance to say it): the broker publishes its will
            sink = subprocess.Popen([sys.executable, "-c", KILLED_SINK, broker.url], stdout=subprocess.PIPE, text=True)
            try:
                assert sink.stdout is not None and sink.stdout.readline().strip() == "connected"
                assert home_assistant.wait_for(3, topic_prefix=status), home_assistant.messages
                sink.kill()
                assert home_assistant.wait_for(4, topic_prefix=status, timeout=10), home_assistant.messages
            finally:
                sink.kill()
                sink.wait()
        assert [m.payload for m in home_assistant.on(status)] == [b"online", b"offline", b"online", b"offline"]
        with Subscriber(broker) as later:  # Home Assistant starting now reads vigil's state at once
            assert later.wait_for(1, topic_prefix=status), later.messages
        assert later.on(status)[0].payload == b"offline" and later.on(status)[0].retain


def test_a_lost_connection_is_made_again_at_once_and_a_check_beside_vigil_leaves_it_be(tmp_path: Path, caplog) -> None:
    """With vigil's status published, the sink does not wait for an alert to reconnect (Home Assistant
    would show the cameras unavailable till then); check --probe logs in under its own client id."""
    caplog.set_level(logging.INFO, logger="stages.alerting.mqtt")
    status = "vigil/vigil/status"
    broker = MqttBroker(tmp_path / "broker").start()
    try:
        mqtt = MqttConfig(url=broker.url, state_topic="site/{camera}/incident", home_assistant={}, backoff_s=0.2)
        sender = MqttSender(mqtt, None, ["door"])
        assert sender.probe() is None
        config = make_config(tmp_path, alerts={"mqtt": [mqtt.model_dump(exclude_defaults=True)]})
        with Subscriber(broker) as home_assistant:
            assert home_assistant.wait_for(1, topic_prefix=status)
            assert probe_destinations(config) == [("alerts.mqtt.0", f"mqtt {sender.target.shown_url}", None)]
            wait_until(lambda: "-chk" in broker.log.read_text(), timeout=5)
            assert "closing old connection" not in broker.log.read_text(), "the sink's own connection stays"
            assert [m.payload for m in home_assistant.on(status)] == [b"online"], "no offline from the check"
        broker.kill()  # restarted without persistence: the retained status and configs are gone
        broker.start()
        with Subscriber(broker) as later:  # no alert sent: the keeper reconnected and said so
            assert later.wait_for(1, topic_prefix=status, timeout=15), later.messages
            assert later.wait_for(2, topic_prefix="homeassistant/", timeout=5), later.messages
        assert later.on(status)[0].payload == b"online"
        sender.close()
    finally:
        broker.kill()
    assert caplog.text.count("status vigil/vigil/status online") == 2


def test_a_refused_login_is_retried_with_its_reason_until_the_broker_accepts_it(
    tmp_path: Path, stop, caplog, monkeypatch
) -> None:
    monkeypatch.setenv("VIGIL_TEST_MQTT_PASSWORD", "the-right-password")
    outbox = tmp_path / "outbox.sqlite"
    users = {"watcher": "watch-pw", "vigil": "an-old-password"}
    mqtt = MqttConfig(
        url="mqtt://127.0.0.1:1",  # replaced below, once the broker has its port
        username="vigil",
        password_env="VIGIL_TEST_MQTT_PASSWORD",
        backoff_s=0.1,
        max_backoff_s=0.3,
    )
    with MqttBroker(tmp_path / "broker", users=users) as broker:
        mqtt = mqtt.model_copy(update={"url": broker.url})
        with Subscriber(broker, user="watcher", password="watch-pw") as subscriber:
            queue(outbox, [mqtt], [("a1", "door", "alert.opened"), ("a2", "door", "alert.updated")])
            worker = DeliveryWorker(mqtt, str(outbox), stop, secret=mqtt.password())
            worker.start()
            wait_until(lambda: worker.failed_attempts >= 2, timeout=10)
            assert subscriber.messages == []
            # the operator sets the password the config names, and the broker rereads its file
            subprocess.run([MOSQUITTO_PASSWD, "-b", str(broker.folder / "passwords"), "vigil", "the-right-password"])
            broker.signal(signal.SIGHUP)
            assert subscriber.wait_for(2), subscriber.messages
            wait_until(lambda: worker.delivered == 2, timeout=10)
    assert [json.loads(m.payload)["id"] for m in subscriber.messages] == ["a1", "a2"]
    assert "broker refused the login: Not authorized" in caplog.text
    assert "the-right-password" not in caplog.text
    assert delivered_ids(outbox, mqtt) == ["a1", "a2"]


def test_alerts_queued_while_the_broker_is_down_are_delivered_once_it_is_back(tmp_path: Path, stop, caplog) -> None:
    outbox = tmp_path / "outbox.sqlite"
    broker = MqttBroker(tmp_path / "broker").start()
    try:
        mqtt = MqttConfig(url=broker.url, backoff_s=1.5, max_backoff_s=1.5)
        with Subscriber(broker) as subscriber:
            queue(outbox, [mqtt], [("a1", "door", "alert.opened")])
            worker = DeliveryWorker(mqtt, str(outbox), stop, secret=None)
            worker.start()
            assert subscriber.wait_for(1)  # no snapshot_topic: one message per alert
        broker.kill()
        queue(outbox, [mqtt], [("a2", "door", "alert.updated"), ("b1", "yard", "alert.opened")])
        worker.wake.set()
        wait_until(lambda: worker.failed_attempts >= 2, timeout=10)  # one per camera, each retried >= 0.75 s on
        broker.start()
        with Subscriber(broker) as subscriber:
            assert subscriber.wait_for(2, timeout=15), subscriber.messages
            wait_until(lambda: worker.delivered == 3, timeout=10)
        assert sorted(json.loads(m.payload)["id"] for m in subscriber.messages) == ["a2", "b1"]
    finally:
        broker.kill()
    assert "broker unreachable: Connection refused" in caplog.text
    assert sorted(delivered_ids(outbox, mqtt)) == ["a1", "a2", "b1"]


def test_an_mqtts_broker_is_trusted_through_its_ca_file_and_named_when_it_is_not(tmp_path: Path, stop, caplog) -> None:
    outbox = tmp_path / "outbox.sqlite"
    authority = trustme.CA()
    authority.cert_pem.write_to_path(str(tmp_path / "site-ca.pem"))
    with MqttBroker(tmp_path / "broker", tls=authority) as broker:
        untrusted = MqttConfig(url=broker.url, topic="untrusted/{camera}", backoff_s=5.0)
        trusted = MqttConfig(url=broker.url, topic="trusted/{camera}", ca_file=str(tmp_path / "site-ca.pem"))
        queue(outbox, [untrusted, trusted], [("a1", "door", "alert.opened")])
        workers = [DeliveryWorker(m, str(outbox), stop, secret=None) for m in (untrusted, trusted)]
        for worker in workers:
            worker.start()
        wait_until(lambda: workers[1].delivered == 1 and workers[0].failed_attempts == 1, timeout=15)
    assert delivered_ids(outbox, trusted) == ["a1"] and delivered_ids(outbox, untrusted) == []
    assert "TLS certificate not trusted: unable to get local issuer certificate (trust its authority with ca_file)" in (
        caplog.text
    )


def test_a_broker_that_accepts_but_never_answers_fails_each_attempt_in_timeout_s_and_lets_the_worker_stop(
    tmp_path: Path, caplog
) -> None:
    outbox = tmp_path / "outbox.sqlite"
    with socket.create_server(("127.0.0.1", 0)) as silent:  # the kernel accepts; nothing ever answers
        mqtt = MqttConfig(url=f"mqtt://127.0.0.1:{silent.getsockname()[1]}", timeout_s=0.5, backoff_s=0.1)
        queue(outbox, [mqtt], [("a1", "door", "alert.opened")])
        stop = threading.Event()
        worker = DeliveryWorker(mqtt, str(outbox), stop, secret=None)
        worker.start()
        wait_until(lambda: worker.failed_attempts >= 2, timeout=10)
        stop.set()
        worker.join(timeout=5)
    assert not worker.is_alive(), "a worker waiting on a silent broker still stops"
    assert "broker did not answer the login within 0.5 s" in caplog.text
    assert worker.delivered == 0 and worker.error is None


@pytest.mark.timeout(120)
def test_the_alert_stage_delivers_every_alert_to_its_webhook_and_its_broker(tmp_path: Path) -> None:
    outbox = tmp_path / "alerts.sqlite"
    with MqttBroker(tmp_path / "broker") as broker, Subscriber(broker) as subscriber, WebhookReceiver(SECRET) as hook:
        webhook = WebhookConfig(url=hook.url, secret_env=SECRET_ENV)
        mqtt = MqttConfig(url=broker.url)
        queue(outbox, [webhook, mqtt], [("a1", "door", "alert.opened"), ("b1", "yard", "alert.opened")])
        alerts = {
            "log_path": None,
            "outbox_path": str(outbox),
            "pending_path": str(tmp_path / "p.sqlite"),
            "webhooks": [webhook.model_dump()],
            "mqtt": [mqtt.model_dump()],
        }

        metrics: list[str] = []

        def stop_once_delivered(supervisor: Supervisor) -> None:
            if supervisor.counters.get("alert", {}).get("delivered") == 4:
                metrics.append(render(supervisor.snapshot()))
                supervisor.request_stop()

        config = make_config(tmp_path, alerts=alerts)
        summary = Supervisor(config, only=["alert"], on_tick=stop_once_delivered).run()
        assert subscriber.wait_for(2)
    assert summary.counters["alert"]["delivered"] == 4, summary
    assert sorted(json.loads(m.payload)["id"] for m in subscriber.messages) == ["a1", "b1"]
    assert sorted(d.alert_id for d in hook.deliveries) == ["a1", "b1"]
    (counted,) = [f for f in text_string_to_metric_families(metrics[0]) if f.name == "vigil_alert_deliveries"]
    delivered = {s.labels["destination"]: s.value for s in counted.samples if s.labels["outcome"] == "delivered"}
    assert delivered == {hook.url: 2, f"{broker.url} topic vigil/{{camera}}/alerts": 2}
