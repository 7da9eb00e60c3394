"""CURVE keys and the settings every tcp link gets.

``run.py keys generate`` writes a key pair in ZeroMQ's certificate format (``NAME.key`` public,
``NAME.key_secret`` secret, mode 0600). Listening stages share the server pair; each connecting host
has a client pair, and a listening stage accepts only the clients whose public keys it was given.
A client with another key gets nothing: the handshake fails before any message passes, and the
refusal is logged with the peer's address and public key (never a secret).

ipc:// links on one host are left as they are: the socket file's permissions guard them.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from pipeline.network import CurveConfig, NetworkConfig

logger = logging.getLogger(__name__)

ZAP_DOMAIN = "vigil"
DENIAL_LOG_EVERY_S = 60.0
# Kernel buffers as small as ipc's, so what waits between two stages is the configured queue (a few
# frames), not megabytes of stale frames in TCP's autotuned buffers.
TCP_BUFFER_BYTES = 1 << 20


class KeyFileError(ValueError):
    """A CURVE key that cannot be read, or is missing where it is needed."""


def generate_keys(folder: str | Path, name: str, *, overwrite: bool = False) -> tuple[Path, Path]:
    """Write ``folder/name.key`` and ``folder/name.key_secret``; refuses to overwrite unless asked."""
    base = Path(folder)
    public, secret = base / f"{name}.key", base / f"{name}.key_secret"
    if not overwrite and (public.exists() or secret.exists()):
        raise FileExistsError(f"{public} or {secret} already exists (use --force to replace the pair)")
    base.mkdir(parents=True, exist_ok=True)
    for path in (public, secret):
        path.unlink(missing_ok=True)
    old_umask = os.umask(0o077)  # the secret is never readable by others, not even for a moment
    try:
        public_path, secret_path = zmq.auth.create_certificates(str(base), name)
    finally:
        os.umask(old_umask)
    os.chmod(public_path, 0o644)
    return Path(public_path), Path(secret_path)


def _read_certificate(path: str, want_secret: bool, what: str) -> tuple[bytes, bytes | None]:
    try:
        public, secret = zmq.auth.load_certificate(path)
    except (OSError, ValueError) as exc:
        raise KeyFileError(f"{what}: cannot read key file {path}: {exc}") from None
    if want_secret and not secret:
        raise KeyFileError(f"{what}: {path} holds no secret key (give the NAME.key_secret file)")
    return public, secret


def _secret_from_env(name: str, environ: Mapping[str, str], what: str) -> tuple[bytes, bytes]:
    value = environ.get(name, "").strip()
    if not value:
        raise KeyFileError(f"{what}: environment variable {name} is not set")
    try:
        secret = value.encode("ascii")
        return zmq.curve_public(secret), secret
    except (ValueError, zmq.ZMQError, UnicodeEncodeError):
        raise KeyFileError(f"{what}: {name} does not hold a Z85 secret key (40 characters)") from None


def _secret_pair(curve: CurveConfig, role: str, environ: Mapping[str, str]) -> tuple[bytes, bytes] | None:
    what = f"network.curve.{role}"
    path, env = getattr(curve, f"{role}_file"), getattr(curve, f"{role}_env")
    if path:
        public, secret = _read_certificate(path, True, what)
        assert secret is not None
        return public, secret
    if env:
        return _secret_from_env(env, environ, what)
    return None


def _allowed_clients(curve: CurveConfig, environ: Mapping[str, str]) -> frozenset[bytes] | None:
    if curve.allowed_clients_dir:
        folder = Path(curve.allowed_clients_dir)
        if not folder.is_dir():
            raise KeyFileError(f"network.curve.allowed_clients_dir: {folder} is not a folder")
        keys = {_read_certificate(str(path), False, "allowed client")[0] for path in sorted(folder.glob("*.key"))}
        if not keys:
            raise KeyFileError(f"network.curve.allowed_clients_dir: {folder} holds no public key files (*.key)")
        return frozenset(keys)
    if curve.allowed_clients_env:
        raw = environ.get(curve.allowed_clients_env, "")
        keys = {part.strip().encode("ascii") for part in raw.split(",") if part.strip()}
        if not keys:
            raise KeyFileError(f"network.curve.allowed_clients_env: {curve.allowed_clients_env} is empty or not set")
        bad = [key for key in keys if len(key) != 40]
        if bad:
            raise KeyFileError(f"network.curve.allowed_clients_env: {len(bad)} entries are not 40-character Z85 keys")
        return frozenset(keys)
    return None


@dataclass(frozen=True)
class CurveKeys:
    """The keys one host holds; public keys in Z85."""

    server_public: bytes
    server_secret: bytes | None
    client_public: bytes | None
    client_secret: bytes | None
    allowed_clients: frozenset[bytes] | None

    @classmethod
    def load(
        cls,
        curve: CurveConfig,
        environ: Mapping[str, str] | None = None,
        *,
        binds: bool = True,
        connects: bool = True,
    ) -> CurveKeys:
        """The keys this host's role needs: a host that only connects never reads the server secret
        or the allowed clients, and one that only listens never reads a client secret (a shared
        config names them all; each host holds only its own)."""
        env = os.environ if environ is None else environ
        server_public, _ = _read_certificate(curve.server_public_key_file, False, "network.curve.server_public_key")
        server = _secret_pair(curve, "server_secret_key", env) if binds else None
        if server is not None and server[0] != server_public:
            raise KeyFileError("network.curve: the server secret key does not belong to server_public_key_file")
        client = _secret_pair(curve, "client_secret_key", env) if connects else None
        return cls(
            server_public=server_public,
            server_secret=server[1] if server else None,
            client_public=client[0] if client else None,
            client_secret=client[1] if client else None,
            allowed_clients=_allowed_clients(curve, env) if binds else None,
        )

    def missing_for(self, *, binds: bool, connects: bool) -> list[str]:
        """What this host lacks to bind and/or connect over tcp."""
        missing = []
        if binds and self.server_secret is None:
            missing.append("server_secret_key_file or server_secret_key_env (this host listens on tcp)")
        if binds and self.allowed_clients is None:
            missing.append("allowed_clients_dir or allowed_clients_env (this host listens on tcp)")
        if connects and self.client_secret is None:
            missing.append("client_secret_key_file or client_secret_key_env (this host connects over tcp)")
        return missing


class _Gatekeeper(ThreadAuthenticator):
    """ZAP handler that admits only the allowed client keys and logs each refusal once a minute
    per peer (address and public key; a CURVE client never sends its secret)."""

    def __init__(self, context: zmq.Context, allowed: frozenset[bytes]) -> None:
        super().__init__(context, log=logging.getLogger(f"{__name__}.zap"))
        self._allowed_keys = allowed
        self._peer_address = "?"
        self._last_logged: dict[tuple[str, bytes], float] = {}
        self.denied = 0

    async def handle_zap_message(self, msg: list[bytes]) -> None:
        if len(msg) >= 4:
            self._peer_address = msg[3].decode("utf-8", "replace")
        await super().handle_zap_message(msg)

    async def _authenticate_curve(self, domain: str, client_key: bytes) -> tuple[bool, bytes]:
        key = zmq.utils.z85.encode(client_key)
        if key in self._allowed_keys:
            return True, b"OK"
        self.denied += 1
        now = time.monotonic()
        seen = (self._peer_address, key)
        if now - self._last_logged.get(seen, -DENIAL_LOG_EVERY_S) >= DENIAL_LOG_EVERY_S:
            self._last_logged[seen] = now
            logger.warning(
                "refused a tcp peer at %s: its public key %s is not an allowed client",
                self._peer_address,
                key.decode("ascii"),
            )
        return False, b"unknown key"


class TcpLinks:
    """Applied to every socket before it binds or connects: ipc is left alone; tcp gets heartbeats,
    fast reconnects and, when keys are configured, CURVE (server on the binding side)."""

    def __init__(self, context: zmq.Context, network: NetworkConfig, keys: CurveKeys | None) -> None:
        self._context = context
        self._network = network
        self._keys = keys
        self._gate: _Gatekeeper | None = None

    @classmethod
    def from_config(
        cls,
        context: zmq.Context,
        network: NetworkConfig,
        environ: Mapping[str, str] | None = None,
        *,
        binds: bool = True,
        connects: bool = True,
    ) -> TcpLinks:
        keys = None
        if network.curve is not None and (binds or connects):
            keys = CurveKeys.load(network.curve, environ, binds=binds, connects=connects)
        return cls(context, network, keys)

    @property
    def denied(self) -> int:
        return self._gate.denied if self._gate is not None else 0

    def before_bind(self, socket: zmq.Socket[Any], endpoint: str) -> None:
        if not endpoint.startswith("tcp://"):
            return
        self._tune(socket)
        if self._keys is None:
            return
        if self._keys.server_secret is None or self._keys.allowed_clients is None:
            missing = "; ".join(self._keys.missing_for(binds=True, connects=False))
            raise KeyFileError(f"cannot listen on {endpoint}: network.curve lacks {missing}")
        if self._gate is None:
            self._gate = _Gatekeeper(self._context, self._keys.allowed_clients)
            self._gate.start()
        socket.setsockopt(zmq.ZAP_DOMAIN, ZAP_DOMAIN.encode())
        socket.curve_secretkey = self._keys.server_secret
        socket.curve_publickey = self._keys.server_public
        socket.curve_server = True

    def before_connect(self, socket: zmq.Socket[Any], endpoint: str) -> None:
        if not endpoint.startswith("tcp://"):
            return
        self._tune(socket)
        if self._keys is None:
            return
        if self._keys.client_secret is None or self._keys.client_public is None:
            missing = "; ".join(self._keys.missing_for(binds=False, connects=True))
            raise KeyFileError(f"cannot connect to {endpoint}: network.curve lacks {missing}")
        socket.curve_serverkey = self._keys.server_public
        socket.curve_publickey = self._keys.client_public
        socket.curve_secretkey = self._keys.client_secret

    def _tune(self, socket: zmq.Socket[Any]) -> None:
        """Bounded kernel buffers; TCP keepalives and a retransmission limit (TCP_USER_TIMEOUT) to
        notice a dead link. ZeroMQ heartbeats are not used: a receiver that is busy (backpressure)
        stops reading them and would be taken for dead, losing what was queued."""
        net = self._network
        probe_s = max(1, round(net.keepalive_s))
        socket.setsockopt(zmq.TCP_KEEPALIVE, 1)
        socket.setsockopt(zmq.TCP_KEEPALIVE_IDLE, probe_s)
        socket.setsockopt(zmq.TCP_KEEPALIVE_INTVL, probe_s)
        socket.setsockopt(zmq.TCP_KEEPALIVE_CNT, max(1, math.ceil(net.peer_timeout_s / probe_s)))
        socket.setsockopt(zmq.TCP_MAXRT, int(net.peer_timeout_s * 1000))
        socket.setsockopt(zmq.SNDBUF, TCP_BUFFER_BYTES)
        socket.setsockopt(zmq.RCVBUF, TCP_BUFFER_BYTES)
        socket.setsockopt(zmq.RECONNECT_IVL, 100)
        socket.setsockopt(zmq.RECONNECT_IVL_MAX, int(net.reconnect_max_s * 1000))
        socket.setsockopt(zmq.CONNECT_TIMEOUT, int(max(net.reconnect_max_s, 1.0) * 1000))

    def close(self) -> None:
        if self._gate is not None:
            self._gate.stop()
            self._gate = None
