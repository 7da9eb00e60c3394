"""Logging setup shared by the supervisor and every stage process: one format, credentials redacted."""

from __future__ import annotations

import logging
import sys

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
