"""A real MQTT broker for the tests (Debian's mosquitto) on a loopback port, and a subscriber that
keeps what it receives.

``MqttBroker`` is a context manager: ``users={"name": "password"}`` makes the broker refuse anyone
else (a mosquitto password file), ``tls=trustme.CA()`` makes it an mqtts broker with a certificate
that authority signed, ``kill()`` is the broker going away, ``start()`` brings it back
on the same port. ``Subscriber`` (paho-mqtt) subscribes to ``#`` and keeps every message with its
topic, payload and retain flag.
"""

from __future__ import annotations

import getpass
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import paho.mqtt.client as paho
import trustme
from paho.mqtt.enums import CallbackAPIVersion

from tests.support.ports import free_port

MOSQUITTO = "/usr/sbin/mosquitto"  # Debian's mosquitto package
MOSQUITTO_PASSWD = "/usr/bin/mosquitto_passwd"
START_TIMEOUT_S = 10.0


class MqttBroker:
    def __init__(
        self,
        folder: Path,
        *,
        users: dict[str, str] | None = None,
        port: int | None = None,
        tls: trustme.CA | None = None,
    ) -> None:
        self.folder = folder
        self.port = port or free_port()
        self.url = f"{'mqtts' if tls else 'mqtt'}://127.0.0.1:{self.port}"
        self.log = folder / "mosquitto.log"
        self._process: subprocess.Popen[bytes] | None = None
        folder.mkdir(parents=True, exist_ok=True)
        lines = [f"listener {self.port} 127.0.0.1", "persistence false", "log_dest stderr", "log_type all"]
        lines.append(
            f"user {getpass.getuser()}"
        )  # as root, mosquitto would become 'mosquitto', who cannot read tmp_path
        if users:
            passwords = folder / "passwords"
            for n, (user, password) in enumerate(users.items()):
                create = ["-c"] if n == 0 else []
                subprocess.run([MOSQUITTO_PASSWD, *create, "-b", str(passwords), user, password], check=True)
            lines += ["allow_anonymous false", f"password_file {passwords}"]
        else:
            lines.append("allow_anonymous true")
        if tls is not None:  # a certificate for 127.0.0.1 that ``tls`` signed
            issued = tls.issue_cert("127.0.0.1")
            issued.cert_chain_pems[0].write_to_path(str(folder / "broker.pem"))
            issued.private_key_pem.write_to_path(str(folder / "broker.key"))
            lines += [f"certfile {folder / 'broker.pem'}", f"keyfile {folder / 'broker.key'}"]
        self.config = folder / "mosquitto.conf"
        self.config.write_text("\n".join(lines) + "\n")

    def start(self) -> MqttBroker:
        log = self.log.open("ab")
        self._process = subprocess.Popen([MOSQUITTO, "-c", str(self.config)], stdout=log, stderr=log)
        log.close()
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"mosquitto exited with {self._process.returncode}: {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"mosquitto did not listen on {self.port} within {START_TIMEOUT_S} s")

    def signal(self, number: int) -> None:
        """Send the broker a signal (SIGHUP: reread its config and password file)."""
        if self._process is not None:
            self._process.send_signal(number)

    def kill(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait(timeout=10)
        self._process = None

    def __enter__(self) -> MqttBroker:
        return self.start()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.kill()


@dataclass(frozen=True)
class Received:
    topic: str
    payload: bytes
    retain: bool


class Subscriber:
    """Subscribes to every topic of the broker (as ``user``/``password`` when given) and keeps what
    arrives; a context manager."""

    def __init__(self, broker: MqttBroker, *, user: str | None = None, password: str | None = None) -> None:
        self.messages: list[Received] = []
        self._lock = threading.Condition()
        self._subscribed = threading.Event()
        self._client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"test-subscriber-{broker.port}")
        if user is not None:
            self._client.username_pw_set(user, password)
        self._client.on_connect = lambda client, *_: client.subscribe("#", qos=2)
        self._client.on_subscribe = lambda *_: self._subscribed.set()
        self._client.on_message = self._on_message
        self._broker = broker

    def __enter__(self) -> Subscriber:
        self._client.connect("127.0.0.1", self._broker.port)
        self._client.loop_start()
        if not self._subscribed.wait(10):
            raise RuntimeError("the test subscriber could not subscribe")
        return self

    def __exit__(self, *_: Any) -> None:
        self._client.disconnect()
        self._client.loop_stop()

    def _on_message(self, _client: paho.Client, _userdata: Any, message: paho.MQTTMessage) -> None:
        with self._lock:
            self.messages.append(Received(message.topic, bytes(message.payload), bool(message.retain)))
            self._lock.notify_all()

    def on(self, topic: str) -> list[Received]:
        with self._lock:
            return [m for m in self.messages if m.topic == topic]

    def wait_for(self, count: int, timeout: float = 20.0, topic_prefix: str = "") -> bool:
        """True once ``count`` messages under ``topic_prefix`` have arrived."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while sum(m.topic.startswith(topic_prefix) for m in self.messages) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._lock.wait(left)
        return True
