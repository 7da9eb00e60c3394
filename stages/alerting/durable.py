"""One way to open the SQLite files that hold alerts (fuse's pending store and the sink's outbox),
and the check, before anything starts, that such a file can be made where the config puts it."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path


class StoreOpenError(OSError):
    """An alert store's file (or its folder) cannot be created or opened; restarting cannot help."""


def open_durable(path: Path, schema: str) -> sqlite3.Connection:
    """Open (creating the folder and tables) in WAL mode with full sync, so a commit survives a
    crash and a power loss, autocommit unless a transaction is begun, waiting up to 30 s for a
    writer in another process or thread. Raises StoreOpenError when the file cannot be made."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, timeout=30.0, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
    except (OSError, sqlite3.Error) as exc:
        raise StoreOpenError(f"cannot open {path}: {getattr(exc, 'strerror', None) or exc}") from exc
    db.execute("PRAGMA synchronous=FULL")
    db.execute("PRAGMA busy_timeout=30000")
    db.executescript(schema)
    return db


def writable_problem(path: str | Path) -> str | None:
    """Why a file at ``path`` could not be created and written (nothing is created to find out),
    or None. Permissions are judged by ``os.access``, so a superuser passes where a file system
    still refuses (read-only, /proc); the stage then fails for good with the reason."""
    path = Path(path)
    if path.exists():
        if path.is_dir():
            return f"{path} is a folder, not a file"
        return None if os.access(path, os.R_OK | os.W_OK) else f"{path} is not writable"
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        return f"cannot create {path}: {folder} is a file, not a folder"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"cannot create {path}: {folder} is not writable"
    return None
