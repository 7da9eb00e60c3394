"""Start and stop the test RTSP server (tests/support/rtsp_serve.py) on a free loopback port."""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.support.ports import free_port

SERVE = Path(__file__).with_name("rtsp_serve.py")
SYSTEM_PYTHON = "/usr/bin/python3"  # Debian's, which has the GStreamer bindings (python3-gi)


class RtspServer:
    def __init__(self, media: Path, mount: str = "/cam") -> None:
        self.media = media
        self.mount = mount
        self.port = free_port()
        self._process: subprocess.Popen[str] | None = None

    @property
    def url(self) -> str:
        return f"rtsp://127.0.0.1:{self.port}{self.mount}"

    def start(self) -> None:
        self._process = subprocess.Popen(
            [SYSTEM_PYTHON, str(SERVE), str(self.media), str(self.port), self.mount],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self._process.stdout is not None
        line = self._process.stdout.readline().strip()
        if line != "ready":
            self.stop()
            raise RuntimeError(f"the RTSP server did not start: {line!r}")

    def stop(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.wait(5)
            self._process = None

    def __enter__(self) -> RtspServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
