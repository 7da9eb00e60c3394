"""Replicas: detect and transcribe as several processes, each camera served by one of them."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import VigilConfig
from pipeline.receiver import WebhookReceiver
from pipeline.stage_specs import build_specs
from pipeline.supervisor import Supervisor
from pipeline.transport import Endpoints, replica_address
from stages.decode import serving_replica
from tests.conftest import SECRET, make_config, webhook


def replicated(tmp_path: Path, cameras: int, replicas: int, **settings: object) -> VigilConfig:
    base = make_config(tmp_path, **settings)
    plaza = base.cameras["plaza"]
    stages = base.stages.model_copy(
        update={
            "detect": base.stages.detect.model_copy(update={"replicas": replicas, "threads": 1}),
            "transcribe": base.stages.transcribe.model_copy(update={"replicas": replicas, "threads": 1}),
        }
    )
    return base.model_copy(update={"cameras": {f"cam{i}": plaza for i in range(cameras)}, "stages": stages})


def test_replica_addresses_are_the_next_ports_or_numbered_socket_files():
    assert replica_address("tcp://10.0.0.5:5601", 0) == "tcp://10.0.0.5:5601"
    assert replica_address("tcp://10.0.0.5:5601", 2) == "tcp://10.0.0.5:5603"
    assert replica_address("ipc:///run/vigil/detect.sock", 1) == "ipc:///run/vigil/detect-1.sock"


def test_each_replica_is_its_own_instance_and_cameras_are_dealt_out_in_order(tmp_path):
    config = replicated(tmp_path, cameras=3, replicas=2)
    names = [spec.instance for spec in build_specs(config, Endpoints.in_folder(tmp_path))]
    assert names == [
        "alert",
        "fuse",
        "detect:0",
        "detect:1",
        "transcribe:0",
        "transcribe:1",
        "decode:cam0",
        "decode:cam1",
        "decode:cam2",
    ]
    assert [serving_replica(config, "detect", camera) for camera in config.cameras] == [0, 1, 0]


def test_replicas_share_their_stage_thread_budget():
    config = VigilConfig.model_validate(
        {"cameras": {"c": {"source": "c.mp4"}}, "stages": {"detect": {"replicas": 2}, "transcribe": {"replicas": 8}}}
    )
    from pipeline.config import default_threads, usable_cores

    budget = default_threads(usable_cores())
    assert config.stages.detect.threads == max(1, budget["detect"] // 2)
    assert config.stages.transcribe.threads == 1


@pytest.mark.slow
def test_two_replicas_each_serve_their_cameras_and_every_frame_is_analysed(tmp_path):
    with WebhookReceiver(SECRET) as receiver:
        config = replicated(tmp_path, cameras=2, replicas=2, alerts={"webhooks": [webhook(receiver.url)]})
        supervisor = Supervisor(config)
        summary = supervisor.run()
        payloads = [d.payload for d in receiver.deliveries]
    assert summary.exit_code == 0
    counters = summary.counters
    sent = {camera: counters[f"decode:{camera}"]["frames_sent"] for camera in config.cameras}
    assert counters["detect:0"]["frames_analysed"] == sent["cam0"]  # cam0 went to replica 0 only
    assert counters["detect:1"]["frames_analysed"] == sent["cam1"]
    assert counters["transcribe:0"]["chunks_in"] == counters["decode:cam0"]["audio_chunks_sent"]
    assert counters["transcribe:1"]["chunks_in"] == counters["decode:cam1"]["audio_chunks_sent"]
    for camera in config.cameras:  # both cameras heard the keyword through their own replica
        reasons = " ".join(r for p in payloads if p["camera"] == camera for r in p["reasons"])
        assert "spoken 'help'" in reasons, (camera, reasons)
