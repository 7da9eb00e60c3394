"""``run.py`` as a user types it: bad input gets one clear line naming what is wrong."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import av
import pytest
from faster_whisper.utils import available_models

from pipeline.commands import replay_config
from pipeline.config import WebhookConfig, parse_config
from stages.alerting.store import AlertStore, WebhookTarget
from tests.support.damage import damage_leaf_holding, lose_index_writes
from tests.support.mqtt_broker import MqttBroker
from tests.support.ports import free_port
from tests.support.rtsp import RtspServer
from tests.support.small_disk import small_disk
from tests.support.store_holder import hold_in_another_process

ROOT = Path(__file__).resolve().parent.parent
RUN = [sys.executable, str(ROOT / "run.py")]


def run(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*RUN, *args], capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def error_lines(result: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def alert_files(tmp_path: Path) -> str:
    """The ``alerts`` section of a test config, its files under ``tmp_path/state`` (four lines)."""
    return (
        "alerts:\n  log_path: null\n"
        f"  outbox_path: {tmp_path / 'state' / 'alerts.sqlite'}\n"
        f"  pending_path: {tmp_path / 'state' / 'pending.sqlite'}\n"
    )


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def site_with_alert_files(tmp_path: Path, clip: Path, outbox: Path, pending: Path) -> Path:
    """One camera and the given alert files (``alerts.outbox_path`` on line 4), no JSON-lines log."""
    text = f"cameras:\n  lobby: {{source: {clip}}}\nalerts:\n  outbox_path: {outbox}\n  pending_path: {pending}\n"
    return write(tmp_path / "site.yaml", text + "  log_path: null\n")


def test_check_accepts_the_shipped_demo_config():
    result = run("check", "configs/demo.yaml")
    assert result.returncode == 0, result.stderr
    assert "OK (1 camera(s), mode fast)" in result.stdout


def test_run_and_check_take_the_config_as_an_option_too_as_stage_replay_and_bench_do():
    result = run("check", "--config", "configs/demo.yaml")
    assert result.returncode == 0, result.stderr
    assert "configs/demo.yaml: OK" in result.stdout
    missing = run("run")
    assert missing.returncode == 2
    assert "run.py run: error: a config file is needed" in missing.stderr
    both = run("check", "configs/demo.yaml", "--config", "configs/other.yaml")
    assert both.returncode == 2
    assert "two config files given (configs/demo.yaml and --config configs/other.yaml)" in both.stderr


def test_check_names_file_line_and_field_of_each_problem(tmp_path):
    config = write(
        tmp_path / "site.yaml",
        f"""cameras:
  lobby:
    source: {ROOT / "media" / "demo.mp4"}
    zones:
      door: {{polygon: [[0.1, 0.1], [0.5, 0.5]]}}
    colour: red
stages:
  detect: {{device: gpu}}
""",
    )
    result = run("check", str(config))
    assert result.returncode == 2
    assert error_lines(result) == [
        f"error: {config}:5: cameras.lobby.zones.door.polygon: a polygon needs at least 3 points, got 2",
        f"error: {config}:6: cameras.lobby.colour: unknown key (not a vigil setting)",
        f"error: {config}:8: stages.detect.device: unknown device 'gpu': use 'cpu' or 'cuda:N' (for example 'cuda:0')",
    ]


def test_check_says_whether_each_scheduled_rule_is_armed_when_the_recording_starts(tmp_path):
    config = write(
        tmp_path / "site.yaml",
        f"""cameras:
  lobby:
    source: {ROOT / "media" / "demo.mp4"}
    recorded_at: 2026-11-28 21:59:40
    armed: ["fri-sun 20:00-23:00"]
    zones:
      door: {{polygon: [[0.1, 0.1], [0.5, 0.1], [0.5, 0.5]], armed: ["22:00-06:00"]}}
    lines:
      gate: {{points: [[0.2, 0.6], [0.8, 0.6]], armed: ["sat,sun 00:00-24:00", "mon-fri 18:00-07:30"]}}
runtime:
  timezone: Europe/Berlin
