from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipeline.config import ConfigError, DetectConfig, load_config, parse_config, redact

ROOT = Path(__file__).resolve().parents[2]

GOOD = """\
cameras:
  lobby:
    source: clip.mp4
    zones:
      door:
        polygon: [[0.1, 0.5], [0.4, 0.5], [0.4, 1.0]]
"""


def problems_of(text: str, environ: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        parse_config(text, "site.yaml", environ or {})
    return caught.value.problems


def test_shipped_demo_config_is_valid_and_points_at_the_shipped_clip():
    config = load_config(ROOT / "configs" / "demo.yaml")
    assert Path(config.cameras["plaza"].source) == ROOT / "media" / "demo.mp4"
    assert config.stages.detect.model == "yolov3-tiny-coco"


def test_example_config_is_valid_once_its_secrets_are_in_the_environment():
    environ = {"LOBBY_PASSWORD": "pw", "PARKING_PASSWORD": "pw2", "WEBHOOK_SECRET": "s"}
    config = load_config(ROOT / "configs" / "example.yaml", environ)
    assert config.cameras["lobby"].source == "rtsp://viewer:pw@192.0.2.10:554/stream1"
    assert config.alerts.webhooks[0].secret(environ) == "s"


def test_missing_environment_variable_is_named():
    text = GOOD.replace("clip.mp4", "rtsp://u:${CAM_PW}@host/s")
    assert problems_of(text) == ["site.yaml: environment variable(s) not set: CAM_PW"]


def test_unknown_key_names_file_line_and_field():
    text = GOOD + "    colour: red\n"
    assert problems_of(text) == ["site.yaml:7: cameras.lobby.colour: unknown key (not a vigil setting)"]


@pytest.mark.parametrize(("written", "meant"), [("off", "off"), ("on", "on"), ("'off'", "off"), ("auto", "auto")])
def test_compute_lock_on_or_off_unquoted_means_the_word_not_a_yaml_boolean(written: str, meant: str) -> None:
    config = parse_config(GOOD + f"runtime:\n  compute_lock: {written}\n", "site.yaml", {})
    assert config.runtime.compute_lock == meant


def test_polygon_with_two_points_is_refused_with_its_line():
    text = GOOD.replace("[[0.1, 0.5], [0.4, 0.5], [0.4, 1.0]]", "[[0.1, 0.5], [0.4, 0.5]]")
    (problem,) = problems_of(text)
    assert problem.startswith("site.yaml:6: cameras.lobby.zones.door.polygon:")
    assert "at least 3 points, got 2" in problem


LINE = """\
    lines:
      gate:
        points: [[0.2, 0.6], [0.8, 0.6]]
"""


MASKS = """\
    masks:
      screen:
        polygon: [[0.6, 0.1], [0.9, 0.1], [0.9, 0.4]]
        classes: [person]
    objects:
      person: {min_confidence: 0.5, min_area: 0.002}
      car: {max_area: 0.5}
"""


def test_masks_and_object_filters_are_read():
    config = parse_config(GOOD + MASKS, "site.yaml", {})
    lobby = config.cameras["lobby"]
    assert lobby.masks["screen"].polygon == [(0.6, 0.1), (0.9, 0.1), (0.9, 0.4)] and lobby.masks["screen"].classes == [
        "person"
    ]
    assert (lobby.objects["person"].min_confidence, lobby.objects["person"].min_area) == (0.5, 0.002)
    assert (lobby.objects["car"].min_area, lobby.objects["car"].max_area) == (0.0, 0.5)


def test_a_mask_of_two_points_and_a_size_range_that_admits_nothing_are_refused_with_their_lines():
    text = GOOD + MASKS.replace("[0.9, 0.1], [0.9, 0.4]]", "[0.9, 0.1]]").replace(
        "{max_area: 0.5}", "{min_area: 0.5, max_area: 0.1}"
    )
    mask, car = problems_of(text)
    assert mask.startswith("site.yaml:9: cameras.lobby.masks.screen.polygon:") and "at least 3 points, got 2" in mask
    assert (
        car.startswith("site.yaml:13: cameras.lobby.objects.car:")
        and "min_area (0.5) must be below max_area (0.1)" in car
    )


def test_a_line_and_a_loitering_zone_are_read():
    text = GOOD + "        dwell_s: 30\n        dwell_of: object\n" + LINE + "        direction: up\n"
    camera = parse_config(text, "site.yaml", {}).cameras["lobby"]
    assert camera.zones["door"].dwell_of == "object"
    assert camera.lines["gate"].points == [(0.2, 0.6), (0.8, 0.6)]
    assert camera.lines["gate"].direction == "up" and camera.lines["gate"].classes == ["person"]


@pytest.mark.parametrize(
    ("points", "says"),
    [
        ("[[0.2, 0.6]]", "exactly 2 points, got 1"),
        ("[[0.2, 0.6], [0.5, 0.6], [0.8, 0.6]]", "exactly 2 points, got 3"),
        ("[[0.2, 0.6], [0.2, 0.6]]", "(nearly) the same"),
    ],
)
def test_a_line_that_is_not_two_distinct_points_is_refused_with_its_line(points: str, says: str) -> None:
    (problem,) = problems_of(GOOD + LINE.replace("[[0.2, 0.6], [0.8, 0.6]]", points))
    assert problem.startswith("site.yaml:9: cameras.lobby.lines.gate.points:")
    assert says in problem


def test_a_line_across_the_picture_cannot_be_crossed_left():
    (problem,) = problems_of(GOOD + LINE + "        direction: left\n")
    assert problem.startswith("site.yaml:8: cameras.lobby.lines.gate:")
    assert "a line running across the picture is crossed up or down, not 'left'" in problem


def test_an_unknown_line_direction_or_dwell_kind_is_refused():
    problems = problems_of(GOOD + "        dwell_of: person\n" + LINE + "        direction: inwards\n")
    fields = [p.split(": ")[1] for p in problems]
    assert fields == ["cameras.lobby.zones.door.dwell_of", "cameras.lobby.lines.gate.direction"]


def test_armed_schedules_a_recording_s_start_and_a_time_zone_are_read():
    text = GOOD.replace("    zones:", "    recorded_at: 2026-11-28 21:59:40\n    zones:")
    text += '        armed: ["22:00-06:00"]\n' + LINE + '        armed: ["mon-fri 08:00-18:00"]\n'
    config = parse_config(text + "runtime:\n  timezone: Europe/Berlin\n", "site.yaml", {})
    camera = config.cameras["lobby"]
    assert camera.zones["door"].armed == ["22:00-06:00"] and camera.lines["gate"].armed == ["mon-fri 08:00-18:00"]
    assert camera.recording_started is not None and camera.recording_started.hour == 21
    assert config.runtime.timezone == "Europe/Berlin"
    (problem,) = problems_of(GOOD.replace("    zones:", "    recorded_at: automatic\n    zones:"))
    assert problem.endswith(
        "cameras.lobby.recorded_at: 'automatic' is neither a date and time ('2026-11-28 21:30:00', "
        "'2026-11-28T21:30:00+01:00') nor auto (read from the file)"
    ), "one message, not one per kind of value the setting takes"


def test_a_camera_s_own_armed_hours_are_read_and_a_bad_window_refused_with_its_line():
    text = GOOD.replace("    zones:", '    armed: ["mon-fri 18:00-07:30"]\n    zones:')
    assert parse_config(text, "site.yaml", {}).cameras["lobby"].armed == ["mon-fri 18:00-07:30"]
    (problem,) = problems_of(text.replace("18:00-07:30", "18:00-31:00"))
    assert problem.startswith("site.yaml:4: cameras.lobby.armed: ")


def test_a_bad_armed_window_and_an_unknown_time_zone_are_refused_with_their_lines():
    text = GOOD + '        armed: ["22:00-6"]\n' + LINE + '        armed: ["weekends 00:00-24:00"]\n'
    problems = problems_of(text + "runtime:\n  timezone: Europe/Berln\n")
    assert problems == [
        "site.yaml:7: cameras.lobby.zones.door.armed: armed window '22:00-6' is not '[DAYS ]HH:MM-HH:MM' "
        "(for example '22:00-06:00' or 'mon-fri 18:00-07:30')",
        "site.yaml:11: cameras.lobby.lines.gate.armed: unknown day 'weekends' in armed window "
        "'weekends 00:00-24:00': use mon, tue, wed, thu, fri, sat, sun",
        "site.yaml:13: runtime.timezone: unknown time zone 'Europe/Berln' (did you mean 'Europe/Berlin' or "
        "'Europe/Belfast' or 'Europe/Helsinki'?)",
    ]


def test_a_live_camera_cannot_claim_a_recording_time():
    (problem,) = problems_of("cameras:\n  lobby:\n    source: rtsp://cam/1\n    recorded_at: 2026-11-28 21:00:00\n")
    assert problem == (
        "site.yaml:2: cameras.lobby: recorded_at is for recorded files: a live camera's frames are timed by the clock"
    )


def test_bad_device_name_is_refused():
    text = GOOD + "stages:\n  detect:\n    device: gpu0\n"
    (problem,) = problems_of(text)
    assert problem.startswith("site.yaml:9: stages.detect.device:")
    assert "unknown device 'gpu0'" in problem


def test_coordinates_outside_the_unit_square_are_refused():
    text = GOOD.replace("[0.4, 1.0]]", "[0.4, 1.5]]")
    (problem,) = problems_of(text)
    assert "cameras.lobby.zones.door.polygon[2][1]" in problem
    assert "less than or equal to 1" in problem


def test_every_problem_is_reported_at_once():
    text = GOOD + "    colour: red\nstages:\n  detect: {device: tpu, batch: 0}\n"
    assert len(problems_of(text)) == 3


def test_invalid_yaml_reports_its_line():
    (problem,) = problems_of("cameras:\n  lobby: [unclosed\n")
    assert problem.startswith("site.yaml:3: invalid YAML")


def test_bad_webhook_url_and_hysteresis_order():
    text = (
        GOOD + "alerts:\n  webhooks: [{url: 'ftp://x'}]\nstages:\n  fuse: {open_threshold: 0.3, close_threshold: 0.5}\n"
    )
    problems = problems_of(text)
    assert any("alerts.webhooks[0].url" in p and "http://" in p for p in problems)
    assert any("stages.fuse" in p and "close_threshold must not exceed open_threshold" in p for p in problems)


def test_missing_config_file_is_one_clear_line(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load_config(tmp_path / "nope.yaml")
    assert caught.value.problems == [f"{tmp_path / 'nope.yaml'}: cannot read config: No such file or directory"]


def test_relative_sources_resolve_against_the_config_folder(tmp_path):
    path = tmp_path / "site.yaml"
    path.write_text(GOOD)
    assert load_config(path, {}).cameras["lobby"].source == str(tmp_path / "clip.mp4")


def test_a_model_file_beside_the_config_resolves_against_its_folder_and_a_name_stays_a_name(tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "best.onnx").write_bytes(b"onnx")
    path = tmp_path / "site.yaml"
    path.write_text(GOOD + "stages:\n  detect: {model: models/best.onnx}\n  transcribe: {model: small.en}\n")
    config = load_config(path, {})
    assert config.stages.detect.model == str(tmp_path / "models" / "best.onnx")
    assert config.stages.transcribe.model == "small.en", "no file of that name beside the config: a name"
    (tmp_path / "models" / "best.onnx").unlink()
    assert load_config(path, {}).stages.detect.model == "models/best.onnx", "left as written (from the working folder)"


def test_redact_hides_passwords_in_urls():
    assert redact("open rtsp://admin:s3cret@10.0.0.1/s failed") == "open rtsp://admin:***@10.0.0.1/s failed"
    assert redact("rtsp://10.0.0.1/s") == "rtsp://10.0.0.1/s"


def test_redact_hides_passwords_with_at_signs_and_in_query_strings():
    assert redact("rtsp://admin:p@ss@10.0.0.1:554/s") == "rtsp://admin:***@10.0.0.1:554/s"
    assert redact("a rtsp://u:x@h/1 and rtsp://v:y@h/2") == "a rtsp://u:***@h/1 and rtsp://v:***@h/2"
    assert redact("http://cam/video?user=a&password=hunter2&fps=5") == "http://cam/video?user=a&password=***&fps=5"


@pytest.mark.parametrize(
    ("source", "problem"),
    [
        ("rtsp://", "no host"),
        ("rtsp://bad host:554/x", "contains a space"),
        ("rtsp://10.0.0.1:99999/x", "port"),
        ("rstp://10.0.0.1/x", "unknown scheme 'rstp'"),
    ],
)
def test_a_malformed_camera_url_is_refused_before_anything_starts(source: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(f"cameras:\n  gate:\n    source: '{source}'\n", "site.yaml")
    [line] = caught.value.problems
    assert line.startswith("site.yaml:3: cameras.gate.source: malformed URL")
    assert problem in line


def test_a_malformed_url_error_does_not_show_the_password() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config("cameras:\n  gate:\n    source: 'rtsp://admin:hunter2@:0/x'\n")
    assert "hunter2" not in str(caught.value) and "admin:***@" in str(caught.value)


def test_decode_reconnect_settings_have_safe_defaults() -> None:
    decode = parse_config("cameras:\n  gate:\n    source: rtsp://10.0.0.1/s\n").stages.decode
    assert decode.reconnect_max_s == 30 and decode.stall_s == 10 and decode.open_timeout_s == 10
    camera = parse_config("cameras:\n  gate:\n    source: rtsp://10.0.0.1/s\n").cameras["gate"]
    assert camera.rtsp_transport == "tcp"


def test_a_decode_timeout_longer_than_the_heartbeat_allows_is_refused() -> None:
    problems = problems_of("cameras:\n  gate:\n    source: rtsp://10.0.0.1/s\nstages:\n  decode:\n    stall_s: 20\n")
    assert problems == [
        "site.yaml:1: <root>: stages.decode.stall_s (20 s) must be below half of runtime.heartbeat_timeout_s "
        "(15 s); raise heartbeat_timeout_s too"
    ]


def test_thread_budgets_left_out_are_chosen_from_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    import pipeline.stage_settings

    monkeypatch.setattr(pipeline.stage_settings, "usable_cores", lambda: 8)
    stages = parse_config("cameras:\n  gate:\n    source: x.mp4\nstages:\n  transcribe: {threads: 3}\n").stages
    assert (stages.decode.threads, stages.detect.threads, stages.transcribe.threads) == (1, 8, 3)
    assert (stages.fuse.threads, stages.alert.threads) == (1, 1)
    monkeypatch.setattr(pipeline.stage_settings, "usable_cores", lambda: 1)
    assert parse_config("cameras:\n  gate:\n    source: x.mp4\n").stages.transcribe.threads == 1


def test_detect_runs_batches_side_by_side_only_in_fast_replay_on_a_cpu_unless_told() -> None:
    def detect(settings: str) -> DetectConfig:
        return parse_config(GOOD + f"stages:\n  detect: {settings}\n", "site.yaml", {}).stages.detect

    auto = detect("{threads: 4}")
    assert (auto.lanes("fast"), auto.lanes("realtime"), auto.lanes("live")) == (4, 1, 1)
    assert detect("{threads: 8}").lanes("fast") == 1, "8 copies of a model is a lot of memory to take unasked"
    assert detect("{threads: 8, parallelism: batches}").lanes("fast") == 8
    assert detect("{threads: 4, parallelism: intra-op}").lanes("fast") == 1
    assert detect("{threads: 4, parallelism: batches}").lanes("live") == 4
    assert detect("{threads: 4, device: 'cuda:0'}").lanes("fast") == 1, "a GPU runs one model"


def test_batch_parallelism_on_a_gpu_is_refused_with_what_to_do_instead() -> None:
    (problem,) = problems_of(GOOD + "stages:\n  detect: {device: 'cuda:0', parallelism: batches}\n")
    assert problem.startswith("site.yaml:8: stages.detect:")
    assert "parallelism 'batches' runs model copies on CPU threads; on cuda:0 use 'auto' or 'intra-op'" in problem


def test_two_alert_files_at_one_path_are_refused_naming_both():
    """The JSON-lines log appended into the SQLite outbox would corrupt it; the two stores would share one lock."""
    text = GOOD + "alerts:\n  log_path: state/a.db\n  outbox_path: ./state/a.db\n  pending_path: state/p.db\n"
    assert problems_of(text) == [
        "site.yaml:9: alerts.outbox_path: the same file as alerts.log_path; each alert file needs its own path"
    ]
    text = GOOD + "alerts:\n  outbox_path: state/a.db\n  pending_path: state/a.db\n"
    assert problems_of(text) == [
        "site.yaml:9: alerts.pending_path: the same file as alerts.outbox_path; each alert file needs its own path"
    ]


def test_a_ca_file_is_for_https_webhooks_only_and_resolves_beside_the_config(tmp_path):
    hook = "alerts:\n  webhooks:\n    - url: {url}\n      ca_file: certs/site-ca.pem\n"
    assert problems_of(GOOD + hook.format(url="http://hooks.example/a")) == [
        "site.yaml:10: alerts.webhooks[0].ca_file: ca_file is for https:// webhooks; this url is not one"
    ]
    (tmp_path / "site.yaml").write_text(GOOD + hook.format(url="https://hooks.example/a"))
    config = load_config(tmp_path / "site.yaml")
    assert config.alerts.webhooks[0].ca_file == str(tmp_path / "certs" / "site-ca.pem")


def test_mqtt_brokers_are_read_with_their_topics_and_port_defaults():
    text = GOOD + (
        "alerts:\n  mqtt:\n"
        "    - {url: 'mqtt://broker.site', topic: 'site/{camera}/{event}'}\n"
        "    - {url: 'mqtts://broker.site', username: vigil, password_env: MQTT_PW, ca_file: certs/ca.pem}\n"
    )
    plain, tls = parse_config(text, "site.yaml", {"MQTT_PW": "x"}).alerts.mqtt
    assert (plain.host, plain.port, plain.tls, plain.topic, plain.qos) == (
        "broker.site",
        1883,
        False,
        "site/{camera}/{event}",
        1,
    )
    assert (tls.port, tls.tls, tls.snapshot_topic, tls.password({"MQTT_PW": "x"})) == (8883, True, None, "x")


@pytest.mark.parametrize(
    ("entry", "problem"),
    [
        (
            "{url: 'tcp://broker:1883'}",
            "alerts.mqtt[0].url: mqtt url must be mqtt://HOST[:PORT] or mqtts://HOST[:PORT]",
        ),
        ("{url: 'mqtt://u:pw@broker'}", "(credentials go in username and password_env)"),
        (
            "{url: 'mqtt://broker', topic: 'vigil/{cam}'}",
            "alerts.mqtt[0].topic: 'vigil/{cam}' names {cam}; a topic may",
        ),
        ("{url: 'mqtt://broker', topic: 'vigil/#'}", "must be non-empty and hold no wildcard (+, #)"),
        ("{url: 'mqtt://broker', state_topic: 'x/{zone}'}", "alerts.mqtt[0].state_topic: 'x/{zone}' names {zone}"),
        ("{url: 'mqtt://broker', qos: 0}", "alerts.mqtt[0].qos:"),
        ("{url: 'mqtt://broker', password: hunter2}", "'password' is not accepted: put it in an environment variable"),
        (
            "{url: 'mqtt://broker', username: v, password_env: UNSET}",
            "environment variable UNSET (the broker password)",
        ),
        ("{url: 'mqtt://broker', ca_file: ca.pem}", "alerts.mqtt[0].ca_file: ca_file is for mqtts:// brokers"),
        (
            "{url: 'mqtt://broker', topic: 'v/{camera}/{event}', home_assistant: {}}",
            "home_assistant: nothing to announce: set a state_topic or snapshot_topic, or a topic without {event}",
        ),
        (
            "{url: 'mqtt://broker', home_assistant: {node_id: 'north site'}}",
            "alerts.mqtt[0].home_assistant.node_id: node_id 'north site' may only hold letters, digits",
        ),
        (
            "{url: 'mqtt://broker', home_assistant: {status_topic: 'vigil/{camera}'}}",
            "alerts.mqtt[0].home_assistant.status_topic: 'vigil/{camera}': a topic without placeholders",
        ),
        (
            "{url: 'mqtt://broker', home_assistant: {discovery_prefix: 'ha/+'}}",
            "alerts.mqtt[0].home_assistant.discovery_prefix: 'ha/+': a topic without placeholders or wildcards",
        ),
    ],
)
def test_a_bad_mqtt_entry_is_refused_with_its_line_and_what_is_wrong(entry, problem):
    (found,) = problems_of(GOOD + f"alerts:\n  mqtt:\n    - {entry}\n")
    assert found.startswith("site.yaml:9:"), found
    assert problem in found, found


def test_the_example_configs_mqtt_block_is_valid_once_uncommented():
    text = (ROOT / "configs" / "example.yaml").read_text()
    block = re.search(r"^  # mqtt:.*?(?=^  \w)", text, re.S | re.M)
    assert block is not None
    uncommented = re.sub(r"^  # ?", "  ", block.group(0), flags=re.M)
    environ = {"LOBBY_PASSWORD": "pw", "PARKING_PASSWORD": "pw2", "WEBHOOK_SECRET": "s", "MQTT_PASSWORD": "m"}
    config = parse_config(text.replace(block.group(0), uncommented), "example.yaml", environ)
    (broker,) = config.alerts.mqtt
    assert (broker.host, broker.port, broker.snapshot_topic) == ("mqtt.example.org", 8883, "vigil/{camera}/snapshot")


def test_a_webhook_or_broker_topic_listed_twice_is_refused_naming_both_entries():
    hooks = "alerts:\n  webhooks:\n    - {url: 'http://h/a?token=t'}\n    - {url: 'http://h/b'}\n    - {url: 'http://h/a?token=t'}\n"
    (problem,) = problems_of(GOOD + hooks)
    assert problem.startswith("site.yaml:8: alerts.webhooks: http://h/a?token=")
    assert "is listed twice (entries 0 and 2); a webhook url may appear once" in problem
    assert "token=t" not in problem
    two_tokens = "alerts:\n  webhooks:\n    - {url: 'http://h/a?token=t1'}\n    - {url: 'http://h/a?token=t2'}\n"
    assert len(parse_config(GOOD + two_tokens, "site.yaml", {}).alerts.webhooks) == 2, "two tokens, two receivers"
    brokers = (
        "alerts:\n  mqtt:\n    - {url: 'mqtt://b'}\n    - {url: 'mqtt://b', topic: other}\n    - {url: 'mqtt://b'}\n"
    )
    (problem,) = problems_of(GOOD + brokers)
    assert "mqtt://b topic vigil/{camera}/alerts is listed twice (entries 0 and 2)" in problem
    twice = "alerts:\n  mqtt:\n    - {url: 'mqtt://b', home_assistant: {}}\n"
    twice += "    - {url: 'mqtt://b', topic: x, home_assistant: {}}\n"
    (problem,) = problems_of(GOOD + twice)
    assert "home_assistant node_id 'vigil' on mqtt://b is listed twice (entries 0 and 1)" in problem
    ids = "alerts:\n  mqtt:\n    - {url: 'mqtt://b', client_id: vigil}\n"
    ids += "    - {url: 'mqtt://b', topic: x, client_id: vigil}\n"
    (problem,) = problems_of(GOOD + ids)
    assert "client_id 'vigil' on mqtt://b is listed twice" in problem


def test_recording_is_for_live_cameras_and_its_folder_resolves_beside_the_config(tmp_path):
    (problem,) = problems_of(GOOD.replace("    zones:", "    record: {folder: rec}\n    zones:"))
    assert problem == "site.yaml:2: cameras.lobby: record is for live cameras: a file is its own recording"
    text = "cameras:\n  gate:\n    source: rtsp://cam.site/stream\n    record: {folder: rec, segment_s: 30}\n"
    (tmp_path / "site.yaml").write_text(text)
    record = load_config(tmp_path / "site.yaml").cameras["gate"].record
    assert (
        record is not None
        and record.folder == str(tmp_path / "rec")
        and (record.segment_s, record.keep_hours) == (30, 24)
    )
