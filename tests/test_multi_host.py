"""Stages on two hosts (network namespaces joined by a veth pair) over tcp with CURVE.

Host A runs the decoders (``run.py stage decode``); host B runs detect, transcribe, fuse and alert
(``run.py stage detect transcribe fuse alert``) and the webhook receiver. One config describes both.
"""

from __future__ import annotations

import re
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.receiver import WebhookReceiver
from pipeline.security import generate_keys
from tests.conftest import DEMO_CLIP, ROOT, SECRET, make_config, webhook
from tests.support.clips import looped_clip
from tests.support.netns import Host, HostPair

pytestmark = pytest.mark.slow
PORTS = {"detect": 5601, "transcribe": 5602, "fuse": 5603, "alert": 5604}
METRICS_PORT = 9108
CUT_S = 10.0


def make_keys(folder: Path) -> dict[str, str]:
    """The server pair, one client pair (allowed), and the network.curve section that uses them."""
    generate_keys(folder, "server")
    generate_keys(folder / "clients", "client")
    return {
        "server_public_key_file": str(folder / "server.key"),
        "server_secret_key_file": str(folder / "server.key_secret"),
        "client_secret_key_file": str(folder / "clients" / "client.key_secret"),
        "allowed_clients_dir": str(folder / "clients"),
    }


def write_deployment(tmp_path: Path, clip: Path, central: Host, webhook_url: str, mode: str) -> Path:
    """One config for both hosts: every receiving stage listens on the central host's address."""
    base = make_config(tmp_path, alerts={"webhooks": [webhook(webhook_url)]}).model_dump(mode="json")
    data: dict[str, Any] = {
        "cameras": {"plaza": {**base["cameras"]["plaza"], "source": str(clip)}},
        # the decoders' end-of-file hold (30 s by default) only has to outlast the central host's reading
        # of the few messages still queued at the end: 10 s keeps these tests shorter
        "stages": {"decode": {"end_hold_s": 10}, "detect": {"threads": 1, "batch": 4}, "transcribe": {"threads": 1}},
        "alerts": {key: base["alerts"][key] for key in ("webhooks", "log_path", "outbox_path", "pending_path")},
        "runtime": {"mode": mode, "stop_timeout_s": 8},
        "network": {
            **{stage: {"bind": f"tcp://{central.address}:{port}"} for stage, port in PORTS.items()},
            "curve": make_keys(tmp_path / "keys"),
        },
    }
    path = tmp_path / "deployment.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def start_stages(host: Host, config: Path, names: list[str]) -> Any:
    argv = [sys.executable, str(ROOT / "run.py"), "stage", *names, "--config", str(config)]
    return host.popen([*argv, "--metrics-address", f"{host.address}:{METRICS_PORT}"], cwd=ROOT)


def metric(host: Host, name: str, **labels: str) -> float:
    """Sum of ``name`` over the series matching ``labels`` on ``host``'s /metrics (0 when absent)."""
    try:
        text = host.fetch(f"http://{host.address}:{METRICS_PORT}/metrics")
    except OSError:
        return 0.0
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{name}\{{(.*)\}} (\S+)$", line)
        if match and all(f'{key}="{value}"' in match.group(1) for key, value in labels.items()):
            total += float(match.group(2))
    return total


def start_deployment(hosts: HostPair, config: Path) -> tuple[Any, Any]:
    """The central stages first, then the decoders near the cameras: (central, decode) processes."""
    central = start_stages(hosts.b, config, ["detect", "transcribe", "fuse", "alert"])
    return central, start_stages(hosts.a, config, ["decode"])


def finish(process: Any, timeout_s: float) -> str:
    output, _ = process.communicate(timeout=timeout_s)
    return str(output)


def test_decode_on_one_host_and_the_rest_on_another_deliver_the_demo_alerts(tmp_path):
    with HostPair() as hosts:
        central = hosts.b
        receiver = central.call(lambda: WebhookReceiver(SECRET, host=central.address))
        with receiver:
            config = write_deployment(tmp_path, DEMO_CLIP, central, receiver.url, "fast")
            rest, decode = start_deployment(hosts, config)
            decode_log = finish(decode, 240)
            central_log = finish(rest, 240)
            assert decode.returncode == 0, decode_log
            assert rest.returncode == 0, central_log
            payloads = [d.payload for d in receiver.deliveries]
    assert all(d.signature_valid for d in receiver.deliveries)
    reasons = " ".join(reason for payload in payloads for reason in payload["reasons"])
    assert "zone 'forecourt'" in reasons, reasons
    assert "help" in reasons.lower(), reasons  # the spoken keyword crossed the link as audio
    assert "restart" not in central_log + decode_log


def test_a_link_cut_mid_replay_is_survived_and_alerts_raised_after_it_arrive(tmp_path):
    # 48 s: the keyword at 12 s and again at 42 s, after the link is back (the rest of the second play
    # would only make the test longer)
    clip = looped_clip(DEMO_CLIP, 2, tmp_path / "clips" / "demo-x2.mp4", until_s=48)
    with HostPair() as hosts:
        camera_host, central = hosts.a, hosts.b
        receiver = central.call(lambda: WebhookReceiver(SECRET, host=central.address))
        with receiver:
            config = write_deployment(tmp_path, clip, central, receiver.url, "realtime")
            rest, decode = start_deployment(hosts, config)
            deadline = time.monotonic() + 120
            while metric(central, "vigil_frames_analysed_total", stage="detect") < 10:
                assert time.monotonic() < deadline, "no frames crossed the link"
                time.sleep(0.5)
            hosts.cut()
            time.sleep(CUT_S)
            analysed_before = metric(central, "vigil_frames_analysed_total", stage="detect")
            dropped = metric(camera_host, "vigil_frames_dropped_total", stage="decode")
            restored_at = time.time()
            hosts.restore()
            while metric(central, "vigil_frames_analysed_total", stage="detect") <= analysed_before:
                time.sleep(0.25)
                assert time.time() - restored_at < 15, "frames did not flow again after the link came back"
            flowing_after_s = time.time() - restored_at
            restarts = metric(central, "vigil_stage_restarts_total") + metric(camera_host, "vigil_stage_restarts_total")
            decode_log = finish(decode, 150)
            central_log = finish(rest, 150)
            payloads = [d.payload for d in receiver.deliveries]
    assert decode.returncode == 0, decode_log
    assert rest.returncode == 0, central_log
    assert restarts == 0
    assert dropped > 0, "frames that could not cross the cut link were not counted as dropped"
    assert flowing_after_s <= 5.0, f"frames flowed again {flowing_after_s:.1f} s after the link came back"
    later = [p for p in payloads if p["capture_wall_time"] > restored_at]
    print(f"link cut {CUT_S:.0f} s: {dropped:.0f} frames dropped, frames again after {flowing_after_s:.2f} s")
    assert later, f"no alert raised after the link came back arrived ({len(payloads)} in all)"