""",
    )
    result = run("check", str(config))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[:3] == [
        "  lobby: the camera (armed fri-sun 20:00-23:00): armed when the recording starts "
        "(Sat 2026-11-28 21:59:40 CET)",
        "  lobby: zone 'door' (armed 22:00-06:00): disarmed when the recording starts (Sat 2026-11-28 21:59:40 CET)",
        "  lobby: line 'gate' (armed sat,sun 00:00-24:00; mon-fri 18:00-07:30): armed when the recording starts "
        "(Sat 2026-11-28 21:59:40 CET)",
    ]


def test_check_refuses_a_missing_video_file(tmp_path):
    config = write(tmp_path / "site.yaml", "cameras:\n  lobby:\n    source: gone.mp4\n")
    result = run("check", str(config))
    assert result.returncode == 2
    assert error_lines(result) == [
        f"error: {config}:3: cameras.lobby.source: cannot open {tmp_path / 'gone.mp4'}: no such file"
    ]


def test_check_names_each_model_no_backend_could_load_with_its_line(tmp_path, demo_clip):
    config = write(
        tmp_path / "site.yaml",
        f"""cameras:
  lobby: {{source: {demo_clip}}}
stages:
  detect:
    backend: ultralytics
  transcribe: {{model: whisper-huge}}
""",
    )
    result = run("check", str(config))
    assert result.returncode == 2
    assert error_lines(result) == [
        f"error: {config}:4: stages.detect.model: catalogue model 'yolov3-tiny-coco' is a darknet model, which the "
        "ultralytics backend does not load",
        f"error: {config}:6: stages.transcribe.model: 'whisper-huge': no such file or folder, not a catalogue name "
        f"(whisper-tiny.en, whisper-base), and not a faster-whisper size ({', '.join(available_models())}) or a "
        "Hugging Face id (org/name)",
    ]


def test_check_refuses_a_class_the_detector_does_not_have_with_what_was_meant(tmp_path, demo_clip):
    config = write(
        tmp_path / "site.yaml",
        f"""cameras:
  lobby:
    source: {demo_clip}
    zones:
      door: {{polygon: [[0.1, 0.1], [0.5, 0.5], [0.1, 0.5]], classes: [people]}}
    lines:
      gate: {{points: [[0.1, 0.6], [0.9, 0.6]], classes: [person, bikes]}}
    count_threshold: {{Person: 5, car: 2}}
stages:
  detect: {{classes: [person, bicycle, Persons]}}
""",
    )
    result = run("check", str(config))
    assert result.returncode == 2
    model = "yolov3-tiny-coco"
    assert error_lines(result) == [
        f"error: {config}:10: stages.detect.classes: 'Persons' is not a class of model {model} "
        "(did you mean 'person'?)",
        f"error: {config}:5: cameras.lobby.zones.door.classes: 'people' is not a class of model {model} "
        "(did you mean 'person'?): it would never be seen",
        f"error: {config}:7: cameras.lobby.lines.gate.classes: 'bikes' is not a class of model {model} "
        "(did you mean 'bicycle'?): it would never be seen",
        f"error: {config}:8: cameras.lobby.count_threshold.Person: 'Person' is not a class of model {model} "
        "(did you mean 'person'?): it would never be seen",
        f"error: {config}:8: cameras.lobby.count_threshold.car: 'car' is never detected: stages.detect.classes "
        "keeps only person, bicycle, Persons",
    ]


def test_run_refuses_a_model_no_backend_could_load_before_any_stage_starts(tmp_path, demo_clip):
    config = write(
        tmp_path / "site.yaml",
        f"""cameras:
  lobby: {{source: {demo_clip}, audio: false}}
stages:
  detect: {{model: yolov9-nonsense}}
  transcribe: {{model: whisper-huge}}
