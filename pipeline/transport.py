"""ZeroMQ endpoints, sockets and backpressure policies.

Endpoints are plain ZeroMQ address strings (``ipc:///run/vigil/detect.sock``, ``tcp://10.0.0.5:5601``),
so the same code runs on one host or several. Every data path is PUSH (connect) → PULL (bind) with a
bounded high-water mark; what happens when the queue is full is the sender's named policy:

* ``block``: wait until there is room (file replay in fast mode: lossless and deterministic);
* ``drop_oldest``: keep only the newest waiting message and count what was dropped (live cameras).
"""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import zmq

from pipeline.messages import Message, decode, encode
from pipeline.network import DOWNSTREAM, RECEIVING_STAGES, NetworkConfig

logger = logging.getLogger(__name__)

POLL_MS = 100


class Backpressure(enum.Enum):
    BLOCK = "block"
    DROP_OLDEST = "drop_oldest"


class LinkSetup(Protocol):
    """Prepares a socket before it binds or connects (tcp tuning and CURVE: ``pipeline.security``)."""

    def before_bind(self, socket: zmq.Socket[Any], endpoint: str) -> None: ...

    def before_connect(self, socket: zmq.Socket[Any], endpoint: str) -> None: ...


@dataclass(frozen=True)
class Endpoints:
    """Where senders connect to reach each stage (and the supervisor's status socket); a stage binds
    its own input at ``bind(name)``, which differs only where it listens on every interface."""

    detect: str
    transcribe: str
    fuse: str
    alert: str
    status: str
    binds: Mapping[str, str] = field(default_factory=dict)

    def bind(self, stage: str, replica: int = 0) -> str:
        """Where ``stage`` (its replica number ``replica``) binds its input."""
        address: str = self.binds.get(stage) or getattr(self, stage)
        return replica_address(address, replica)

    def connect(self, stage: str, replica: int = 0) -> str:
        """Where senders reach ``stage`` (its replica number ``replica``)."""
        address: str = getattr(self, stage)
        return replica_address(address, replica)

    def tcp_roles(self, stages: set[str]) -> tuple[bool, bool]:
        """Whether ``stages`` (run together on one host) listen on tcp, and whether they connect over it."""
        binds = any(self.bind(stage).startswith("tcp://") for stage in stages if stage in RECEIVING_STAGES)
        connects = any(
            getattr(self, peer).startswith("tcp://") for stage in stages for peer in DOWNSTREAM.get(stage, ())
        )
        return binds, connects

    @classmethod
    def in_folder(cls, folder: str | Path, status_folder: str | Path | None = None) -> Endpoints:
        base = Path(folder)
        return cls(
            detect=f"ipc://{base / 'detect.sock'}",
            transcribe=f"ipc://{base / 'transcribe.sock'}",
            fuse=f"ipc://{base / 'fuse.sock'}",
            alert=f"ipc://{base / 'alert.sock'}",
            status=f"ipc://{Path(status_folder or base) / 'status.sock'}",
        )

    @classmethod
    def for_network(cls, network: NetworkConfig, folder: str | Path, status_folder: str | Path) -> Endpoints:
        """ipc in ``folder`` for every stage the network section leaves out, its addresses for the rest."""
        local = cls.in_folder(folder, status_folder)
        connects: dict[str, str] = {}
        binds: dict[str, str] = {}
        for stage in RECEIVING_STAGES:
            endpoint = network.endpoint(stage)
            connects[stage] = endpoint.address if endpoint else getattr(local, stage)
            binds[stage] = endpoint.bind if endpoint else connects[stage]
        return cls(status=local.status, binds=binds, **connects)


def replica_address(address: str, replica: int) -> str:
    """Replica 0 listens at ``address``; replica k at the next port up (tcp) or ``NAME-k.sock`` (ipc)."""
    if replica == 0:
        return address
    if address.startswith("tcp://"):
        host, _, port = address.rpartition(":")
        return f"{host}:{int(port) + replica}"
    stem, dot, suffix = address.rpartition(".")
    return f"{stem}-{replica}.{suffix}" if dot and "/" not in suffix else f"{address}-{replica}"


