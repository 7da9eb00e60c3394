"""Delivery to an MQTT broker (paho-mqtt): each alert's JSON published to its topic with QoS 1 or 2,
counted as delivered once the broker has acknowledged it (PUBACK, or PUBCOMP for QoS 2); its JPEG
snapshot, when a ``snapshot_topic`` is set, published first as raw bytes (what Home Assistant's MQTT
camera and Node-RED take); with a ``state_topic``, the camera's incident state (``open``, ``closed``)
published after it, retained; with ``home_assistant``, each camera announced to Home Assistant by MQTT
discovery at every connection (``stages.alerting.home_assistant``). Retries, order per camera and the
dead letters are the outbox's, as for a webhook: see ``stages.alerting.delivery``.

One connection per broker entry, made when the first alert is due and made again (a fresh client)
after it is lost; a refused login or an unreachable broker is a failed attempt with its reason
(``broker refused the login: Not authorized``, ``broker unreachable: Connection refused``), retried
with backoff. Delivery is at least once: a publish whose acknowledgement was lost is published
again, so consumers drop repeats by the alert's ``id``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import ssl
import threading
from collections.abc import Sequence
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from pipeline.config import MqttConfig
from stages.alerting.home_assistant import announcements
from stages.alerting.store import DueDelivery, WebhookTarget
from stages.webhook import DeliveryError, trusting

logger = logging.getLogger(__name__)

UNSPECIFIED_ERROR = 128  # paho's reason code for a connection lost without a DISCONNECT
ONLINE, OFFLINE = b"online", b"offline"  # vigil's status for Home Assistant (its availability payloads)
KEEP_CHECK_S = 1.0  # how often the keeper looks at the connection
CHECK_SUFFIX = "-chk"  # check --probe's client id: the default id (18 characters) stays within MQTT 3.1.1's 23


def topic_of(template: str, payload: dict[str, Any]) -> str:
    """The topic for one alert: ``{camera}`` and ``{event}`` filled in from its payload."""
    return template.format(camera=payload.get("camera", ""), event=payload.get("event", ""))


def mqtt_body(payload: dict[str, Any], snapshot: bytes, snapshot_topic: str | None) -> bytes:
    """The JSON published per alert: the webhook's body, with the snapshot's size (and the topic it
    went to) instead of its bytes."""
    described: dict[str, Any] = {"content_type": "image/jpeg", "bytes": len(snapshot)}
    if snapshot_topic is not None:
        described["topic"] = snapshot_topic
    return json.dumps({**payload, "snapshot": described}).encode()


def broker_tls(settings: MqttConfig) -> ssl.SSLContext | None:
    """TLS for an mqtts broker (the system's authorities, or only ``ca_file``'s); None for mqtt.
    ConfigError when ``ca_file`` cannot be read as PEM certificates."""
    return trusting(settings.ca_file) if settings.tls else None


def default_client_id(settings: MqttConfig) -> str:
    return "vigil-" + hashlib.sha256(f"{settings.url} {settings.topic}".encode()).hexdigest()[:12]


class MqttSender:
    """Publishes alerts to one broker entry; ``send`` is called from the delivery worker's pool
    threads (paho's client is thread-safe; the connection is made under a lock)."""

    kind = "mqtt"

    def __init__(
        self, settings: MqttConfig, password: str | None, cameras: Sequence[str] = (), *, check: bool = False
    ) -> None:
        self.settings = settings
        # Home Assistant: discovery configs and vigil's status, at each connection; a check (check --probe)
        # logs in under its own client id (the running sink's would be taken over) and says nothing
        self._announcements = [] if check else announcements(settings, cameras)
        self._status = None if check or settings.home_assistant is None else settings.home_assistant.availability_topic
        self.target = WebhookTarget.of(settings)
        self._password = password
        self._tls = broker_tls(settings)  # once: loading the trusted authorities costs milliseconds
        self._client_id = (settings.client_id or default_client_id(settings)) + (CHECK_SUFFIX if check else "")
        self._closing = threading.Event()
        self._keeper: threading.Thread | None = None  # reconnects at once when vigil's status is published
        self._lock = threading.Lock()
        self._client: paho.Client | None = None
        self._answered = threading.Event()  # the broker answered the login (CONNACK)
        self._refused: str | None = None  # why it refused, when it did
        self._lost: str | None = None  # why the last connection ended

    def send(self, delivery: DueDelivery, attempt: int) -> str:
        """Publish one alert (its snapshot first); returns what acknowledged it, or raises
        DeliveryError with a one-line reason."""
        client = self._connected()
        topic = topic_of(self.settings.topic, delivery.payload)
        snapshot_topic = None
        if self.settings.snapshot_topic is not None:
            snapshot_topic = topic_of(self.settings.snapshot_topic, delivery.payload)
            self._publish(client, snapshot_topic, delivery.snapshot)
        self._publish(client, topic, mqtt_body(delivery.payload, delivery.snapshot, snapshot_topic))
        if self.settings.state_topic is not None:  # after the alert: a camera's alerts go in order
            state = b"closed" if delivery.event == "alert.closed" else b"open"
            self._publish(client, topic_of(self.settings.state_topic, delivery.payload), state, retain=True)
        return f"{'PUBACK' if self.settings.qos == 1 else 'PUBCOMP'} on {topic}"

    def probe(self) -> str | None:
        """None when the broker accepts the login (the connection is kept for the first alert), else
        why not: checked at start and by ``check --probe``."""
        try:
            self._connected()
        except DeliveryError as exc:
            return str(exc)
        return None

    def close(self) -> None:
        self._closing.set()
        with self._lock:
            if self._client is not None:
                if self._status is not None and self._client.is_connected():
                    try:  # a clean disconnect drops the will: say it ourselves
                        self._publish(self._client, self._status, OFFLINE, retain=True)
                    except DeliveryError as exc:
                        logger.warning("mqtt %s: could not say offline: %s", self.target.shown_url, exc)
                self._drop(self._client)
                self._client = None
        if self._keeper is not None and self._keeper is not threading.current_thread():
            self._keeper.join(timeout=self.settings.timeout_s)

    def _keep_connected(self) -> None:
        """While vigil's status is published: a lost connection is made again at once (with backoff),
        not at the next alert, so Home Assistant does not show the cameras unavailable for hours."""
        delay = self.settings.backoff_s
        while not self._closing.wait(KEEP_CHECK_S):
            with self._lock:
                alive = self._client is not None and self._client.is_connected()
            if alive:
                delay = self.settings.backoff_s
                continue
            try:
                self._connected()
            except DeliveryError as exc:
                logger.warning("mqtt %s: reconnecting failed (%s); again in %.1f s", self.target.shown_url, exc, delay)
                self._closing.wait(delay)
                delay = min(2 * delay, self.settings.max_backoff_s)

    def _publish(self, client: paho.Client, topic: str, body: bytes, *, retain: bool | None = None) -> None:
        timeout = self.settings.timeout_s
        keep = self.settings.retain if retain is None else retain
        info = client.publish(topic, body, qos=self.settings.qos, retain=keep)
        try:
            info.wait_for_publish(timeout)
            published = info.is_published()
        except (RuntimeError, ValueError) as exc:
            raise DeliveryError(f"publish to {topic} failed: {self._lost or exc}") from None
        if not published:
            why = f" (connection lost: {self._lost})" if self._lost else ""
            raise DeliveryError(f"broker did not acknowledge {topic} within {timeout:g} s{why}")

    def _connected(self) -> paho.Client:
        """The connected client, connecting (a fresh client) when there is none or it was lost."""
        with self._lock:
            if self._client is not None and self._client.is_connected():
                return self._client
            if self._client is not None:
                self._drop(self._client)
                self._client = None
            if self._closing.is_set():
                raise DeliveryError("the sender is closed")
            client = self._connect()
            self._announce(client)
            self._client = client
            if self._status is not None and self._keeper is None:
                self._keeper = threading.Thread(target=self._keep_connected, name="mqtt-keeper", daemon=True)
                self._keeper.start()
            return client

    def _announce(self, client: paho.Client) -> None:
        """Home Assistant's discovery configs, retained: again at every connection, so a broker that
        restarted without keeping them has them again before the next alert."""
        if not self._announcements and self._status is None:
            return
        try:
            for announcement in self._announcements:
                self._publish(client, announcement.topic, announcement.body, retain=True)
            if self._status is not None:
                self._publish(client, self._status, ONLINE, retain=True)
        except DeliveryError as exc:
            self._drop(client)
            raise DeliveryError(f"Home Assistant discovery: {exc}") from None
        if self._announcements and self.settings.home_assistant is not None:
            logger.info(
                "mqtt %s: announced %d entities to Home Assistant under %s/; status %s online",
                self.target.shown_url,
                len(self._announcements),
                self.settings.home_assistant.discovery_prefix,
                self._status,
            )

    def _connect(self) -> paho.Client:
        settings = self.settings
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self._client_id,
            protocol=paho.MQTTv311,
            reconnect_on_failure=False,  # a lost connection is made again, fresh, by the next send
        )
        if settings.username is not None:
            client.username_pw_set(settings.username, self._password)
        if self._tls is not None:
            client.tls_set_context(self._tls)
        client.connect_timeout = settings.timeout_s
        if self._status is not None:  # the broker says 'offline' for us if the connection is lost
            client.will_set(self._status, OFFLINE, qos=settings.qos, retain=True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        self._answered.clear()
        self._refused = None
        self._lost = None
        try:
            client.connect(settings.host, settings.port, keepalive=settings.keepalive_s)
        except ssl.SSLCertVerificationError as exc:
            hint = f"not signed by {settings.ca_file}" if settings.ca_file else "trust its authority with ca_file"
            raise DeliveryError(f"TLS certificate not trusted: {exc.verify_message} ({hint})") from None
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc) or exc.__class__.__name__
            raise DeliveryError(f"broker unreachable: {reason}") from None
        client.loop_start()
        if not self._answered.wait(settings.timeout_s):
            self._drop(client)
            raise DeliveryError(f"broker did not answer the login within {settings.timeout_s:g} s")
        if self._refused is not None:
            self._drop(client)
            raise DeliveryError(f"broker refused the login: {self._refused}")
        logger.info("mqtt %s: connected as %s", self.target.shown_url, self._client_id)
        return client

    def _on_connect(
        self, _client: paho.Client, _userdata: Any, _flags: Any, reason: ReasonCode, _properties: Any
    ) -> None:
        if reason.is_failure:
            self._refused = str(reason)
        self._answered.set()

    def _on_disconnect(
        self, _client: paho.Client, _userdata: Any, _flags: Any, reason: ReasonCode, _properties: Any
    ) -> None:
        unspecified = reason.value == UNSPECIFIED_ERROR  # MQTT 3.1.1 names no reason for a dropped connection
        self._lost = "the connection was dropped" if unspecified else str(reason)
        answered = self._answered.is_set()
        self._answered.set()
        if reason.is_failure and answered and self._refused is None:  # a refused login is reported by send
            logger.warning("mqtt %s: connection lost (%s)", self.target.shown_url, self._lost)

    @staticmethod
    def _drop(client: paho.Client) -> None:
        if client.disconnect() not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            logger.debug("mqtt: disconnect did not go cleanly")
        client.loop_stop()
