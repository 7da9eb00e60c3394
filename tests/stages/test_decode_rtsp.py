"""decode reads a real RTSP stream (GStreamer's RTSP server on 127.0.0.1), video and audio, through
the whole pipeline; the spoken keyword is found at the media time where it was mixed in, and the
camera's recording holds the incident's footage."""

from __future__ import annotations

import itertools
import re
import time
from datetime import datetime
from pathlib import Path

import av
import pytest

from pipeline.config import CameraConfig, RecordConfig
from pipeline.progress import total
from pipeline.receiver import WebhookReceiver
from pipeline.supervisor import Supervisor
from stages.clips import export_clip
from stages.recording import segments
from tests.conftest import SECRET, make_config, webhook
from tests.support.rtsp import RtspServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


def test_live_rtsp_camera_raises_the_keyword_alert_and_records_its_footage(
    tmp_path: Path, demo_clip: Path, demo_meta: dict
) -> None:
    record = RecordConfig(folder=str(tmp_path / "recordings"), segment_s=4, min_free_gb=0)
    began = time.time()
    with RtspServer(demo_clip) as server, WebhookReceiver(SECRET) as receiver:
        config = make_config(
            tmp_path,
            alerts={"webhooks": [webhook(receiver.url)]},
            runtime={"mode": "live"},
        )
        camera = CameraConfig(source=server.url, keywords=["help", "police"], analysis={"fps": 2}, record=record)
        config = config.model_copy(update={"cameras": {"door": camera}})

        segments_while_running: list[int] = []

        def stop_after_the_keyword(supervisor: Supervisor) -> None:  # or after 40 s of stream at 2 fps
            segments_while_running.append(supervisor.counters.get("decode:door", {}).get("recording_segments", 0))
            if (
                any(d.payload["evidence"].get("keywords") for d in receiver.deliveries)
                or total(supervisor.counters, "detect", "frames_analysed") > 2 * 40
            ):
                supervisor.request_stop()

        summary = Supervisor(config, on_tick=stop_after_the_keyword).run()
        deliveries = receiver.deliveries
    assert summary.exit_code == 0, summary.failed
    assert total(summary.counters, "decode", "frames_sent") > 0
    keyword_alerts = [d.payload for d in deliveries if d.payload["evidence"].get("keywords")]
    assert keyword_alerts, "the spoken keyword raised an alert"
    hit = keyword_alerts[0]["evidence"]["keywords"][0]
    assert abs(hit["time"] - demo_meta["speech"]["start_s"]) <= 2.0
    assert all(d.signature_valid for d in deliveries)
    said = next(reason for reason in keyword_alerts[0]["reasons"] if reason.startswith("spoken"))
    assert re.fullmatch(r"spoken '\w+' at \d\d:\d\d:\d\d(, spoken '\w+' at \d\d:\d\d:\d\d)*", said), said
    local = datetime.fromisoformat(keyword_alerts[0]["local_time"])  # the clock of the frame's capture
    assert abs(local.timestamp() - keyword_alerts[0]["capture_wall_time"]) < 0.01
    # the recording: 4 s segments (the clip has a keyframe every 2 s) from the camera's first keyframe
    found = segments(record, "door")
    assert len(found) >= 3 and began <= found[0].started < found[1].started
    assert summary.counters["decode:door"]["recording_segments"] == len(found)
    assert max(segments_while_running) >= 2, "counted as segments start, not only when the camera stops"
    assert summary.counters["decode:door"]["recording_failures"] == 0
    with av.open(str(found[1].path)) as segment:
        assert [s.type for s in segment.streams] == ["video", "audio"]
        times = [frame.time for frame in segment.decode(segment.streams.video[0])]
    assert 38 <= len(times) <= 42, "4 s of a 10 fps camera"
    assert all(0.05 < b - a < 0.15 for a, b in itertools.pairwise(times)), (
        "no frame lost or doubled (RTSP gives no dts)"
    )
    alert = keyword_alerts[0]
    start = alert["capture_wall_time"] - (alert["media_time"]["at"] - alert["media_time"]["incident_start"])
    clip = export_clip(record, "door", start - 2.0, alert["capture_wall_time"], tmp_path / "incident.mp4")
    assert clip.start <= start - 2.0 + 0.2, "from the keyframe at or before the time asked for"
    assert clip.duration_s >= alert["capture_wall_time"] - start + 1.5
    with av.open(str(clip.path)) as footage:
        assert [s.type for s in footage.streams] == ["video", "audio"]
        times = [frame.time for frame in footage.decode(footage.streams.video[0])]
    assert len(times) >= 10 * clip.duration_s - 2
    assert all(b - a < 0.15 for a, b in itertools.pairwise(times[:-3])), "no gap where segments join"
