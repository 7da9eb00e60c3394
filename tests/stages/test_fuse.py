from __future__ import annotations

import time

import numpy as np

from pipeline.config import AlertsConfig, CameraConfig, FuseConfig, LineConfig, MaskConfig, ObjectFilter, ZoneConfig
from pipeline.messages import Box, Detections, EndOfStream, Segment, Transcript, Word
from stages.fuse import CameraFusion

ZONE = ZoneConfig(polygon=[(0.5, 0.5), (1.0, 0.5), (1.0, 1.0), (0.5, 1.0)], dwell_s=0)
CAMERA = CameraConfig(source="x.mp4", zones={"door": ZONE}, keywords=["help"])
PERSON_IN_ZONE = Box("person", 0.9, 0.7, 0.6, 0.8, 0.9)


def fusion(wait_for_audio: bool = True, camera: CameraConfig = CAMERA) -> CameraFusion:
    settings = FuseConfig(min_duration_s=0.0, close_after_s=0.5, max_audio_lag_s=0.2)
    return CameraFusion("cam", camera, settings, AlertsConfig(), "run", wait_for_audio)


def detections(pts: float, boxes: tuple[Box, ...] = (), wall_time: float | None = None) -> Detections:
    image = np.zeros((48, 64, 3), np.uint8)
    return Detections("cam", int(pts * 10), pts, time.time() if wall_time is None else wall_time, boxes, image)


def test_frames_wait_for_the_audio_watermark_in_fast_mode():
    f = fusion()
    f.on_message(detections(1.0))
    f.on_message(detections(2.0))
    assert f.ready(time.time() + 100) == []
    f.on_message(Transcript("cam", 0.0, 1.5, 0.0))
    assert [d.pts for d in f.ready(time.time())] == [1.0]
    f.on_message(EndOfStream("cam", "audio"))
    assert [d.pts for d in f.ready(time.time())] == [2.0]


def test_live_frames_stop_waiting_for_audio_after_max_lag():
    f = fusion(wait_for_audio=False)
    f.on_message(detections(1.0, wall_time=time.time() - 1.0))
    f.on_message(detections(1.2, wall_time=time.time()))
    assert [d.pts for d in f.ready(time.time())] == [1.0]


def test_cameras_without_audio_never_wait():
    f = fusion(camera=CAMERA.model_copy(update={"audio": False}))
    f.on_message(detections(1.0))
    assert len(f.ready(time.time())) == 1


def test_keyword_after_zone_intrusion_updates_the_incident_with_evidence_and_snapshot():
    f = fusion()
    f.on_message(Transcript("cam", 0.0, 1.1, 0.0))
    f.on_message(Transcript("cam", 1.1, 3.0, 0.0, (Segment("help me", 1.1, 1.6, (Word("help", 1.1, 1.3),)),)))
    alerts = []
    for pts in (0.9, 1.0, 1.2):
        f.on_message(detections(pts, (PERSON_IN_ZONE,)))
    for frame in f.ready(time.time()):
        alerts += f.score(frame)
    assert [a.payload["event"] for a in alerts] == ["alert.opened", "alert.updated"]
    opened, updated = (a.payload for a in alerts)
    assert opened["evidence"]["zones"][0]["objects"][0]["label"] == "person"
    assert updated["new_signals"] == ["keyword"]
    assert updated["evidence"]["keywords"][0] == {"keyword": "help", "time": 1.1, "text": "help me"}
    assert updated["incident_id"] == opened["incident_id"] and updated["id"] != opened["id"]
    assert all(a.snapshot[:2] == b"\xff\xd8" for a in alerts)


def test_a_person_crossing_a_line_opens_an_incident_with_the_crossing_and_tracked_boxes():
    gate = LineConfig(points=[(0.0, 0.5), (1.0, 0.5)], direction="down")
    f = fusion(camera=CameraConfig(source="x.mp4", audio=False, lines={"gate": gate}))
    alerts = []
    for step in range(10):  # walks down the picture, crossing the line at 1.0 s
        y = 0.3 + 0.05 * step
        f.on_message(detections(step / 5, (Box("person", 0.9, 0.2, y - 0.2, 0.3, y),)))
    for frame in f.ready(time.time()):
        alerts += f.score(frame)
    (opened,) = [a.payload for a in alerts]
    assert opened["event"] == "alert.opened" and opened["media_time"]["at"] == 1.0
    assert opened["signals"]["line"] == {"value": 1.0, "weight": 0.7}
    assert opened["evidence"]["crossings"] == [
        {"line": "gate", "track": 1, "label": "person", "direction": "down", "time": 1.0}
    ]
    assert opened["reasons"] == ["person #1 crossed line 'gate' going down at 1.0 s"]
    assert opened["evidence"]["boxes"][0]["track"] == 1


