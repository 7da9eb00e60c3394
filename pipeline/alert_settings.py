"""The ``alerts`` section of the config: where alerts go (webhooks, the JSON-lines log) and the
files that keep them until delivered."""

from __future__ import annotations

import os
import re
import string
import urllib.parse
from collections.abc import Callable, Mapping
from typing import Annotated, Any

from pydantic import Field, ValidationInfo, field_validator, model_validator

from pipeline.sources import redact
from pipeline.strict import ConfigError, StrictModel

BackoffSeconds = Annotated[float, Field(gt=0, description="First retry delay; doubles per attempt, with jitter.")]
MaxAgeSeconds = Annotated[
    float, Field(gt=0, description="An alert still undelivered this long moves to the dead letters.")
]


def refuse_inline(data: Any, key: str, what: str, example: str) -> Any:
    """A secret written into the config itself (``secret:``, ``password:``) is refused, naming the
    ``*_env`` setting to use instead."""
    if isinstance(data, dict) and key in data:
        setting = example.split(":", 1)[0]
        raise ValueError(
            f"'{key}' is not accepted: put {what} in an environment variable and name it with {setting} "
            f"(for example {example})"
        )
    return data


class WebhookConfig(StrictModel):
    url: str = Field(description="http(s) URL that receives alerts as JSON POSTs.")
    secret_env: str | None = Field(
        None,
        description="Name of the environment variable holding the HMAC-SHA256 signing key "
        "(the key itself never goes in the config).",
    )
    timeout_s: float = Field(5.0, gt=0, description="Seconds to wait for the receiver's answer before retrying.")
    backoff_s: BackoffSeconds = 0.5
    max_backoff_s: float = Field(60.0, gt=0, description="Longest delay between two attempts (unless Retry-After).")
    max_age_s: MaxAgeSeconds = 86_400.0
    concurrency: int = Field(
        4,
        ge=1,
        le=64,
        description="Alerts of different cameras posted to this webhook at once; one camera's alerts always go "
        "one at a time, in order.",
    )
    ca_file: str | None = Field(
        None,
        description="For an https URL: a PEM file of the certificate authority (or the receiver's own "
        "self-signed certificate) to trust instead of the system's (relative paths: from the config file's folder).",
    )

    @model_validator(mode="before")
    @classmethod
    def _no_inline_secret(cls, data: Any) -> Any:
        return refuse_inline(data, "secret", "the key", "secret_env: VIGIL_WEBHOOK_SECRET")

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        if not re.match(r"^https?://[^/\s]+", url):
            raise ValueError(f"webhook url must start with http:// or https:// and name a host, got {url!r}")
        return url

    @field_validator("ca_file")
    @classmethod
    def _ca_file_for_https(cls, ca_file: str | None, info: ValidationInfo) -> str | None:
        if ca_file is not None and not str(info.data.get("url", "")).startswith("https://"):
            raise ValueError("ca_file is for https:// webhooks; this url is not one")
        return ca_file

    @field_validator("secret_env")
    @classmethod
    def _secret_is_set(cls, name: str | None, info: ValidationInfo) -> str | None:
        environ = (info.context or {}).get("environ")
        if name is not None and environ is not None and not environ.get(name):
            raise ValueError(f"environment variable {name} (the webhook's signing key) is not set")
        return name

    def secret(self, environ: Mapping[str, str] | None = None) -> str | None:
        """The signing key from the environment (None when the webhook is unsigned)."""
        if self.secret_env is None:
            return None
        value = (os.environ if environ is None else environ).get(self.secret_env)
        if not value:
            raise ConfigError([f"environment variable {self.secret_env} (a webhook's signing key) is not set"])
        return value


MQTT_TOPIC_FIELDS = ("camera", "event")  # what a topic template may name: {camera}, {event}
MQTT_WILDCARDS = re.compile(r"[+#\x00]")


