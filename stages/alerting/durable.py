"""One way to open the SQLite files that hold alerts (fuse's pending store and the sink's outbox)."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def open_durable(path: Path, schema: str) -> sqlite3.Connection:
    """Open (creating the folder and tables) in WAL mode with full sync, so a commit survives a
    crash and a power loss, autocommit unless a transaction is begun, waiting up to 30 s for a
    writer in another process or thread."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, timeout=30.0, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("PRAGMA busy_timeout=30000")
    db.executescript(schema)
    return db