runtime: {{ipc_dir: {tmp_path}}}
""",
    )
    result = run("run", str(config), timeout=60)
    assert result.returncode == 2
    # no camera hears anything, so transcribe would not run and its model is not judged
    assert error_lines(result) == [
        f"error: {config}:4: stages.detect.model: 'yolov9-nonsense': no such file or folder, and not a catalogue "
        "name (yolov3-tiny-coco)"
    ]
    assert "vigil summary" not in result.stdout, "nothing started"


def test_replay_of_a_missing_file_is_one_clear_error(tmp_path):
    result = run("replay", str(tmp_path / "missing.mp4"))
    assert result.returncode == 2
    assert error_lines(result) == [f"error: cannot open {(tmp_path / 'missing.mp4').resolve()}: no such file"]


def test_replay_of_a_file_that_is_not_video_is_one_clear_error(tmp_path):
    path = write(tmp_path / "report.mp4", "quarterly numbers\n" * 50)
    result = run("replay", str(path))
    assert result.returncode == 2
    (line,) = error_lines(result)
    assert str(path) in line and "not a readable video file" in line


@pytest.mark.timeout(300)
def test_replay_of_a_truncated_file_reports_it_and_fails(tmp_path, demo_clip):
    path = tmp_path / "cut.mp4"
    path.write_bytes(demo_clip.read_bytes()[: demo_clip.stat().st_size // 3])
    config = write(tmp_path / "site.yaml", f"cameras:\n  cam: {{source: {path}, analysis: {{fps: 1}}}}\n")
    result = run("replay", str(path), "--config", str(config), "-q")
    assert result.returncode == 1
    line = next(line for line in result.stdout.splitlines() if "camera cam: failed" in line)
    # FFmpeg either stops at the cut ("file ends early") or fails on the cut packet ("unreadable after")
    assert str(path) in line and "9.8 s of a declared 30.0 s" in line and "truncated or corrupt" in line, line
    assert "frames analysed 10" in result.stdout, "what could be decoded was analysed"


def night_zone_config(tmp_path: Path, clip: Path, extra: str = "") -> tuple[Path, Path]:
    """A camera on ``clip`` (``extra`` lines added to it) whose whole frame is a zone armed from 22:00
    (UTC), analysed at 1 fps without audio; the config file and its alert log."""
    log = tmp_path / "alerts.jsonl"
    config = write(
        tmp_path / "site.yaml",
        f"""cameras:
  gate:
    source: {clip}
{extra}    analysis: {{fps: 1}}
    audio: false
    zones:
      all: {{polygon: [[0, 0], [1, 0], [1, 1], [0, 1]], dwell_s: 0, armed: ["22:00-06:00"]}}
alerts:
  log_path: {log}
  outbox_path: {tmp_path / "state" / "alerts.sqlite"}
  pending_path: {tmp_path / "state" / "fuse-pending.sqlite"}
runtime: {{mode: fast, ipc_dir: {tmp_path}, timezone: UTC}}
""",
    )
    return config, log


@pytest.mark.timeout(300)
def test_replay_recorded_at_judges_the_file_s_armed_zone_by_when_it_was_recorded(tmp_path, demo_clip):
    """The config's camera claims a recording at noon (another file's); --recorded-at puts this one
    10 s before 22:00, where the zone arms: the first incident starts at media time 10 s, 22:00:00."""
    config, log = night_zone_config(tmp_path, demo_clip, "    recorded_at: 2026-11-28 12:00:00\n")
    result = run("replay", str(demo_clip), "--config", str(config), "--recorded-at", "2026-11-28 21:59:50", "-q")
    assert result.returncode == 0, result.stderr
    alerts = [json.loads(line) for line in log.read_text().splitlines()]
    first = alerts[0]
    assert first["event"] == "alert.opened" and first["media_time"]["incident_start"] == 10.0
    at = first["media_time"]["at"]  # after stages.fuse.min_duration_s
    assert first["local_time"] == f"2026-11-28T22:00:{at - 10:06.3f}+00:00"


def test_replay_recorded_at_auto_reads_when_the_file_was_recorded_from_the_file(tmp_path, demo_clip):
    """The demo clip copied (not re-encoded) into a file whose creation_time is 10 s before 22:00:
    --recorded-at auto times it as the test above does by hand; the demo clip itself says nothing."""
    stamped = tmp_path / "night.mp4"
    with av.open(str(demo_clip)) as source, av.open(str(stamped), "w") as copy:
        copy.metadata["creation_time"] = "2026-11-28T21:59:50.000000Z"
        streams = {s.index: copy.add_stream_from_template(s) for s in source.streams}
        for packet in source.demux():
            if packet.dts is not None:
                packet.stream = streams[packet.stream.index]
                copy.mux(packet)
    config, log = night_zone_config(tmp_path, demo_clip)
    result = run("replay", str(stamped), "--config", str(config), "--recorded-at", "auto", "-q")
    assert result.returncode == 0, result.stderr
    first = json.loads(log.read_text().splitlines()[0])
    assert first["event"] == "alert.opened" and first["media_time"]["incident_start"] == 10.0
    assert first["local_time"].startswith("2026-11-28T22:00:")
    refused = run("replay", str(demo_clip), "--config", str(config), "--recorded-at", "auto", "-q")
    assert refused.returncode == 2
    assert "--recorded-at auto: " in refused.stderr and "does not say when it was recorded" in refused.stderr


@pytest.mark.timeout(300)
def test_unreachable_webhook_is_named_and_the_replay_still_completes(tmp_path, demo_clip):
    url = f"http://127.0.0.1:{free_port()}/hook"
    config = write(
        tmp_path / "site.yaml",
        f"""cameras:
  gate:
    source: {demo_clip}
    analysis: {{fps: 1}}
    audio: false
    zones:
      all: {{polygon: [[0, 0], [1, 0], [1, 1], [0, 1]], dwell_s: 0}}
