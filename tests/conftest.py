"""Shared fixtures: the shipped demo clip and its metadata, configs built in code, a webhook receiver."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pipeline.config import VigilConfig
from pipeline.receiver import WebhookReceiver

ROOT = Path(__file__).resolve().parent.parent
DEMO_CLIP = ROOT / "media" / "demo.mp4"
DEMO_META = ROOT / "media" / "demo.json"
SECRET = "test-secret"
SECRET_ENV = "VIGIL_TEST_WEBHOOK_SECRET"  # webhook keys come from the environment only

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("YOLO_OFFLINE", "1")
# webhook signing keys, from the environment as vigil requires (stage processes inherit them)
os.environ.setdefault(SECRET_ENV, SECRET)
os.environ.setdefault("VIGIL_DEMO_SECRET", "vigil-demo-secret")


def webhook(url: str, **settings: Any) -> dict[str, Any]:
    """A signed webhook's config, its key in the environment."""
    return {"url": url, "secret_env": SECRET_ENV, **settings}


@pytest.fixture(scope="session")
def demo_clip() -> Path:
    return DEMO_CLIP


@pytest.fixture(scope="session")
def demo_meta() -> dict[str, Any]:
    return json.loads(DEMO_META.read_text())


def make_config(tmp_path: Path, **overrides: Any) -> VigilConfig:
    """The demo settings as a VigilConfig, with top-level sections replaced by ``overrides``."""
    data: dict[str, Any] = {
        "cameras": {
            "plaza": {
                "source": str(DEMO_CLIP),
                "analysis": {"fps": 5, "width": 640},
                "zones": {
                    "forecourt": {
                        "polygon": [[0.62, 0.45], [0.92, 0.45], [1.0, 0.55], [1.0, 0.68], [0.75, 0.68], [0.62, 0.55]],
                        "classes": ["person"],
                        "dwell_s": 1.0,
                    }
                },
                "keywords": ["help", "police"],
            }
        },
        "stages": {
            "detect": {"threads": 1, "batch": 4},
            "transcribe": {"threads": 1},
        },
        "alerts": {
            "webhooks": [],
            "log_path": str(tmp_path / "alerts.jsonl"),
            "outbox_path": str(tmp_path / "state" / "alerts.sqlite"),
            "pending_path": str(tmp_path / "state" / "fuse-pending.sqlite"),
        },
        "runtime": {"mode": "fast", "ipc_dir": str(tmp_path), "stop_timeout_s": 8, "metrics_address": "127.0.0.1:0"},
    }
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return VigilConfig.model_validate(data)


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver(SECRET) as server:
        yield server
