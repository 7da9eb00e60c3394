"""A receiver that misbehaves at the HTTP level, for faults a well-formed HTTP server cannot make."""

from __future__ import annotations

import contextlib
import socket
import threading


class RudeServer:
    """A real TCP server that reads each request and then answers ``reply`` (nothing: it just
    closes the connection), as a crashing or misbehaving receiver does."""

    def __init__(self, reply: bytes) -> None:
        self.reply = reply
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/hook"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = self.sock.accept()
                with conn:
                    conn.recv(65536)
                    if self.reply:
                        conn.sendall(self.reply)

    def close(self) -> None:
        self.sock.close()