def test_zone_dwell_adds_up_when_a_busy_detector_analyses_the_camera_only_every_1_5_s():
    zone = ZONE.model_copy(update={"dwell_s": 4.0})
    f = fusion(camera=CameraConfig(source="x.mp4", audio=False, zones={"door": zone}))  # 5 fps asked
    alerts = []
    for step in range(6):
        f.on_message(detections(1.5 * step, (PERSON_IN_ZONE,)))
    for frame in f.ready(time.time()):
        alerts += f.score(frame)
    (opened,) = [a.payload for a in alerts]
    assert opened["media_time"]["at"] == 4.5 and opened["evidence"]["zones"][0]["dwell_s"] == 4.5


def test_end_of_both_streams_closes_the_open_incident():
    f = fusion(camera=CAMERA.model_copy(update={"audio": False}))
    f.on_message(detections(1.0, (PERSON_IN_ZONE,)))
    (frame,) = f.ready(time.time())
    assert [a.payload["event"] for a in f.score(frame)] == ["alert.opened"]
    f.on_message(EndOfStream("cam", "video"))
    assert f.finished
    closed = f.close()
    assert [a.payload["event"] for a in closed] == ["alert.closed"]


def test_a_partial_transcript_brings_its_keyword_early_and_the_final_one_does_not_count_it_twice():
    f = fusion(wait_for_audio=False)
    help_segment = Segment("help", 1.1, 1.4, (Word("help", 1.1, 1.3),))
    f.on_message(Transcript("cam", 0.5, 0.5, 0.0, (help_segment,), partial=True))
    assert f.audio_watermark < 0.5  # a partial transcript moves no watermark
    assert f.audio.keyword_reading(1.5).value == 1.0  # the keyword counts before the sentence ends
    final = Segment("help, call the police", 1.12, 2.6, (Word("help", 1.12, 1.3), Word("police", 2.2, 2.6)))
    f.on_message(Transcript("cam", 0.5, 3.0, 0.0, (final,)))
    assert [hit.keyword for hit in f.audio.hits] == ["help"]
    assert f.audio_watermark == 3.0
    assert [s.text for s in f.audio.segments] == ["help, call the police"]  # evidence from the final text only


def test_the_fuse_stage_reports_each_line_s_crossings_as_totals_over_real_zeromq(tmp_path):
    """stages.fuse.run in a thread, fed over a real ZeroMQ socket: two people cross a line, one of
    them twice, in frames that arrive a few at a time; the stage's tally is the crossings so far,
    however often it is brought up to date."""
    import threading

    import zmq

    from pipeline.stage import StageContext, StageSpec
    from pipeline.transport import Endpoints, Sender
    from stages.fuse import run
    from tests.conftest import make_config

    gate = {"points": [[0.0, 0.5], [1.0, 0.5]]}
    fence = {"points": [[0.0, 0.9], [1.0, 0.9]], "armed": ["22:00-06:00"]}  # recorded at noon: never armed
    camera = {
        "source": "x.mp4",
        "audio": False,
        "lines": {"gate": gate, "fence": fence},
        "recorded_at": "2026-11-28 12:00:00",
    }
    config = make_config(tmp_path, cameras={"cam": camera})
    endpoints = Endpoints.in_folder(tmp_path)
    context = zmq.Context()
    ctx = StageContext(
        spec=StageSpec("fuse", "fuse", "stages.fuse:run", "cpu", 1, None, endpoints), config=config, zmq_context=context
    )
    stage = threading.Thread(target=run, args=(ctx,), daemon=True)
    stage.start()
    sender = Sender(context, endpoints.fuse, queue=100)
    ys = [0.3 + 0.05 * step for step in range(9)] + [0.7 - 0.05 * step for step in range(9)]  # down, then up
    for step, y in enumerate(ys):
        left, right = Box("person", 0.9, 0.1, y - 0.2, 0.2, y), Box("person", 0.9, 0.7, 0.2, 0.8, 0.4 + 0.05 * step)
        sender.send(detections(step * 0.2, (left, right)))
        time.sleep(0.03)  # a few frames a pass of the stage's loop, not all at once
    deadline = time.monotonic() + 10
    while ctx.counters["frames_scored"] < len(ys) and time.monotonic() < deadline:
        time.sleep(0.05)
    ctx.stop_event.set()
    stage.join(timeout=10)
    sender.close(linger_ms=0)
    context.destroy(linger=0)
    assert ctx.counters["frames_scored"] == len(ys)
    assert ctx.crossings == {"cam/down/gate": 2, "cam/up/gate": 1, "cam/down/fence": 1}  # counted, though off
    assert ctx.armed == {"cam/line/fence": 0}  # only scheduled rules have a state


