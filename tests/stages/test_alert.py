from __future__ import annotations

import base64
import json

from stages.alert import AlertLog
from stages.alerting.delivery import with_snapshot


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
