"""Real damage to an SQLite file: one of a table's pages overwritten with junk on disk, as a failing
card or a torn write leaves it."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def damage_leaf_holding(path: Path, table: str, nth: int) -> None:
    """Overwrite the ``nth`` (0-based, in rowid order) leaf page of ``table`` with junk."""
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        leaves = db.execute(
            "SELECT pageno, ncell FROM dbstat WHERE name = ? AND pagetype = 'leaf' ORDER BY path", (table,)
        ).fetchall()
        page_size = db.execute("PRAGMA page_size").fetchone()[0]
    db.close()
    assert all(ncell == 1 for _, ncell in leaves), "one row a page, so the damage takes exactly one row"
    with path.open("r+b") as handle:
        handle.seek((leaves[nth][0] - 1) * page_size)
        handle.write(b"\xde\xad" * (page_size // 2))