alerts:
  webhooks: [{{url: "{url}", backoff_s: 0.1}}]
  log_path: {tmp_path / "alerts.jsonl"}
  end_of_stream_wait_s: 3  # the default 15 s would only make the test longer
runtime: {{mode: fast, ipc_dir: {tmp_path}}}
""",
    )
    result = run("run", str(config))
    assert f"webhook {url}: unreachable (Connection refused) at start" in result.stderr
    assert "still pending at the end of its stream; they stay in the outbox" in result.stderr
    log = [json.loads(line) for line in (tmp_path / "alerts.jsonl").read_text().splitlines()]
    assert log and log[0]["event"] == "alert.opened", "the alert is kept in the log"
    assert result.returncode == 0


@pytest.mark.timeout(300)
def test_a_broken_camera_does_not_stop_the_others(tmp_path, demo_clip):
    config = write(
        tmp_path / "site.yaml",
        f"""cameras:
  broken:
    source: {tmp_path / "no-such-camera.mp4"}
  good:
    source: {demo_clip}
    analysis: {{fps: 1}}
    audio: false
alerts: {{log_path: null}}
runtime: {{mode: fast, ipc_dir: {tmp_path}}}
""",
    )
    result = run("run", str(config), "-q")
    assert result.returncode == 1, "a camera failed for good"
    assert f"camera broken: failed (cannot open {tmp_path / 'no-such-camera.mp4'}: no such file)" in result.stdout
    good = next(line for line in result.stdout.splitlines() if line.strip().startswith("decode:good"))
    assert "frames sent 30" in good
    assert "frames analysed 30" in result.stdout


def test_alert_files_that_cannot_be_made_are_refused_before_anything_starts(tmp_path, demo_clip):
    blocker = write(tmp_path / "a-file", "not a folder")
    notes = write(tmp_path / "notes.txt", "someone's notes, not a database\n")
    config = write(
        tmp_path / "site.yaml",
        f"""cameras:
  lobby: {{source: {demo_clip}}}
alerts:
  outbox_path: {blocker / "alerts.sqlite"}
  pending_path: {notes}
  log_path: {tmp_path}
""",
    )
    expected = [
        f"error: {config}:4: alerts.outbox_path: cannot create {blocker / 'alerts.sqlite'}: {blocker} is a file, "
        "not a folder",
        f"error: {config}:6: alerts.log_path: {tmp_path} is a folder, not a file",
        f"error: {config}:5: alerts.pending_path: {notes} exists and is not an SQLite database; vigil will not "
        "write in it (move it, or use another path)",
    ]
    for command in ("check", "run"):
        result = run(command, str(config), timeout=60)
        assert result.returncode == 2, result.stderr
        assert error_lines(result) == expected
    assert notes.read_text() == "someone's notes, not a database\n", "nothing started, nothing written"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "notes.txt", "site.yaml"], "nothing created"


@pytest.mark.timeout(120)
def test_check_probe_opens_every_camera_and_says_what_it_sends_or_why_not(tmp_path, demo_clip):
    with RtspServer(demo_clip, user="guard", password="s3cret") as server:
        config = write(
            tmp_path / "site.yaml",
            f"""cameras:
  gate: {{source: "{server.url_with("guard", "s3cret")}"}}
  yard: {{source: "{server.url_with("guard", "wrong")}"}}
  road: {{source: "rtsp://127.0.0.1:{free_port()}/cam"}}
  file: {{source: {demo_clip}, audio: true}}
