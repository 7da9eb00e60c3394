"""Render the configuration reference (README section) from the pydantic models' field descriptions,
so the documentation cannot drift from the code: ``python -m pipeline.config_reference``."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from pipeline.config import (
    AlertsConfig,
    AnalysisConfig,
    CameraConfig,
    DecodeConfig,
    DetectConfig,
    FuseConfig,
    HomeAssistantConfig,
    LineConfig,
    MaskConfig,
    MqttConfig,
    ObjectFilter,
    RecordConfig,
    RuntimeConfig,
    SignalWeights,
    StageConfig,
    TranscribeConfig,
    VigilConfig,
    WebhookConfig,
    ZoneConfig,
)
from pipeline.network import CurveConfig, EndpointConfig, NetworkConfig

SECTIONS: list[tuple[str, type[BaseModel]]] = [
    ("top level", VigilConfig),
    ("cameras.<id>", CameraConfig),
    ("cameras.<id>.analysis", AnalysisConfig),
    ("cameras.<id>.zones.<name>", ZoneConfig),
    ("cameras.<id>.lines.<name>", LineConfig),
    ("cameras.<id>.masks.<name>", MaskConfig),
    ("cameras.<id>.objects.<class>", ObjectFilter),
    ("cameras.<id>.record", RecordConfig),
    ("stages.decode", DecodeConfig),
    ("stages.detect", DetectConfig),
    ("stages.transcribe", TranscribeConfig),
    ("stages.fuse", FuseConfig),
    ("stages.fuse.weights", SignalWeights),
    ("stages.alert", StageConfig),
    ("alerts", AlertsConfig),
    ("alerts.webhooks[]", WebhookConfig),
    ("alerts.mqtt[]", MqttConfig),
    ("alerts.mqtt[].home_assistant", HomeAssistantConfig),
    ("runtime", RuntimeConfig),
    ("network", NetworkConfig),
    ("network.<detect|transcribe|fuse|alert>", EndpointConfig),
    ("network.curve", CurveConfig),
]


def _default(field: Any) -> str:
    if field.default is PydanticUndefined:
        if field.default_factory is None:
            return "required"
        value = field.default_factory()
        if isinstance(value, BaseModel):
            return "(section)"
        return f"`{json.dumps(value)}`"
    return f"`{json.dumps(field.default)}`"


def render() -> str:
    lines: list[str] = []
    for title, model in SECTIONS:
        lines += [f"#### `{title}`", "", "| key | default | meaning |", "|---|---|---|"]
        for name, field in model.model_fields.items():
            description = (field.description or "").replace("|", "\\|")
            lines.append(f"| `{name}` | {_default(field)} | {description} |")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    print(render(), end="")
