"""The config's network section: endpoints per stage, CURVE key sources, refused mistakes."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import ConfigError, load_config, parse_config
from pipeline.transport import Endpoints

BASE = "cameras: {c1: {source: c1.mp4}}\n"
KEYS = "  curve: {server_public_key_file: keys/server.key, server_secret_key_file: keys/server.key_secret}\n"


def problems(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_config(BASE + text, "deploy.yaml")
    return str(caught.value)


def test_tcp_without_curve_keys_is_refused_unless_plaintext_is_asked_for():
    text = "network:\n  detect: {bind: 'tcp://10.0.0.5:5601'}\n"
    assert "tcp endpoints need network.curve keys" in problems(text)
    config = parse_config(BASE + text + "  plaintext_tcp: true\n")
    assert config.network.uses_tcp()


@pytest.mark.parametrize(
    ("endpoint", "message"),
    [
        ("{bind: 'tcp://0.0.0.0:5601'}", "say where peers connect"),
        ("{bind: 'tcp://10.0.0.5'}", "needs a port"),
        ("{bind: 'tcp://:5601'}", "names no host"),
        ("{bind: 'http://detect:5601'}", "is not an endpoint"),
        ("{bind: 'tcp://0.0.0.0:5601', connect: 'tcp://*:5601'}", "is a wildcard"),
        ("{bind: 'tcp://10.0.0.5:5601', port: 3}", "unknown key"),
    ],
)
def test_malformed_endpoints_are_refused_with_the_line(endpoint, message):
    text = f"network:\n  plaintext_tcp: true\n  detect: {endpoint}\n"
    found = problems(text)
    assert message in found
    assert "deploy.yaml:4: network.detect" in found


def test_a_key_written_into_the_config_is_refused():
    inline = "rq:rM>}U?@Lns47E1%kR.o@n%FcmmsL/@{H8]yf7"  # a Z85 key, 40 characters
    text = f"network:\n  curve: {{server_public_key_file: '{inline}'}}\n"
    assert "looks like a key itself" in problems(text)


def test_a_secret_from_both_a_file_and_a_variable_is_refused():
    text = "network:\n  curve: {server_public_key_file: s.key, client_secret_key_file: c, client_secret_key_env: C}\n"
    assert "not both" in problems(text)


def test_endpoints_bind_and_connect_per_stage_with_ipc_for_the_rest(tmp_path):
    text = "network:\n  detect: {bind: 'tcp://0.0.0.0:5601', connect: 'tcp://gpu-1:5601'}\n" + KEYS
    config = parse_config(BASE + text)
    endpoints = Endpoints.for_network(config.network, tmp_path / "ipc", tmp_path / "status")
    assert endpoints.detect == "tcp://gpu-1:5601"
    assert endpoints.bind("detect") == "tcp://0.0.0.0:5601"
    assert endpoints.fuse == endpoints.bind("fuse") == f"ipc://{tmp_path / 'ipc' / 'fuse.sock'}"
    assert endpoints.status == f"ipc://{tmp_path / 'status' / 'status.sock'}"


def test_key_paths_resolve_against_the_config_folder(tmp_path: Path):
    path = tmp_path / "deploy" / "vigil.yaml"
    path.parent.mkdir()
    path.write_text(BASE + "network:\n  detect: {bind: 'tcp://10.0.0.5:5601'}\n" + KEYS)
    curve = load_config(path).network.curve
    assert curve is not None
    assert curve.server_public_key_file == str(tmp_path / "deploy" / "keys" / "server.key")
