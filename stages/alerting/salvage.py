"""What is left of a damaged alert store: the file set aside under a new name (kept for looking
into), and its rows read one at a time, so a damaged page loses only the rows on it."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

DAMAGED_SQLITE_ERRORS = ("SQLITE_CORRUPT", "SQLITE_NOTADB")


@dataclass(frozen=True)
class Recovered:
    """What a recovery copied out of a damaged store (``rows``: alerts) and how many rows could not
    be read (``unreadable``)."""

    rows: int
    unreadable: int


Recover = Callable[[sqlite3.Connection, sqlite3.Connection], Recovered]


def is_damaged(exc: BaseException) -> bool:
    """Whether an SQLite error says the file itself is damaged (a malformed page, a bad header)."""
    name = getattr(exc, "sqlite_errorname", None) or ""
    return isinstance(exc, sqlite3.DatabaseError) and name.startswith(DAMAGED_SQLITE_ERRORS)


def damage_of(db: sqlite3.Connection) -> str | None:
    """What ``PRAGMA quick_check`` finds wrong with an open store (its first three findings), or None
    when it is sound. Reads the whole file once: done at the owner's open, not on every query."""
    try:
        found = [str(row[0]) for row in db.execute("PRAGMA quick_check(3)")]
    except sqlite3.DatabaseError as exc:
        if is_damaged(exc):
            return str(exc)
        raise
    if found == ["ok"]:
        return None
    lines = [line.strip() for text in found for line in text.splitlines()]
    return "; ".join(line for line in lines if line and not line.startswith("***"))


def set_aside(path: Path) -> Path:
    """Rename a damaged store (with its write-ahead log, which may hold its last commits) to
    ``NAME.damaged-YYYYmmddTHHMMSS`` beside it, so a fresh one can take its place; returns the new path."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    aside = path.with_name(f"{path.name}.damaged-{stamp}")
    n = 1
    while aside.exists():
        n += 1
        aside = path.with_name(f"{path.name}.damaged-{stamp}-{n}")
    for suffix in ("-wal", "-shm"):
        with contextlib.suppress(FileNotFoundError):
            Path(f"{path}{suffix}").rename(f"{aside}{suffix}")
    path.rename(aside)
    return aside


def readable_rows(db: sqlite3.Connection, table: str, columns: str, where: str = "1") -> tuple[list[tuple], int]:
    """The rows of ``table`` that match ``where``, looked up one rowid at a time, and how many rowids
    could not be read. A scan would stop at the first damaged page; lookups step over it."""
    try:
        top = db.execute(f"SELECT MAX(rowid) FROM {table}").fetchone()[0]
    except sqlite3.DatabaseError:
        try:  # the table's last page is damaged: AUTOINCREMENT tables remember their highest rowid
            row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = ?", (table,)).fetchone()
        except sqlite3.DatabaseError:
            row = None
        if row is None:
            return [], 1
        top = row[0]
    rows: list[tuple] = []
    unreadable = 0
    query = f"SELECT {columns} FROM {table} WHERE rowid = ? AND ({where})"
    for rowid in range(1, int(top or 0) + 1):
        try:
            found = db.execute(query, (rowid,)).fetchone()
        except sqlite3.DatabaseError:
            unreadable += 1
            continue
        if found is not None:
            rows.append(tuple(found))
    return rows, unreadable
