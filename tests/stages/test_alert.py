from __future__ import annotations

import base64
import json

import pytest

from pipeline.supervisor import Supervisor
from stages.alert import AlertLog
from stages.alerting.delivery import with_snapshot
from tests.conftest import make_config


def test_webhook_body_carries_the_snapshot_as_base64():
    body = with_snapshot({"id": "a", "event": "alert.opened"}, b"\xff\xd8jpeg")
    assert body["snapshot"]["content_type"] == "image/jpeg" and body["snapshot"]["bytes"] == 6
    assert base64.b64decode(body["snapshot"]["data_base64"]) == b"\xff\xd8jpeg"
    assert body["id"] == "a"


def test_alert_log_appends_one_json_line_per_alert_without_image_bytes(tmp_path):
    log = AlertLog(str(tmp_path / "sub" / "alerts.jsonl"))
    log.append({"id": "a"}, 100)
    log.append({"id": "b"}, 200)
    lines = [json.loads(line) for line in (tmp_path / "sub" / "alerts.jsonl").read_text().splitlines()]
    assert lines == [
        {"id": "a", "snapshot": {"content_type": "image/jpeg", "bytes": 100}},
        {"id": "b", "snapshot": {"content_type": "image/jpeg", "bytes": 200}},
    ]


def test_no_log_path_means_no_file(tmp_path):
    AlertLog(None).append({"id": "a"}, 1)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("stage", "setting"), [("alert", "outbox_path"), ("fuse", "pending_path")])
def test_an_alert_store_that_cannot_be_made_fails_its_stage_for_good_naming_the_setting(tmp_path, stage, setting):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    alerts = {
        "log_path": None,
        "outbox_path": str(tmp_path / "alerts.sqlite"),
        "pending_path": str(tmp_path / "pending.sqlite"),
    }
    config = make_config(tmp_path, alerts={**alerts, setting: str(blocker / "store.sqlite")})
    supervisor = Supervisor(config, only=[stage])
    summary = supervisor.run()
    reason = summary.failed.get(stage, "")
    assert reason.startswith(f"alerts.{setting}: cannot open {blocker / 'store.sqlite'}: "), summary
    restarts = {s.spec.instance: s.restarts for s in supervisor.stages}
    assert restarts == {stage: 0}, "a store that cannot be made is not retried"