def test_a_zone_armed_at_night_opens_when_the_recording_s_clock_reaches_it_and_alerts_carry_that_time(caplog):
    from datetime import datetime

    caplog.set_level("INFO", logger="stages.fuse")
    night_door = ZONE.model_copy(update={"armed": ["22:00-06:00"]})
    recorded = datetime(2026, 11, 28, 21, 59, 58)  # in the runtime's zone, media time 0
    camera = CameraConfig(source="x.mp4", audio=False, zones={"door": night_door}, recorded_at=recorded)
    settings = FuseConfig(min_duration_s=0.0, close_after_s=0.5)
    f = CameraFusion("cam", camera, settings, AlertsConfig(), "run", True, "Europe/Berlin")
    for step in range(20):  # someone at the door for 4 s, read long after it was recorded
        f.on_message(detections(step / 5, (PERSON_IN_ZONE,), wall_time=time.time()))
    alerts = [alert for frame in f.ready(time.time()) for alert in f.score(frame)]
    (opened,) = [a.payload for a in alerts]
    assert opened["media_time"]["at"] == 2.0 and opened["local_time"] == "2026-11-28T22:00:00.000+01:00"
    assert [r.getMessage() for r in caplog.records if "CET (its hours" in r.getMessage()] == [
        "camera cam: zone 'door' is disarmed at Sat 2026-11-28 21:59:58 CET (its hours: 22:00-06:00)",
        "camera cam: zone 'door' armed at Sat 2026-11-28 22:00:00 CET (its hours: 22:00-06:00)",
    ]


def test_a_camera_armed_at_night_raises_nothing_by_day_not_even_a_keyword_and_everything_once_armed(caplog):
    from datetime import datetime

    caplog.set_level("INFO", logger="stages.fuse")
    recorded = datetime(2026, 11, 28, 21, 59, 56)  # media time 4 s is 22:00:00 in Berlin
    camera = CameraConfig(
        source="x.mp4", zones={"door": ZONE}, keywords=["help"], armed=["22:00-06:00"], recorded_at=recorded
    )
    settings = FuseConfig(min_duration_s=0.0, close_after_s=0.5)
    f = CameraFusion("cam", camera, settings, AlertsConfig(), "run", True, "Europe/Berlin")
    f.on_message(Transcript("cam", 0.0, 2.0, 0.0, (Segment("help", 0.5, 0.9, (Word("help", 0.5, 0.9),)),)))
    f.on_message(EndOfStream("cam", "audio"))
    for step in range(30):  # the keyword at 0.5 s, someone at the door from 2 s on
        f.on_message(detections(step / 5, (PERSON_IN_ZONE,) if step >= 10 else ()))
    alerts = [alert for frame in f.ready(time.time()) for alert in f.score(frame)]
    (opened,) = [a.payload for a in alerts]
    assert opened["media_time"]["at"] == 4.0 and opened["local_time"] == "2026-11-28T22:00:00.000+01:00"
    assert opened["reasons"] == ["1 object(s) in zone 'door' for 2.0 s"], "the zone timed its dwell while disarmed"
    assert "keyword" not in [name for name, s in opened["signals"].items() if s["value"]], "said at 21:59:56.5"
    assert f.armed_states() == {"cam/camera/cam": 1}
    assert "camera cam: camera 'cam' armed at Sat 2026-11-28 22:00:00 CET (its hours: 22:00-06:00)" in caplog.text


def test_a_live_camera_s_alert_carries_its_capture_time_on_the_runtime_s_clock():
    from datetime import UTC, datetime

    settings = FuseConfig(min_duration_s=0.0)
    f = CameraFusion("cam", CAMERA.model_copy(update={"audio": False}), settings, AlertsConfig(), "run", False, "UTC")
    captured = datetime(2026, 12, 4, 6, 30, 15, 250000, tzinfo=UTC).timestamp()
    f.on_message(detections(1.0, (PERSON_IN_ZONE,), wall_time=captured))
    (opened,) = [a.payload for frame in f.ready(captured) for a in f.score(frame)]
    assert opened["local_time"] == "2026-12-04T06:30:15.250+00:00"


