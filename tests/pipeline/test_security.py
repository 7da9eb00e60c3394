"""CURVE keys and tcp links with real ZeroMQ sockets on loopback."""

from __future__ import annotations

import logging
import stat
import time
from pathlib import Path

import pytest
import zmq

from pipeline.messages import Ack, EndOfStream
from pipeline.network import CurveConfig, NetworkConfig
from pipeline.security import CurveKeys, KeyFileError, TcpLinks, generate_keys
from pipeline.transport import AckedSender, AckingReceiver, Receiver, Sender
from tests.support.ports import free_port


@pytest.fixture
def keys(tmp_path: Path) -> Path:
    generate_keys(tmp_path, "server")
    generate_keys(tmp_path / "clients", "client")
    generate_keys(tmp_path / "intruder", "intruder")  # a valid key pair that nobody allowed
    return tmp_path


def curve(folder: Path, client: str = "clients/client") -> CurveConfig:
    return CurveConfig(
        server_public_key_file=str(folder / "server.key"),
        server_secret_key_file=str(folder / "server.key_secret"),
        client_secret_key_file=str(folder / f"{client}.key_secret"),
        allowed_clients_dir=str(folder / "clients"),
    )


def links(context: zmq.Context, config: CurveConfig | None) -> TcpLinks:
    network = NetworkConfig(curve=config, plaintext_tcp=config is None)
    return TcpLinks.from_config(context, network)


def test_generated_secret_key_is_private_and_an_existing_pair_is_not_overwritten(tmp_path):
    public, secret = generate_keys(tmp_path, "host1")
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert "secret-key" not in public.read_text()
    with pytest.raises(FileExistsError, match="already exists"):
        generate_keys(tmp_path, "host1")
    before = secret.read_text()
    generate_keys(tmp_path, "host1", overwrite=True)
    assert secret.read_text() != before


def test_keys_load_from_files_and_from_the_environment(keys):
    from_files = CurveKeys.load(curve(keys))
    secret_line = next(line for line in (keys / "server.key_secret").read_text().splitlines() if "secret-key" in line)
    server_secret = secret_line.split('"')[1]
    from_env = CurveKeys.load(
        CurveConfig(server_public_key_file=str(keys / "server.key"), server_secret_key_env="SRV"),
        environ={"SRV": server_secret},
    )
    assert from_env.server_secret == from_files.server_secret
    assert from_files.allowed_clients == frozenset({from_files.client_public})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"server_public_key_file": "nowhere.key"}, "cannot read key file"),
        ({"server_secret_key_file": "clients/client.key_secret"}, "does not belong to server_public_key_file"),
        ({"client_secret_key_file": "clients/client.key"}, "holds no secret key"),
        ({"allowed_clients_dir": "intruder/nothing-here"}, "is not a folder"),
    ],
)
def test_unusable_keys_are_refused_with_the_reason(keys, change, message):
    settings = curve(keys).model_dump()
    settings.update({name: str(keys / value) for name, value in change.items()})
    with pytest.raises(KeyFileError, match=message):
        CurveKeys.load(CurveConfig(**settings))


def test_a_secret_variable_that_is_unset_is_named(keys):
    config = CurveConfig(server_public_key_file=str(keys / "server.key"), client_secret_key_env="VIGIL_NO_SUCH")
    with pytest.raises(KeyFileError, match="VIGIL_NO_SUCH is not set"):
        CurveKeys.load(config, environ={})


def receive_all(receiver: AckingReceiver, seconds: float) -> list[object]:
    got: list[object] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        item = receiver.recv(timeout_ms=100)
        if item is not None:
            got.append(item[1])
    return got