stages:
  decode: {{open_timeout_s: 5}}
""",
        )
        result = run("check", str(config), "--probe", timeout=90)
    assert result.returncode == 2, result.stderr
    assert "  gate: rtsp://guard:***@127.0.0.1:" in result.stdout, "the password is not shown"
    assert re.search(r"gate: \S+: h264 768x576 .*\+ \S+ audio", result.stdout), result.stdout
    assert "  file: " in result.stdout and "h264 768x576 at 10 fps + aac audio 48000 Hz" in result.stdout
    errors = error_lines(result)
    assert any(
        line.startswith(f"error: {config}:3: cameras.yard.source: ") and "unauthorized" in line for line in errors
    )
    assert any(
        line.startswith(f"error: {config}:4: cameras.road.source: ") and "connection refused" in line for line in errors
    )
    assert "s3cret" not in result.stdout + result.stderr and "wrong" not in result.stdout + result.stderr
    assert len(errors) == 2, errors


@pytest.mark.parametrize(
    ("argv", "says"),
    [
        (["bench", "--cameras", "0"], "run.py bench: error: argument --cameras: 0 is less than 1"),
        (["bench", "--pairs", "two"], "run.py bench: error: argument --pairs: 'two' is not a whole number"),
        (["bench", "--fps", "-5"], "run.py bench: error: argument --fps: -5 is not above 0"),
        (["receiver", "--port", "70000"], "run.py receiver: error: argument --port: 70000 is not a port (0-65535"),
    ],
)
def test_numbers_out_of_range_are_refused_at_once_naming_the_option(argv, says):
    result = run(*argv, timeout=60)
    assert result.returncode == 2
    assert says in result.stderr
    assert "Traceback" not in result.stderr


def test_models_list_shows_the_catalogue():
    result = run("models", "list")
    assert result.returncode == 0
    for name in ("yolov3-tiny-coco", "whisper-tiny.en", "whisper-base"):
        assert name in result.stdout


def test_models_fetch_of_an_unknown_name_lists_the_known_ones():
    result = run("models", "fetch", "yolo-nonexistent")
    assert result.returncode == 2
    (line,) = error_lines(result)
    assert "yolo-nonexistent" in line and "yolov3-tiny-coco" in line


@pytest.mark.parametrize("scheme", ["http", "https"])
def test_receiver_command_prints_a_signed_alert_and_stops_on_sigterm(tmp_path, scheme):
    import base64
    import signal
    import ssl
    import time
    import urllib.request

    import trustme

    from stages.webhook import ALERT_ID_HEADER, SIGNATURE_HEADER, sign

    port = free_port()
    tls_args: list[str] = []
    client = None
    if scheme == "https":  # served with a certificate from a private authority the client trusts
        authority = trustme.CA()
        served = authority.issue_cert("127.0.0.1")
        served.cert_chain_pems[0].write_to_path(str(tmp_path / "cert.pem"))
        served.private_key_pem.write_to_path(str(tmp_path / "key.pem"))
        tls_args = ["--tls-cert", str(tmp_path / "cert.pem"), "--tls-key", str(tmp_path / "key.pem")]
        client = ssl.create_default_context()
        authority.configure_trust(client)
    process = subprocess.Popen(
        [*RUN, "receiver", "--port", str(port), "--secret-env", "RECEIVER_KEY", "--out", str(tmp_path), *tls_args],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "RECEIVER_KEY": "s"},
    )
    assert process.stdout is not None
    assert f"listening at {scheme}://127.0.0.1:{port}/alerts" in process.stdout.readline()
    payload = {
        "id": "abc",
        "event": "alert.opened",
        "camera": "lobby",
        "score": 0.7,
        "media_time": {"incident_start": 1.0, "at": 1.5},
        "reasons": ["1 object(s) in zone 'door' for 1.5 s"],
        "snapshot": {"content_type": "image/jpeg", "data_base64": base64.b64encode(b"\xff\xd8x").decode()},
    }
    body = json.dumps(payload).encode()
    headers = {SIGNATURE_HEADER: sign("s", body, int(time.time())), ALERT_ID_HEADER: "abc"}
    request = urllib.request.Request(f"{scheme}://127.0.0.1:{port}/alerts", data=body, headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=5, context=client) as response:
        assert response.status == 204
    line = process.stdout.readline()
    assert "alert.opened" in line and "camera=lobby" in line and "signature ok" in line
    assert (tmp_path / "001-lobby-alert-opened.jpg").read_bytes() == b"\xff\xd8x"
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=10) == 0
    assert "stopped after 1 alert(s)" in process.stdout.read()


def test_stage_refuses_an_unknown_stage_name_before_starting_anything():
    result = run("stage", "detect", "decoder", "--config", "configs/demo.yaml")
    assert result.returncode == 2
    assert error_lines(result) == [
        "error: unknown stage(s) decoder: use decode, detect, transcribe, fuse, alert, decode:plaza"
    ]


def test_stage_refuses_a_host_that_lacks_the_keys_it_needs(tmp_path):
    keys = tmp_path / "keys"
    assert run("keys", "generate", "--out", str(keys), "--name", "server").returncode == 0
    config = write(
        tmp_path / "deploy.yaml",
        f"""cameras: {{c1: {{source: {ROOT / "media" / "demo.mp4"}}}}}
