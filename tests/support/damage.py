"""Real damage to an SQLite file: one of a table's pages overwritten with junk on disk, as a failing
card or a torn write leaves it, or an index's pages left older than its table's (a lost write)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
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


def lose_index_writes(path: Path, index: str, writes: Callable[[], None]) -> None:
    """Run ``writes`` (which change ``index``'s table), then put ``index``'s pages back as they were
    before: the table's pages reached the disk, the index's did not, as a disk that acknowledges a
    write it never makes (or a power cut under ``synchronous=OFF``) leaves a file. Every page stays
    well formed, so only a check of the index against its table finds it."""
    before = _pages_of(path, index)
    writes()
    after = _pages_of(path, index)
    assert [page for page, _ in after] == [page for page, _ in before], "the index kept its pages"
    page_size = _page_size(path)
    with path.open("r+b") as handle:
        for page, content in before:
            handle.seek((page - 1) * page_size)
            handle.write(content)


def _page_size(path: Path) -> int:
    with sqlite3.connect(path) as db:
        size = int(db.execute("PRAGMA page_size").fetchone()[0])
    db.close()
    return size


def _pages_of(path: Path, name: str) -> list[tuple[int, bytes]]:
    """``name``'s page numbers and their bytes on disk, after a checkpoint."""
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        pages = [int(row[0]) for row in db.execute("SELECT pageno FROM dbstat WHERE name = ? ORDER BY pageno", (name,))]
    db.close()
    page_size = _page_size(path)
    with path.open("rb") as handle:
        contents = []
        for page in pages:
            handle.seek((page - 1) * page_size)
            contents.append(handle.read(page_size))
    return list(zip(pages, contents, strict=True))
