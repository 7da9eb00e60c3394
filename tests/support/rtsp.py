"""Start, kill, restart and stall the test RTSP server (tests/support/rtsp_serve.py) on a loopback port.

``RtspServer`` plays the part of one or more IP cameras: ``mounts=N`` serves the file at N independent
mount points (``url_for(0)`` is ``MOUNT``, ``url_for(i)`` is ``MOUNT{i}``: ``/cam``, ``/cam1`` ...);
``user``/``password`` make every mount require RTSP basic authentication; ``kill()`` is a camera
losing power, ``restart()`` brings it back on the same port, ``stall()``/``resume()`` freeze and thaw
it with its TCP connections still open; ``connections`` counts the connections clients made (one per
TCP connection the server accepted, so a client that retries shows up once per try). Each client
gets the clip from its start, on every mount. The file may be an MP4 or an MPEG-TS (``container``,
found from the file by default), with or without an audio track.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import IO, Literal

import av

from tests.support.ports import free_port

SERVE = Path(__file__).with_name("rtsp_serve.py")
SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's, which has the GStreamer bindings (python3-gi)
USER_ENV = "VIGIL_TEST_RTSP_USER"  # rtsp_serve.py reads the credentials from these, not from argv (ps shows argv)
PASSWORD_ENV = "VIGIL_TEST_RTSP_PASSWORD"
Container = Literal["mp4", "ts"]
START_TIMEOUT_S = 15.0  # python + GStreamer start, plus rtsp_serve.py's bind retries after a restart


def media_args(media: Path, container: Container | None = None) -> list[str]:
    """rtsp_serve.py's ``--container`` and ``--no-audio`` for ``media``: whether it has an audio track,
    and (unless ``container`` says) whether it is MPEG-TS, read from the file with PyAV."""
    with av.open(str(media)) as probe:
        kind = container or ("ts" if probe.format.name == "mpegts" else "mp4")
        has_audio = bool(probe.streams.audio)
    args = ["--container", kind]
    return args if has_audio else [*args, "--no-audio"]


class RtspServer:
    """The test RTSP server as a child process; a context manager that starts it and kills it on exit."""

    def __init__(
        self,
        media: Path,
        mount: str = "/cam",
        *,
        mounts: int = 1,
        user: str | None = None,
        password: str | None = None,
        port: int | None = None,
        container: Container | None = None,
    ) -> None:
        if (user is None) != (password is None):
            raise ValueError("give both user and password, or neither")
        if mounts < 1:
            raise ValueError("mounts must be at least 1")
        self.media = media
        self.mount = mount
        self.mounts = mounts
        self.user = user
        self.password = password
        self.port = port if port is not None else free_port()
        self.container = container  # None: MPEG-TS if PyAV says the file is, else MP4
        self._process: subprocess.Popen[str] | None = None
        self._stalled = False
        self._connections = 0
        self._lock = threading.Lock()
        self._stderr: deque[str] = deque(maxlen=50)

    # -- addresses ---------------------------------------------------------------------------------

    def mount_path(self, i: int = 0) -> str:
        """The path of mount ``i``: ``mount`` for 0, ``mount`` followed by ``i`` for the others."""
        if not 0 <= i < self.mounts:
            raise IndexError(f"mount {i} of {self.mounts}")
        return self.mount if i == 0 else f"{self.mount}{i}"

    def url_for(self, i: int) -> str:
        """Mount ``i``'s URL, without credentials."""
        return f"rtsp://127.0.0.1:{self.port}{self.mount_path(i)}"

    @property
    def url(self) -> str:
        """Mount 0's URL, without credentials."""
        return self.url_for(0)

    def url_with(self, user: str, password: str, i: int = 0) -> str:
        """Mount ``i``'s URL carrying ``user:password`` (right or wrong ones) for basic authentication."""
        return f"rtsp://{user}:{password}@127.0.0.1:{self.port}{self.mount_path(i)}"

    # -- what the server saw -----------------------------------------------------------------------

    @property
    def connections(self) -> int:
        """How many TCP connections the server accepted, over every start of this server."""
        with self._lock:
            return self._connections

    @property
    def running(self) -> bool:
        """Whether the server process is alive (stalled counts as alive)."""
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        """The server process's id, while it runs."""
        return self._process.pid if self._process is not None else None

    @property
    def stderr_tail(self) -> str:
        """The server's last lines of stderr (GStreamer warnings), for failure messages."""
        with self._lock:
            return "".join(self._stderr)

    # -- life cycle --------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the server and wait until it listens (its ``ready`` line)."""
        if self.running:
            raise RuntimeError("the RTSP server is already running")
        process = subprocess.Popen(
            self._command(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=self._env()
        )
        assert process.stdout is not None and process.stderr is not None
        self._process = process
        self._stalled = False
        stderr_reader = self._spawn(self._drain_stderr, process.stderr)
        line = self._first_line(process.stdout)
        self._spawn(self._count_clients, process.stdout)
        if line != "ready":
            self.kill()
            stderr_reader.join(1)  # for the server's last words
            raise RuntimeError(f"the RTSP server did not start: {line!r}\n{self.stderr_tail}")

    def kill(self) -> None:
        """SIGKILL the server, like a camera losing power: its connections drop without an RTSP goodbye."""
        process, self._process = self._process, None
        if process is None:
            return
        if self._stalled:
            process.send_signal(signal.SIGCONT)
            self._stalled = False
        process.kill()
        process.wait(5)

    stop = kill

    def restart(self) -> None:
        """Kill the server if it runs and start it again on the same port."""
        self.kill()
        self.start()

    def stall(self) -> None:
        """SIGSTOP the server: clients' TCP connections stay open, but nothing more comes or gets answered."""
        self._signal(signal.SIGSTOP)
        self._stalled = True

    def resume(self) -> None:
        """SIGCONT a stalled server."""
        self._signal(signal.SIGCONT)
        self._stalled = False

    def __enter__(self) -> RtspServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.kill()

    # -- helpers -----------------------------------------------------------------------------------

    def _command(self) -> list[str]:
        """rtsp_serve.py's command line (no credentials: those go through the environment)."""
        args = [str(self.media), str(self.port), "--mount", self.mount, "--mounts", str(self.mounts)]
        return [SYSTEM_PYTHON, str(SERVE), *args, *media_args(self.media, self.container)]

    def _env(self) -> dict[str, str]:
        """This process's environment, plus the credentials when the server requires them."""
        env = {k: v for k, v in os.environ.items() if k not in (USER_ENV, PASSWORD_ENV)}
        if self.user is not None and self.password is not None:
            env[USER_ENV], env[PASSWORD_ENV] = self.user, self.password
        return env

    def _signal(self, signum: int) -> None:
        """Send ``signum`` to the running server."""
        if self._process is None:
            raise RuntimeError("the RTSP server is not running")
        self._process.send_signal(signum)

    @staticmethod
    def _spawn(target: Callable[[IO[str]], None], stream: IO[str]) -> threading.Thread:
        """Read ``stream`` with ``target`` in a daemon thread (it ends when the server's pipe closes)."""
        thread = threading.Thread(target=target, args=(stream,), daemon=True)
        thread.start()
        return thread

    @staticmethod
    def _first_line(stdout: IO[str]) -> str:
        """The server's first line of stdout, or ``''`` if it exits or says nothing for START_TIMEOUT_S."""
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.append(stdout.readline()), daemon=True)
        reader.start()
        reader.join(START_TIMEOUT_S)
        return lines[0].strip() if lines else ""

    def _count_clients(self, stdout: IO[str]) -> None:
        """Count the server's ``client`` lines, one per connection, until the server exits."""
        with stdout:
            for line in stdout:
                if line.strip() == "client":
                    with self._lock:
                        self._connections += 1

    def _drain_stderr(self, stderr: IO[str]) -> None:
        """Keep the server's last lines of stderr, so a chatty GStreamer never fills the pipe and blocks."""
        with stderr:
            for line in stderr:
                with self._lock:
                    self._stderr.append(line)