def mqtt_topic_problem(template: str) -> str | None:
    """Why ``template`` cannot name the topic of every alert, or None."""
    try:
        fields = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:
        return f"{template!r} is not a topic template ({exc})"
    unknown = sorted(fields - set(MQTT_TOPIC_FIELDS))
    if unknown:
        named = ", ".join("{" + name + "}" for name in unknown)
        return f"{template!r} names {named}; a topic may name only {{camera}} and {{event}}"
    if not template or MQTT_WILDCARDS.search(template):
        return f"{template!r}: a topic to publish to must be non-empty and hold no wildcard (+, #)"
    return None


HOME_ASSISTANT_ID = re.compile(r"^[A-Za-z0-9_-]+$")


class HomeAssistantConfig(StrictModel):
    discovery_prefix: str = Field(
        "homeassistant", description="Home Assistant's MQTT discovery prefix (its default is homeassistant)."
    )
    node_id: str = Field(
        "vigil",
        description="Names this vigil in Home Assistant: in the discovery topics and every entity's unique_id "
        "(<node_id>_<camera>_incident, ...). Give each vigil that reports to one Home Assistant its own.",
    )

    status_topic: str | None = Field(
        None,
        description="Topic that says whether vigil is up, retained: 'online' once connected, 'offline' when it "
        "stops or, published by the broker (the connection's will), when the connection is lost: Home "
        "Assistant then shows the cameras' entities unavailable. null: vigil/<node_id>/status.",
    )

    @field_validator("discovery_prefix", "status_topic")
    @classmethod
    def _plain_topic(cls, topic: str | None) -> str | None:
        if topic is None:
            return None
        problem = mqtt_topic_problem(topic)
        if problem is not None or "{" in topic:
            raise ValueError(f"{topic!r}: a topic without placeholders or wildcards is needed here")
        return topic.rstrip("/")

    @property
    def availability_topic(self) -> str:
        return self.status_topic or f"vigil/{self.node_id}/status"

    @field_validator("node_id")
    @classmethod
    def _node_id(cls, node_id: str) -> str:
        if not HOME_ASSISTANT_ID.match(node_id):
            raise ValueError(f"node_id {node_id!r} may only hold letters, digits, '-' and '_'")
        return node_id


