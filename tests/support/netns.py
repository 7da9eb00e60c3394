"""Two test hosts on one machine: Linux network namespaces joined by a veth pair.

Each host has only its loopback and its end of the veth (``10.X.Y.1`` and ``10.X.Y.2``), so whatever
crosses between them crosses a real network link, which :meth:`HostPair.cut` takes down
(``ip link set ... down``) and :meth:`HostPair.restore` brings back. Processes start inside a host
with ``ip netns exec``; :meth:`Host.call` runs a function on a thread that has entered the host's
namespace, so sockets it opens (a webhook receiver, an HTTP scrape) live on that host.

Needs root (CAP_NET_ADMIN) and iproute2, which ``make test`` installs.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import threading
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

T = TypeVar("T")
CLONE_NEWNET = 0x40000000


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True)


def _enter(namespace: str) -> None:
    """Move the calling thread (only) into ``namespace``."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/var/run/netns/{namespace}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"setns into {namespace}: {os.strerror(errno)}")
    finally:
        os.close(fd)


@dataclass
class Host:
    namespace: str
    address: str
    device: str
    processes: list[subprocess.Popen[str]] = field(default_factory=list)

    def popen(self, argv: list[str], **kwargs: Any) -> subprocess.Popen[str]:
        """Start ``argv`` on this host (stdout and stderr merged into a pipe unless given)."""
        kwargs.setdefault("stdout", subprocess.PIPE)
        kwargs.setdefault("stderr", subprocess.STDOUT)
        process = subprocess.Popen(["ip", "netns", "exec", self.namespace, *argv], text=True, **kwargs)
        self.processes.append(process)
        return process

    def call(self, function: Callable[[], T]) -> T:
        """``function()`` on a thread inside this host's namespace; sockets it creates stay there."""
        result: list[T] = []
        errors: list[BaseException] = []

        def inside() -> None:
            try:
                _enter(self.namespace)
                result.append(function())
            except BaseException as exc:
                errors.append(exc)

        thread = threading.Thread(target=inside, name=f"in-{self.namespace}")
        thread.start()
        thread.join()
        if errors:
            raise errors[0]
        return result[0]

    def fetch(self, url: str, timeout_s: float = 2.0) -> str:
        """GET ``url`` from this host."""

        def get() -> str:
            with urllib.request.urlopen(url, timeout=timeout_s) as response:
                return str(response.read().decode())

        return self.call(get)

    def stop_processes(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(5)


class HostPair:
    """``with HostPair() as hosts: hosts.a ... hosts.b``: two namespaces, one veth link between them."""

    def __init__(self, tag: str | None = None) -> None:
        suffix = tag or f"{os.getpid() % 100000}"
        subnet = 1 + os.getpid() % 250
        self.a = Host(f"vigil-a-{suffix}", f"10.213.{subnet}.1", f"vga{suffix}"[:15])
        self.b = Host(f"vigil-b-{suffix}", f"10.213.{subnet}.2", f"vgb{suffix}"[:15])

    def __enter__(self) -> HostPair:
        self._teardown()  # a namespace left over from an interrupted run
        try:
            for host in (self.a, self.b):
                _ip("netns", "add", host.namespace)
                _ip("-n", host.namespace, "link", "set", "lo", "up")
            _ip("link", "add", self.a.device, "type", "veth", "peer", "name", self.b.device)
            for host in (self.a, self.b):
                _ip("link", "set", host.device, "netns", host.namespace)
                _ip("-n", host.namespace, "addr", "add", f"{host.address}/24", "dev", host.device)
                _ip("-n", host.namespace, "link", "set", host.device, "up")
        except BaseException:
            self._teardown()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for host in (self.a, self.b):
            host.stop_processes()
        self._teardown()

    def cut(self) -> None:
        """Take the link down (both ends lose carrier)."""
        _ip("-n", self.a.namespace, "link", "set", self.a.device, "down")

    def restore(self) -> None:
        _ip("-n", self.a.namespace, "link", "set", self.a.device, "up")

    def _teardown(self) -> None:
        for host in (self.a, self.b):
            subprocess.run(["ip", "netns", "del", host.namespace], capture_output=True)
        subprocess.run(["ip", "link", "del", self.a.device], capture_output=True)