def test_only_an_allowed_client_key_gets_through_and_a_refusal_is_logged_without_secrets(keys, caplog):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    server_ctx, good_ctx, bad_ctx, plain_ctx = (zmq.Context() for _ in range(4))
    server_links = links(server_ctx, curve(keys))
    receiver = AckingReceiver(server_ctx, endpoint, links=server_links)
    good = AckedSender(good_ctx, endpoint, links=links(good_ctx, curve(keys)))
    intruder = AckedSender(bad_ctx, endpoint, links=links(bad_ctx, curve(keys, "intruder/intruder")))
    plaintext = AckedSender(plain_ctx, endpoint, links=links(plain_ctx, None))
    try:
        with caplog.at_level(logging.WARNING, logger="pipeline.security"):
            # Either may be refused at the send already (False): the server's handshake has dropped
            # its connection, and a sender with no connection queues nothing. Sent or not, nothing
            # of theirs may arrive.
            intruder.try_send(EndOfStream("cam-x", "decode", None))
            plaintext.try_send(EndOfStream("cam-y", "decode", None))
            assert good.try_send(EndOfStream("cam-1", "decode", None))
            got = receive_all(receiver, 3.0)
        assert got == [EndOfStream("cam-1", "decode", None)]
        assert intruder.recv(timeout_ms=500) is None  # and nothing comes back to it either
        refusals = [r.getMessage() for r in caplog.records if "refused a tcp peer" in r.getMessage()]
        intruder_public, intruder_secret = zmq.auth.load_certificate(str(keys / "intruder" / "intruder.key_secret"))
        assert any(intruder_public.decode() in line and "127.0.0.1" in line for line in refusals), refusals
        assert intruder_secret is not None
        assert not any(intruder_secret.decode() in r.getMessage() for r in caplog.records)
        assert server_links.denied >= 1
    finally:
        for socket in (receiver, good, intruder, plaintext):
            socket.close()
        server_links.close()
        for context in (server_ctx, good_ctx, bad_ctx, plain_ctx):
            context.destroy(linger=0)


def test_an_allowed_client_is_acknowledged_over_curve(keys):
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    context = zmq.Context()
    server_links, client_links = links(context, curve(keys)), links(context, curve(keys))
    receiver = AckingReceiver(context, endpoint, links=server_links)
    sender = AckedSender(context, endpoint, links=client_links)
    try:
        assert sender.try_send(EndOfStream("cam-1", "decode", None))
        item = receiver.recv(timeout_ms=5000)
        assert item is not None
        receiver.reply(item[0], Ack(("alert-1",)))
        assert sender.recv(timeout_ms=5000) == Ack(("alert-1",))
    finally:
        sender.close()
        receiver.close()
        server_links.close()
        context.destroy(linger=0)


def test_ipc_links_need_no_keys_even_when_curve_is_configured(keys, tmp_path):
    endpoint = f"ipc://{tmp_path / 'in.sock'}"
    context = zmq.Context()
    server_links = links(context, curve(keys))
    receiver = Receiver(context, endpoint, links=server_links)
    sender = Sender(context, endpoint)  # no links at all: a plain socket
    try:
        sender.send(EndOfStream("cam-1", "decode", None))
        assert receiver.recv(timeout_ms=5000) == EndOfStream("cam-1", "decode", None)
    finally:
        sender.close()
        receiver.close()
        server_links.close()
        context.destroy(linger=0)


def test_a_host_without_the_server_secret_cannot_listen_on_tcp(keys):
    context = zmq.Context()
    client_only = CurveConfig(
        server_public_key_file=str(keys / "server.key"),
        client_secret_key_file=str(keys / "clients" / "client.key_secret"),
    )
    try:
        with pytest.raises(KeyFileError, match="server_secret_key_file or server_secret_key_env"):
            Receiver(context, f"tcp://127.0.0.1:{free_port()}", links=links(context, client_only))
    finally:
        context.destroy(linger=0)


def test_a_host_reads_only_the_keys_of_its_role(keys):
    shared = curve(keys).model_copy(
        update={"server_secret_key_file": str(keys / "not-on-this-host.key_secret"), "allowed_clients_dir": "/nowhere"}
    )
    connecting_only = CurveKeys.load(shared, binds=False, connects=True)  # a decode host
    assert connecting_only.client_secret is not None
    assert connecting_only.server_secret is None
    with pytest.raises(KeyFileError, match="not-on-this-host"):
        CurveKeys.load(shared, binds=True, connects=False)  # a listening host needs it