class MqttConfig(StrictModel):
    url: str = Field(
        description="The broker: mqtt://HOST[:PORT] (1883) or mqtts://HOST[:PORT] (8883, TLS). No credentials "
        "in the URL: username and password_env."
    )
    topic: str = Field(
        "vigil/{camera}/alerts",
        description="Topic each alert's JSON is published to; {camera} and {event} (alert.opened, ...) are "
        "filled in per alert.",
    )
    snapshot_topic: str | None = Field(
        None,
        description="Topic the alert's JPEG snapshot is published to as raw bytes, before its JSON (for "
        "example vigil/{camera}/snapshot); null: no snapshot (the JSON says its size only).",
    )
    state_topic: str | None = Field(
        None,
        description="Topic that holds each camera's incident state, retained: 'open' from an alert.opened until "
        "its alert.closed, then 'closed' (for example vigil/{camera}/incident: a Home Assistant binary_sensor "
        "with payload_on 'open'); null: none.",
    )
    qos: int = Field(
        1,
        ge=1,
        le=2,
        description="MQTT quality of service: 1 (at least once) or 2 (exactly once to the broker); an alert "
        "counts as delivered when the broker has acknowledged it.",
    )
    retain: bool = Field(False, description="Publish with the retain flag (the broker keeps each topic's last).")
    username: str | None = Field(None, description="User name to log in to the broker with.")
    password_env: str | None = Field(
        None, description="Name of the environment variable holding the broker password (never the password itself)."
    )
    client_id: str | None = Field(
        None, description="MQTT client id; default vigil-<hash of url and topic>, the same on every start."
    )
    keepalive_s: int = Field(30, ge=5, le=3600, description="Seconds between MQTT keep-alive pings.")
    timeout_s: float = Field(
        5.0, gt=0, description="Seconds to wait for the connection or the broker's acknowledgement before retrying."
    )
    backoff_s: BackoffSeconds = 0.5
    max_backoff_s: float = Field(60.0, gt=0, description="Longest delay between two attempts.")
    max_age_s: MaxAgeSeconds = 86_400.0
    concurrency: int = Field(
        4,
        ge=1,
        le=64,
        description="Alerts of different cameras awaiting the broker's acknowledgement at once; one camera's "
        "alerts always go one at a time, in order.",
    )
    ca_file: str | None = Field(
        None,
        description="For an mqtts URL: a PEM file of the certificate authority (or the broker's own self-signed "
        "certificate) to trust instead of the system's (relative paths: from the config file's folder).",
    )
    home_assistant: HomeAssistantConfig | None = Field(
        None,
        description="Announce each camera to Home Assistant by MQTT discovery (retained, at every connection): "
        "a binary_sensor of its incident state (state_topic), a camera of its snapshots (snapshot_topic) and "
        "a sensor of its last alert's score with the alert as attributes (topic). Topics that name {event} "
        "cannot be announced. null: no announcements.",
    )

    @model_validator(mode="after")
    def _something_to_announce(self) -> MqttConfig:
        if self.home_assistant is None:
            return self
        if all(topic is None or "{event}" in topic for topic in (self.topic, self.snapshot_topic, self.state_topic)):
            raise ValueError(
                "home_assistant: nothing to announce: set a state_topic or snapshot_topic, or a topic without "
                "{event} (one topic per camera is what a Home Assistant entity reads)"
            )
        return self

    @model_validator(mode="before")
    @classmethod
    def _no_inline_password(cls, data: Any) -> Any:
        return refuse_inline(data, "password", "it", "password_env: VIGIL_MQTT_PASSWORD")

    @field_validator("url")
    @classmethod
    def _broker_url(cls, url: str) -> str:
        match = re.match(r"^mqtts?://([^/\s:@]+)(:\d+)?/?$", url)
        if match is None:
            hint = " (credentials go in username and password_env)" if "@" in url else ""
            raise ValueError(f"mqtt url must be mqtt://HOST[:PORT] or mqtts://HOST[:PORT], got {url!r}{hint}")
        port = int(match.group(2)[1:]) if match.group(2) else None
        if port is not None and not 0 < port < 65536:
            raise ValueError(f"port {port} is out of range (1-65535)")
        return url.rstrip("/")

    @field_validator("topic", "snapshot_topic", "state_topic")
    @classmethod
    def _topic_template(cls, template: str | None) -> str | None:
        problem = None if template is None else mqtt_topic_problem(template)
        if problem:
            raise ValueError(problem)
        return template

    @field_validator("ca_file")
    @classmethod
    def _ca_file_for_mqtts(cls, ca_file: str | None, info: ValidationInfo) -> str | None:
        if ca_file is not None and not str(info.data.get("url", "")).startswith("mqtts://"):
            raise ValueError("ca_file is for mqtts:// brokers; this url is not one")
        return ca_file

    @field_validator("password_env")
    @classmethod
    def _password_is_set(cls, name: str | None, info: ValidationInfo) -> str | None:
        environ = (info.context or {}).get("environ")
        if name is not None and environ is not None and not environ.get(name):
            raise ValueError(f"environment variable {name} (the broker password) is not set")
        if name is not None and info.data.get("username") is None:
            raise ValueError("password_env needs a username to log in with")
        return name

    def password(self, environ: Mapping[str, str] | None = None) -> str | None:
        """The broker password from the environment (None when none is configured)."""
        if self.password_env is None:
            return None
        value = (os.environ if environ is None else environ).get(self.password_env)
        if not value:
            raise ConfigError([f"environment variable {self.password_env} (an MQTT broker's password) is not set"])
        return value

    @property
    def host(self) -> str:
        return urllib.parse.urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        return urllib.parse.urlsplit(self.url).port or (8883 if self.tls else 1883)

    @property
    def tls(self) -> bool:
        return self.url.startswith("mqtts://")


