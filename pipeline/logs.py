"""Logging setup shared by the supervisor and every stage process: one format, credentials redacted."""

from __future__ import annotations

import logging
import sys
import time

from pipeline.config import redact


class RedactingFormatter(logging.Formatter):
    """Formats as usual, then hides passwords of URLs (``user:***@``), tracebacks included."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


def configure_logging(instance: str, level: int = logging.INFO) -> None:
    """Log to stderr as ``time LEVEL [instance] logger: message``, with credentials redacted."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(RedactingFormatter(f"%(asctime)s %(levelname)s [{instance}] %(name)s: %(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)


class RateLimited:
    """Says when a repeating problem is due to be logged again: at once the first time, then at most
    once every ``every_s`` seconds until ``reset`` (the problem went away)."""

    def __init__(self, every_s: float) -> None:
        self.every_s = every_s
        self._last: float | None = None

    def due(self) -> bool:
        now = time.monotonic()
        if self._last is not None and now - self._last < self.every_s:
            return False
        self._last = now
        return True

    def reset(self) -> None:
        self._last = None