network:
  detect: {{bind: "tcp://0.0.0.0:{free_port()}", connect: "tcp://gpu-1:5601"}}
  curve: {{server_public_key_file: keys/server.key}}
runtime: {{ipc_dir: {tmp_path}}}
""",
    )
    detect = run("stage", "detect", "--config", str(config))
    assert detect.returncode == 2
    assert "server_secret_key_file or server_secret_key_env (this host listens on tcp)" in detect.stderr
    assert "allowed_clients_dir or allowed_clients_env" in detect.stderr
    decode = run("stage", "decode", "--config", str(config))
    assert decode.returncode == 2
    assert "client_secret_key_file or client_secret_key_env (this host connects over tcp)" in decode.stderr


def test_keys_generate_writes_a_pair_and_keeps_an_existing_one(tmp_path):
    first = run("keys", "generate", "--out", str(tmp_path), "--name", "edge-1")
    assert first.returncode == 0, first.stderr
    secret = (tmp_path / "edge-1.key_secret").read_text()
    again = run("keys", "generate", "--out", str(tmp_path), "--name", "edge-1")
    assert again.returncode == 2
    assert "already exists" in again.stderr
    kept = run("keys", "generate", "--out", str(tmp_path), "--name", "edge-1", "--if-missing")
    assert kept.returncode == 0
    assert (tmp_path / "edge-1.key_secret").read_text() == secret


def test_stage_refuses_a_split_that_ipc_in_a_temporary_folder_cannot_join():
    result = run("stage", "detect", "--config", "configs/demo.yaml")
    assert result.returncode == 2
    assert "detect, fuse would be reached over ipc in a temporary folder" in result.stderr
    assert "set runtime.ipc_dir" in result.stderr


def test_stage_refuses_a_malformed_metrics_address():
    result = run("stage", "decode", "--config", "configs/demo.yaml", "--metrics-address", "nonsense")
    assert result.returncode == 2
    assert error_lines(result) == [
        "error: metrics_address must be host:port (for example 127.0.0.1:9108), got 'nonsense'"
    ]


def test_check_warns_of_alert_files_on_a_nearly_full_disk_and_still_accepts_the_config(tmp_path, demo_clip):
    with small_disk(tmp_path / "disk", size="4m") as disk:
        config = write(
            tmp_path / "site.yaml",
            f"""cameras:
  lobby: {{source: {demo_clip}}}
alerts:
  outbox_path: {disk.path / "state" / "alerts.sqlite"}
  pending_path: {tmp_path / "pending.sqlite"}
  log_path: null