def _once(names: list[str], what: str, shown: Callable[[str], str] = str) -> None:
    """Refuses a name listed twice, naming it as ``shown`` writes it (a URL with its secrets hidden)."""
    seen: dict[str, int] = {}
    for index, name in enumerate(names):
        if name in seen:
            raise ValueError(
                f"{shown(name)} is listed twice (entries {seen[name]} and {index}); {what} may appear once"
            )
        seen[name] = index


class AlertsConfig(StrictModel):
    webhooks: list[WebhookConfig] = Field(default_factory=list, description="Receivers of every alert.")
    mqtt: list[MqttConfig] = Field(
        default_factory=list,
        description="MQTT brokers every alert is published to (as JSON, and its snapshot as JPEG if asked), "
        "delivered from the same outbox as the webhooks.",
    )
    log_path: str | None = Field(
        "vigil-alerts.jsonl",
        description="JSON-lines file every alert is appended to (relative paths: from the config file's folder).",
    )
    outbox_path: str = Field(
        "vigil-state/alerts.sqlite",
        description="SQLite outbox of the alert sink: every alert, its deliveries and the dead letters.",
    )
    pending_path: str = Field(
        "vigil-state/fuse-pending.sqlite",
        description="SQLite file where fuse keeps alerts until the sink has stored them.",
    )
    retention_days: float | None = Field(
        30.0,
        gt=0,
        description="Delivered alerts (with their snapshots) are deleted from the outbox this many days after "
        "they were stored; alerts not yet delivered, and dead letters, are kept whatever their age. "
        "null: keep every alert.",
    )
    resend_s: float = Field(2.0, gt=0, description="Fuse resends an alert the sink has not acknowledged this long.")
    snapshot_max_bytes: int = Field(300_000, ge=10_000, description="Largest JPEG snapshot; quality is lowered to fit.")
    end_of_stream_wait_s: float = Field(
        15.0,
        ge=0,
        description="When a replayed file ends, how long its undelivered alerts may hold the run open "
        "(they stay in the outbox and are delivered on the next start); fuse waits as long for the sink to "
        "store its alerts (those it cannot, its disk full, stay in pending_path and are sent on the next start).",
    )

    @field_validator("webhooks")
    @classmethod
    def _each_webhook_once(cls, webhooks: list[WebhookConfig]) -> list[WebhookConfig]:
        """The outbox keeps one delivery per alert and webhook URL: a URL listed twice would be one
        receiver getting each alert twice, and the sink could not queue it."""
        _once([w.url for w in webhooks], "a webhook url", redact)  # two tokens are two receivers
        return webhooks

    @field_validator("mqtt")
    @classmethod
    def _each_broker_topic_once(cls, brokers: list[MqttConfig]) -> list[MqttConfig]:
        _once([f"{b.url} topic {b.topic}" for b in brokers], "a broker and topic")
        announced = [f"home_assistant node_id {ha.node_id!r} on {b.url}" for b in brokers if (ha := b.home_assistant)]
        _once(announced, "a node_id per broker (its entities and status would be each other's)")
        ids = [f"client_id {b.client_id!r} on {b.url}" for b in brokers if b.client_id is not None]
        _once(ids, "a client_id (the broker would drop one connection for the other, over and over)")
        return brokers

    @field_validator("outbox_path", "pending_path")
    @classmethod
    def _a_file_of_its_own(cls, path: str, info: ValidationInfo) -> str:
        """Two of the alert files in one (a JSON-lines log appended into a SQLite file corrupts it)."""
        for other in ("log_path", "outbox_path"):
            given = info.data.get(other)
            if other != info.field_name and given and os.path.normpath(given) == os.path.normpath(path):
                raise ValueError(f"the same file as alerts.{other}; each alert file needs its own path")
        return path