def test_a_live_camera_s_reasons_say_when_on_the_clock_not_seconds_since_the_run_began():
    from datetime import UTC, datetime

    camera = CAMERA.model_copy(update={"source": "rtsp://cam.example/stream1", "zones": {}})
    f = CameraFusion("cam", camera, FuseConfig(min_duration_s=0.0), AlertsConfig(), "run", False, "UTC")
    read = datetime(2026, 12, 4, 6, 30, 15, tzinfo=UTC).timestamp()
    said = Segment("help", 3601.0, 3601.4, (Word("help", 3601.0, 3601.3),))
    f.on_message(Transcript("cam", 3600.0, 3602.0, 0.0, (said,)))
    f.on_message(detections(3601.5, wall_time=read))  # an hour into the run
    (opened,) = [a.payload for frame in f.ready(read) for a in f.score(frame)]
    assert opened["reasons"] == ["spoken 'help' at 06:30:14"]
    assert f._stamp(f.last_frame) == "2026-12-04 06:30:15 UTC"  # the snapshot's caption: camera and when
    assert opened["evidence"]["keywords"][0]["time"] == 3601.0  # media time stays in the evidence


def test_an_alert_s_snapshot_greys_out_the_zone_that_is_not_armed_at_its_frame():
    from datetime import datetime

    import cv2

    noon = datetime(2026, 11, 28, 12, 0, 0)
    night_door = ZONE.model_copy(update={"armed": ["22:00-06:00"]})
    camera = CAMERA.model_copy(update={"zones": {"door": night_door}, "recorded_at": noon})
    f = CameraFusion("cam", camera, FuseConfig(min_duration_s=0.0), AlertsConfig(), "run", True, "UTC")
    f.on_message(Transcript("cam", 0.0, 3.0, 0.0, (Segment("help", 1.1, 1.4, (Word("help", 1.1, 1.3),)),)))
    frame = Detections("cam", 12, 1.2, time.time(), (PERSON_IN_ZONE,), np.zeros((480, 640, 3), np.uint8))
    f.on_message(frame)
    (opened,) = [a for ready in f.ready(time.time()) for a in f.score(ready)]
    assert opened.payload["reasons"] == ["spoken 'help' at 1.1 s (12:00:01)"]  # the person in the door: no zone
    assert f._stamp(frame) == "2026-11-28 12:00:01 UTC"
    image = cv2.imdecode(np.frombuffer(opened.snapshot, np.uint8), cv2.IMREAD_COLOR).astype(int)
    edge = image[300:420, 319:322]  # the zone's left edge, x 0.5, drawn 2 px wide
    grey = (abs(edge - 160) < 40).all(axis=2)
    assert grey.any(axis=1).mean() > 0.8


def test_a_person_in_a_mask_over_the_zone_opens_nothing_and_counts_for_no_crowd():
    screen = MaskConfig(polygon=[(0.6, 0.5), (0.9, 0.5), (0.9, 1.0), (0.6, 1.0)])  # a screen showing people
    camera = CameraConfig(
        source="x.mp4", audio=False, zones={"door": ZONE}, masks={"screen": screen}, count_threshold={"person": 2}
    )
    f = fusion(camera=camera)
    alerts = []
    for step in range(5):
        f.on_message(detections(step / 5, (PERSON_IN_ZONE, Box("person", 0.9, 0.1, 0.1, 0.2, 0.4))))
    for frame in f.ready(time.time()):
        alerts += f.score(frame)
    assert alerts == [], "the one in the zone is on the screen, and one person alone is no crowd"
    assert f.filter.ignored == {"person in mask 'screen'": 5}
    assert [t.box.x1 for t in f.last_tracked] == [0.1], "only the one outside the mask is tracked"


def test_a_doubtful_person_in_the_zone_is_ignored_and_a_sure_one_opens_an_incident(caplog):
    camera = CameraConfig(
        source="x.mp4", audio=False, zones={"door": ZONE}, objects={"person": ObjectFilter(min_confidence=0.6)}
    )
    f = fusion(camera=camera)
    doubtful = Box("person", 0.45, 0.7, 0.6, 0.8, 0.9)
    alerts = []
    with caplog.at_level("INFO", logger="stages.fuse"):
        for step in range(6):
            f.on_message(detections(step / 5, (doubtful if step < 3 else PERSON_IN_ZONE,)))
        for frame in f.ready(time.time()):
            alerts += f.score(frame)
    (opened,) = [a.payload for a in alerts]
    assert opened["media_time"]["at"] == 0.6 and opened["evidence"]["zones"][0]["objects"][0]["confidence"] == 0.9
    assert "camera cam: ignoring detections (person under min_confidence), the first at 0.0 s" in caplog.text