""",
        )
        result = run("check", str(config))
    assert result.returncode == 0, result.stderr
    assert "OK (1 camera(s)" in result.stdout
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1, result.stderr  # the pending file's disk has room
    assert warnings[0].startswith(
        f"warning: {config}:4: alerts.outbox_path: the disk where {disk.path / 'state' / 'alerts.sqlite'} goes has "
        "only 4.0 MiB free; a full disk leaves alerts waiting in fuse"
    ), warnings[0]


def test_a_second_run_on_alert_files_another_vigil_holds_is_refused_and_check_only_notes_it(tmp_path, demo_clip):
    outbox = tmp_path / "state" / "alerts.sqlite"
    config = site_with_alert_files(tmp_path, demo_clip, outbox, tmp_path / "state" / "pending.sqlite")
    holder = hold_in_another_process(outbox)
    try:
        refused = run("run", str(config))
        checked = run("check", str(config))
    finally:
        holder.kill()
        holder.wait()
    assert refused.returncode == 2
    assert error_lines(refused) == [
        f"error: {config}:4: alerts.outbox_path: {outbox} is in use by another vigil (pid {holder.pid}, started by "
        f"pid {os.getpid()}); give this run its own alert files, or stop the other"
    ]
    assert "vigil summary" not in refused.stdout, "nothing started"
    assert checked.returncode == 0, checked.stderr
    assert f"note: {config}:4: alerts.outbox_path: {outbox} is in use by another vigil" in checked.stdout


def test_a_webhook_or_broker_ca_file_that_is_missing_or_not_pem_is_refused_before_anything_starts(tmp_path, demo_clip):
    write(tmp_path / "notes.pem", "not a certificate\n")
    config = write(
        tmp_path / "site.yaml",
        f"""cameras:
  lobby: {{source: {demo_clip}}}
{alert_files(tmp_path)}  webhooks:
    - url: https://hooks.example/a
      ca_file: missing.pem
    - url: https://hooks.example/b
      ca_file: notes.pem
  mqtt:
    - url: mqtts://broker.example
      ca_file: missing.pem
""",
    )
    result = run("check", str(config))
    assert result.returncode == 2
    missing, not_pem, broker = error_lines(result)
    assert broker == f"error: {config}:14: alerts.mqtt[0].ca_file: {tmp_path / 'missing.pem'}: no such file"
    assert missing == f"error: {config}:9: alerts.webhooks[0].ca_file: {tmp_path / 'missing.pem'}: no such file"
    assert not_pem.startswith(
        f"error: {config}:11: alerts.webhooks[1].ca_file: {tmp_path / 'notes.pem'}: cannot be read as PEM "
        "certificates ("
    ), not_pem


def test_check_warns_of_a_damaged_outbox_that_the_alert_stage_will_set_aside(tmp_path, demo_clip):
    outbox = tmp_path / "alerts.sqlite"
    store = AlertStore(outbox)
    for i in range(4):
        store.add({"id": f"a{i}", "camera": "lobby", "event": "alert.opened"}, bytes([i]) * 3000, [])
    store.close()
    damage_leaf_holding(outbox, "alerts", 2)
    config = site_with_alert_files(tmp_path, demo_clip, outbox, tmp_path / "pending.sqlite")
    checked = run("check", str(config))
    assert checked.returncode == 0, checked.stderr
    assert f"warning: {config}:4: alerts.outbox_path: {outbox} is damaged (" in checked.stderr
    assert "will set it aside as it starts" in checked.stderr
    assert [p.name for p in tmp_path.iterdir() if "damaged" in p.name] == [], "check only looks"


def test_check_warns_of_an_outbox_index_behind_its_table_that_the_alert_stage_will_rebuild(tmp_path, demo_clip):
    outbox = tmp_path / "alerts.sqlite"
    hook = WebhookTarget.of(WebhookConfig(url="http://127.0.0.1:9/hook"))
    AlertStore(outbox).close()

    def add() -> None:  # rows that reach the disk while the queue's index entries do not
        store = AlertStore(outbox)
        for i in range(3):
            store.add({"id": f"a{i}", "camera": "lobby", "event": "alert.opened"}, b"x", [hook])
        store.close()

    lose_index_writes(outbox, "deliveries_queue", add)
    config = site_with_alert_files(tmp_path, demo_clip, outbox, tmp_path / "pending.sqlite")
    checked = run("check", str(config))
    assert checked.returncode == 0, checked.stderr
    assert (
        f"warning: {config}:4: alerts.outbox_path: {outbox}: index(es) deliveries_queue do not match their tables "
        "(row 1 missing from index deliveries_queue;"
    ) in checked.stderr
    assert "the stage that owns it rebuilds them as it starts, and no alert is lost" in checked.stderr


@pytest.mark.timeout(120)
def test_check_probe_logs_in_to_each_mqtt_broker_and_connects_to_each_webhook(tmp_path, demo_clip, monkeypatch):
    monkeypatch.setenv("VIGIL_TEST_MQTT_RIGHT", "right-pw")
    monkeypatch.setenv("VIGIL_TEST_MQTT_WRONG", "wrong-pw")
    hook_port = free_port()
    with MqttBroker(tmp_path / "broker", users={"vigil": "right-pw"}) as broker:
        config = write(
            tmp_path / "site.yaml",
            f"""cameras:
  lobby: {{source: {demo_clip}}}
{alert_files(tmp_path)}  webhooks:
    - url: http://127.0.0.1:{hook_port}/alerts
  mqtt:
    - {{url: "{broker.url}", username: vigil, password_env: VIGIL_TEST_MQTT_RIGHT}}
    - {{url: "{broker.url}", topic: other, username: vigil, password_env: VIGIL_TEST_MQTT_WRONG}}