def _bind(socket: zmq.Socket[Any], endpoint: str, links: LinkSetup | None) -> None:
    if links is not None:
        links.before_bind(socket, endpoint)
    try:
        socket.bind(endpoint)
    except zmq.ZMQError as exc:
        socket.close(linger=0)
        raise OSError(exc.errno, f"cannot listen on {endpoint}: {exc.strerror}") from None


def _connect(socket: zmq.Socket[Any], endpoint: str, links: LinkSetup | None) -> None:
    if links is not None:
        links.before_connect(socket, endpoint)
    socket.connect(endpoint)


class StopRequestedError(Exception):
    """Raised inside a blocking send when the stage was asked to stop."""


class Sender:
    """A PUSH socket with a backpressure policy; ``drops`` counts messages given up."""

    def __init__(
        self,
        context: zmq.Context,
        endpoint: str,
        *,
        queue: int = 8,
        policy: Backpressure = Backpressure.BLOCK,
        should_stop: Callable[[], bool] = lambda: False,
        links: LinkSetup | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.policy = policy
        self.drops = 0
        self.sent = 0
        self._should_stop = should_stop
        self._pending: list[object] | None = None
        self._socket = context.socket(zmq.PUSH)
        self._socket.setsockopt(zmq.SNDHWM, queue)
        self._socket.setsockopt(zmq.LINGER, 2000)
        _connect(self._socket, endpoint, links)

    def send(self, message: Message) -> bool:
        """Send a data message under the policy; False when it (or an older one) was dropped."""
        parts = encode(message)
        if self.policy is Backpressure.BLOCK:
            self._send_blocking(parts)
            self.sent += 1
            return True
        if self._pending is not None:
            if not self._try_send(self._pending):
                self.drops += 1  # the older waiting message gives way to the newer one
                self._pending = parts
                return False
            self.sent += 1
        self._pending = None
        if self._try_send(parts):
            self.sent += 1
        else:
            self._pending = parts
        return True

    def send_control(self, message: Message) -> None:
        """Send a control message (end of stream): never dropped, after any waiting data message."""
        if self._pending is not None:
            pending, self._pending = self._pending, None
            self._send_blocking(pending)
            self.sent += 1
        self._send_blocking(encode(message))

    def _try_send(self, parts: list[object]) -> bool:
        try:
            self._socket.send_multipart(parts, flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return False
        return True

    def _send_blocking(self, parts: list[object]) -> None:
        while not self._try_send(parts):
            if self._should_stop():
                raise StopRequestedError(f"stopped while waiting to send to {self.endpoint}")
            self._socket.poll(POLL_MS, zmq.POLLOUT)

    def close(self, linger_ms: int = 2000) -> None:
        self._socket.close(linger=linger_ms)


class Outbox:
    """A context of its own for the senders of a stage that ends by itself (a decoder at the end of
    its file). ``deliver_all`` waits until every message sent has been taken by its receiver: the
    process's exit gives queued messages only ``SEND_LINGER_MS`` to leave, and a receiver busy for
    longer (transcribe with the cores taken by the detector) then lost the last audio chunks and the
    end of stream, and fuse waited for them forever."""

    def __init__(self) -> None:
        self.context = zmq.Context()
        self._senders: list[Sender] = []

    def add(self, sender: Sender) -> Sender:
        self._senders.append(sender)
        return sender

    def deliver_all(self, should_stop: Callable[[], bool], poll_s: float = 0.2) -> bool:
        """Close the senders and wait until their receivers took everything (True) or
        ``should_stop()`` says to give up (False; called every ``poll_s`` while waiting)."""
        for sender in self._senders:
            sender.close(linger_ms=-1)
        closing = threading.Thread(target=self.context.term, daemon=True, name="outbox")
        closing.start()
        while closing.is_alive():
            if should_stop():
                return False  # the thread stays blocked in term; the process is about to exit
            closing.join(poll_s)
        return True

    def close(self, linger_ms: int) -> None:
        """Give up on delivery: what is still queued gets ``linger_ms`` to leave."""
        self.context.destroy(linger=linger_ms)


class Receiver:
    """A bound PULL socket that yields decoded messages."""

    def __init__(self, context: zmq.Context, endpoint: str, *, queue: int = 8, links: LinkSetup | None = None) -> None:
        self.endpoint = endpoint
        self._socket = context.socket(zmq.PULL)
        self._socket.setsockopt(zmq.RCVHWM, queue)
        self._socket.setsockopt(zmq.LINGER, 0)
        _bind(self._socket, endpoint, links)

    def recv(self, timeout_ms: int = POLL_MS) -> Message | None:
        """The next message, or None when nothing arrived within ``timeout_ms``."""
        if not self._socket.poll(timeout_ms, zmq.POLLIN):
            return None
        return decode(self._socket.recv_multipart(copy=False))

    def recv_nowait(self) -> Message | None:
        try:
            return decode(self._socket.recv_multipart(flags=zmq.NOBLOCK, copy=False))
        except zmq.Again:
            return None

    def waiting(self) -> bool:
        """Whether a message is waiting to be received."""
        return bool(self._socket.poll(0, zmq.POLLIN))

    def close(self) -> None:
        self._socket.close(linger=0)


class AckedSender:
    """A DEALER socket for at-least-once delivery: ``try_send`` never blocks (False when the queue
    is full or the peer is away; the caller keeps the message and sends it again later), and
    ``recv`` returns the peer's acknowledgements."""

    def __init__(
        self, context: zmq.Context, endpoint: str, *, queue: int = 256, links: LinkSetup | None = None
    ) -> None:
        self.endpoint = endpoint
        self._socket = context.socket(zmq.DEALER)
        self._socket.setsockopt(zmq.SNDHWM, queue)
        self._socket.setsockopt(zmq.LINGER, 0)  # whatever is unacknowledged is kept by the caller
        _connect(self._socket, endpoint, links)

    def try_send(self, message: Message) -> bool:
        try:
            self._socket.send_multipart(encode(message), flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:
            return False
        return True

    def recv(self, timeout_ms: int = 0) -> Message | None:
        if not self._socket.poll(timeout_ms, zmq.POLLIN):
            return None
        return decode(self._socket.recv_multipart(copy=False))

    def close(self) -> None:
        self._socket.close(linger=0)


class AckingReceiver:
    """A bound ROUTER socket: each message arrives with its sender's identity, so it can be
    acknowledged with ``reply`` once it is safe."""

    def __init__(
        self, context: zmq.Context, endpoint: str, *, queue: int = 1024, links: LinkSetup | None = None
    ) -> None:
        self.endpoint = endpoint
        self._socket = context.socket(zmq.ROUTER)
        self._socket.setsockopt(zmq.RCVHWM, queue)
        self._socket.setsockopt(zmq.LINGER, 0)
        _bind(self._socket, endpoint, links)

    def recv(self, timeout_ms: int = POLL_MS) -> tuple[bytes, Message] | None:
        if not self._socket.poll(timeout_ms, zmq.POLLIN):
            return None
        peer, *parts = self._socket.recv_multipart(copy=False)
        return bytes(peer.buffer), decode(parts)

    def reply(self, peer: bytes, message: Message) -> None:
        """Best effort: a sender that went away resends what it has not seen acknowledged."""
        try:
            self._socket.send_multipart([peer, *encode(message)], flags=zmq.NOBLOCK)
        except zmq.Again:
            logger.debug("acknowledgement to a busy peer dropped; it will resend")

    def close(self) -> None:
        self._socket.close(linger=0)


class StatusReporter:
    """Sends Status messages to the supervisor without ever blocking the stage (drops when full)."""

    def __init__(self, context: zmq.Context, endpoint: str) -> None:
        self._lock = threading.Lock()
        self._socket = context.socket(zmq.PUSH)
        self._socket.setsockopt(zmq.SNDHWM, 1000)
        self._socket.setsockopt(zmq.LINGER, 1000)
        self._socket.connect(endpoint)

    def send(self, message: Message) -> None:
        with self._lock:
            try:
                self._socket.send_multipart(encode(message), flags=zmq.NOBLOCK)
            except zmq.Again:
                logger.debug("status queue full; dropped %s", message.kind)

    def close(self) -> None:
        self._socket.close(linger=1000)
