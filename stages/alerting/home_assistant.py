"""Home Assistant MQTT discovery: the retained config messages that make each camera a device in Home
Assistant with up to three entities, read from the topics vigil already publishes to:

- ``binary_sensor`` *incident* (device class ``safety``): on while the camera's incident is open, from
  ``state_topic`` (``open`` / ``closed``);
- ``camera`` *snapshot*: the latest alert's JPEG, from ``snapshot_topic``;
- ``sensor`` *alert score*: the latest alert's score, with its event, reasons, incident id and local
  time as attributes, from ``topic``.

Every entity is available while vigil's status topic says ``online`` (published retained at each
connection; ``offline`` at a stop, and by the broker as the connection's will when it is lost). A
topic that names ``{event}`` changes from alert to alert, so no entity can read it: its entity is
left out (the config refuses an entry with nothing to announce). See
https://www.home-assistant.io/integrations/mqtt/#mqtt-discovery.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.alert_settings import HomeAssistantConfig, MqttConfig

ATTRIBUTES = (
    '{{ {"event": value_json.event, "incident_id": value_json.incident_id, '
    '"reasons": value_json.reasons, "local_time": value_json.local_time} | tojson }}'
)


@dataclass(frozen=True)
class Announcement:
    """One discovery message: its (retained) topic and JSON config."""

    topic: str
    config: dict[str, Any]

    @property
    def body(self) -> bytes:
        return json.dumps(self.config, separators=(",", ":")).encode()


def camera_topic(template: str | None, camera: str) -> str | None:
    """``template`` for ``camera``, or None where it has none or names ``{event}``."""
    if template is None or "{event}" in template:
        return None
    return template.format(camera=camera)


def announcements(settings: MqttConfig, cameras: Sequence[str]) -> list[Announcement]:
    """The discovery messages for ``cameras`` (none without ``settings.home_assistant``)."""
    ha = settings.home_assistant
    if ha is None:
        return []
    out: list[Announcement] = []
    for camera in cameras:
        device = {
            "identifiers": [f"{ha.node_id}_{camera}"],
            "name": camera,
            "manufacturer": "vigil",
            "model": "camera watched by vigil",
        }
        state = camera_topic(settings.state_topic, camera)
        if state is not None:
            fields = {"state_topic": state, "payload_on": "open", "payload_off": "closed", "device_class": "safety"}
            out.append(entity(ha, "binary_sensor", camera, "incident", device, fields))
        snapshot = camera_topic(settings.snapshot_topic, camera)
        if snapshot is not None:
            out.append(entity(ha, "camera", camera, "snapshot", device, {"topic": snapshot}))
        alerts = camera_topic(settings.topic, camera)
        if alerts is not None:
            fields = {
                "state_topic": alerts,
                "value_template": "{{ value_json.score }}",
                "json_attributes_topic": alerts,
                "json_attributes_template": ATTRIBUTES,
            }
            out.append(entity(ha, "sensor", camera, "alert score", device, fields))
    return out


def entity(
    ha: HomeAssistantConfig, component: str, camera: str, name: str, device: dict[str, Any], fields: dict[str, str]
) -> Announcement:
    """One entity of ``camera``'s device: ``<prefix>/<component>/<node_id>/<camera>_<name>/config``."""
    object_id = f"{camera}_{name.replace(' ', '_')}"
    config = {
        "name": name,
        "unique_id": f"{ha.node_id}_{object_id}",
        "device": device,
        "availability_topic": ha.availability_topic,  # payloads 'online' / 'offline', Home Assistant's defaults
        **fields,
    }
    return Announcement(f"{ha.discovery_prefix}/{component}/{ha.node_id}/{object_id}/config", config)
