"""Home Assistant discovery configs: which entities each camera gets, from which topics. (Their
delivery to a real broker, retained and again after a broker restart, is in test_mqtt.py.)"""

from __future__ import annotations

from pipeline.config import MqttConfig
from stages.alerting.home_assistant import announcements


def test_a_topic_that_names_the_event_gets_no_entity_the_others_do() -> None:
    mqtt = MqttConfig(
        url="mqtt://broker",
        topic="site/{camera}/{event}",
        state_topic="site/{camera}/incident",
        home_assistant={"discovery_prefix": "ha/"},
    )
    [incident] = announcements(mqtt, ["gate"])
    assert incident.topic == "ha/binary_sensor/vigil/gate_incident/config", "the prefix without its trailing /"
    assert incident.config["device_class"] == "safety"
    assert b'"state_topic":"site/gate/incident"' in incident.body


def test_no_announcements_unless_asked() -> None:
    mqtt = MqttConfig(url="mqtt://broker", state_topic="site/{camera}/incident")
    assert announcements(mqtt, ["gate", "yard"]) == []