""",
        )
        result = run("check", str(config), "--probe", timeout=90)
    assert result.returncode == 2, result.stderr
    assert f"  mqtt {broker.url} topic vigil/{{camera}}/alerts: accepts the login" in result.stdout, result.stdout
    assert error_lines(result) == [
        f"error: {config}:8: alerts.webhooks[0]: webhook http://127.0.0.1:{hook_port}/alerts: unreachable "
        "(Connection refused)",
        f"error: {config}:11: alerts.mqtt[1]: mqtt {broker.url} topic other: broker refused the login: Not authorized",
    ]
    assert "right-pw" not in result.stdout + result.stderr and "wrong-pw" not in result.stdout + result.stderr


def test_a_record_folder_that_cannot_be_made_is_refused_before_anything_starts(tmp_path):
    blocker = write(tmp_path / "a-file", "not a folder\n")
    config = write(
        tmp_path / "site.yaml",
        f"""cameras:
  gate:
    source: rtsp://127.0.0.1:9/gate
    record: {{folder: a-file/recordings}}
{alert_files(tmp_path)}""",
    )
    result = run("check", str(config))
    assert result.returncode == 2
    assert error_lines(result) == [
        f"error: {config}:4: cameras.gate.record.folder: cannot create {blocker / 'recordings' / 'gate'}: "
        f"{blocker} is a file, not a folder"
    ]


def test_check_says_where_each_recorded_camera_is_recorded_and_for_how_long(tmp_path):
    config = write(
        tmp_path / "site.yaml",
        f"""cameras:
  gate:
    source: rtsp://127.0.0.1:9/gate
    record: {{folder: recordings, segment_s: 30, keep_hours: 72}}
{alert_files(tmp_path)}""",
    )
    result = run("check", str(config))
    assert result.returncode == 0, result.stderr
    line = (
        f"  gate: recorded into {tmp_path / 'recordings' / 'gate'} (30 s segments, kept 72 h, at least 2 GB left free; "
    )
    assert line in result.stdout, result.stdout


def test_a_replay_with_a_recorded_cameras_settings_does_not_record_the_file(demo_clip):
    base = parse_config(
        "cameras:\n  gate: {source: 'rtsp://h/s', record: {folder: rec}, keywords: [help]}\n", "s.yaml", {}
    )
    camera = replay_config(base, str(demo_clip), "fast", None).cameras["gate"]
    assert camera.record is None, "a file is its own recording"
    assert camera.keywords == ["help"] and camera.source == str(demo_clip.resolve())
