"""One way to open the SQLite files that hold alerts (fuse's pending store and the sink's outbox),
the check, before anything starts, that such a file can be made where the config puts it, and the
error a write to one raises when its disk is full or failing (``StoreWriteError``)."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from pipeline.logs import RateLimited
from stages.alerting.salvage import Recover, is_damaged, mend_indexes, set_aside

logger = logging.getLogger(__name__)

T = TypeVar("T")
OPEN_RETRY_S = 5.0  # between two tries to open a store whose disk is full
CLAIM_WAIT_S = 1.0  # how long a store held by another process is waited for before it counts as in use
WAL_SIZE_LIMIT = 16 * 2**20  # bytes the WAL file is cut back to after a checkpoint (a burst of alerts grows it)


class StoreOpenError(OSError):
    """An alert store's file (or its folder) cannot be created or opened. ``transient`` when the
    cause can pass (the disk full, an I/O error, a lock): opening again later may work; otherwise
    (a folder in the way, no permission) restarting cannot help."""

    def __init__(self, message: str, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class StoreInUseError(StoreOpenError):
    """Another process (another vigil's sink or fuse) holds the store: two would each deliver (or
    send) every alert."""


class StoreDamagedError(StoreOpenError):
    """The store's file is damaged (a malformed page, a bad header): SQLite cannot read all of it.
    Its owner sets it aside and starts a fresh one with what can still be read (``open_store``)."""


class StoreWriteError(OSError):
    """A write to an alert store failed for now (its disk is full, an I/O error, a lock held too long)
    and changed nothing; the same write can succeed later, once there is room."""


def free_bytes(path: Path) -> int | None:
    """Bytes left on the file system that holds (or would hold) ``path``; None when unknown."""
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return None


def free_space(path: Path) -> str:
    """How much room is left on the file system that holds ``path``, for messages."""
    left = free_bytes(path)
    if left is None:
        return "free space unknown"
    free = float(left)
    unit = "B"
    for larger in ("KiB", "MiB", "GiB"):
        if free < 1024:
            break
        free, unit = free / 1024, larger
    return f"{free:.0f} {unit} free" if unit == "B" else f"{free:.1f} {unit} free"


@contextmanager
def writing(db: sqlite3.Connection, path: Path) -> Iterator[sqlite3.Connection]:
    """One write transaction on ``db``: committed, or rolled back entirely. SQLite's operational
    errors (disk full, I/O error, database locked past the busy timeout) become StoreWriteError,
    naming the file and the room left on its disk; other errors (a bug) pass unchanged."""
    try:
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:  # a COMMIT that failed may have rolled back already
                db.execute("ROLLBACK")
            raise
    except sqlite3.OperationalError as exc:
        raise StoreWriteError(f"cannot write {path}: {exc} ({free_space(path)})") from exc


def release_free_pages(db: sqlite3.Connection, path: Path) -> None:
    """Give the disk back the pages that deleted rows left free (a store made with incremental auto
    vacuum: ``open_durable`` makes new ones so; in an older one, nothing happens), and copy the WAL
    into the file so that it shrinks now rather than at the next automatic checkpoint. Outside any
    transaction; StoreWriteError as ``writing``."""
    write_or_raise(path, lambda: db.executescript("PRAGMA incremental_vacuum;"))  # steps it to the end
    write_or_raise(path, lambda: db.execute("PRAGMA wal_checkpoint(PASSIVE)"))


def write_or_raise(path: Path, write: Callable[[], T]) -> T:
    """Run one autocommit statement (``write``) and return what it returns (a cursor), raising
    StoreWriteError as ``writing`` does."""
    try:
        return write()
    except sqlite3.OperationalError as exc:
        raise StoreWriteError(f"cannot write {path}: {exc} ({free_space(path)})") from exc


def claim_file(path: Path) -> Path:
    """The lock file beside a store that says which process holds it."""
    return path.with_name(path.name + ".lock")


@dataclass
class StoreClaim:
    """This process's exclusive hold on a store (an ``flock`` on ``claim_file``, released by the
    kernel however the process ends, SIGKILL included), so a second vigil with the same files is
    refused instead of delivering every alert a second time."""

    path: Path
    fd: int

    @classmethod
    def take(cls, path: Path, wait_s: float = CLAIM_WAIT_S) -> StoreClaim:
        """Raises StoreInUseError naming the holder (still held after ``wait_s``: ``check`` looking
        for a holder takes the claim for an instant), or StoreOpenError when the lock cannot be made."""
        lock = claim_file(path)
        try:
            lock.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StoreOpenError(f"cannot open {path}: {exc.strerror or exc}", transient=is_transient(exc)) from exc
        deadline = time.monotonic() + wait_s
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    holder = os.pread(fd, 80, 0).decode(errors="replace").strip() or "unknown"
                    os.close(fd)
                    raise StoreInUseError(f"{path} is in use by another vigil process (pid {holder})") from None
                time.sleep(0.05)
        os.ftruncate(fd, 0)
        with contextlib.suppress(OSError):  # the pid is for the message only; a full disk may refuse it
            os.pwrite(fd, f"{os.getpid()}, started by pid {os.getppid()}\n".encode(), 0)
        return cls(path, fd)

    def release(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def holder_of(path: Path) -> str | None:
    """``pid N`` when another process holds ``path``'s claim (judged without keeping it), else None."""
    lock = claim_file(path)
    if not lock.exists():
        return None
    try:
        claim = StoreClaim.take(path, wait_s=0.0)
    except StoreInUseError as exc:
        return str(exc).split("(", 1)[-1].removesuffix(")")
    except StoreOpenError:
        return None
    claim.release()
    return None


TRANSIENT_SQLITE_ERRORS = ("SQLITE_FULL", "SQLITE_IOERR", "SQLITE_BUSY", "SQLITE_LOCKED")
TRANSIENT_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EIO)


def is_transient(exc: BaseException) -> bool:
    """Whether an error opening a store can pass by itself (disk full, I/O error, a lock)."""
    if isinstance(exc, sqlite3.Error):
        name = getattr(exc, "sqlite_errorname", None) or ""
        return name.startswith(TRANSIENT_SQLITE_ERRORS)
    return isinstance(exc, OSError) and exc.errno in TRANSIENT_ERRNOS


def open_durable(path: Path, schema: str, check: bool = False, setting: str = "store") -> sqlite3.Connection:
    """Open (creating the folder and tables) in WAL mode with full sync, so a commit survives a
    crash and a power loss, autocommit unless a transaction is begun, waiting up to 30 s for a
    writer in another process or thread. Raises StoreOpenError when the file cannot be made
    (``transient`` when its disk is full or failing), StoreDamagedError when SQLite finds it damaged
    (with ``check``, the whole file is looked over first, and indexes that disagree with their tables
    are rebuilt: ``mend_indexes``; ``setting`` names the file in its log lines)."""
    db: sqlite3.Connection | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, timeout=30.0, isolation_level=None)
        if db.execute("PRAGMA page_count").fetchone()[0] == 0:  # a new file: release_free_pages can shrink it
            db.execute("PRAGMA auto_vacuum=INCREMENTAL")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("PRAGMA busy_timeout=30000")
        db.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT}")
        db.executescript(schema)
        damage = mend_indexes(db, setting) if check else None
    except (OSError, sqlite3.Error) as exc:
        if db is not None:
            db.close()
        if is_damaged(exc):
            raise StoreDamagedError(f"{path} is damaged ({exc})") from exc
        reason = getattr(exc, "strerror", None) or exc
        transient = is_transient(exc)
        room = f" ({free_space(path)})" if transient else ""
        raise StoreOpenError(f"cannot open {path}: {reason}{room}", transient=transient) from exc
    if damage is not None:
        db.close()
        raise StoreDamagedError(f"{path} is damaged ({damage})")
    return db


def open_store(
    path: Path, schema: str, exclusive: bool, recover: Recover | None = None, setting: str = "store"
) -> tuple[sqlite3.Connection, StoreClaim | None, Path | None]:
    """``open_durable``, first claiming the store for this process when ``exclusive`` (the sink's
    outbox, fuse's pending file): StoreInUseError when another process holds it. The owner looks the
    file over as it opens it; a damaged one is set aside and a fresh one started, into which
    ``recover`` copies what it can still read of what was undelivered (see ``replace_damaged``).
    Returns the store, the claim, and where a damaged file was set aside (None when it was sound)."""
    claim = StoreClaim.take(path) if exclusive else None
    try:
        try:
            return open_durable(path, schema, check=exclusive, setting=setting), claim, None
        except StoreDamagedError as exc:
            if recover is None:
                raise
            db, aside = replace_damaged(path, schema, exc, recover, setting)
            return db, claim, aside
    except BaseException:
        if claim is not None:
            claim.release()
        raise


def replace_damaged(
    path: Path, schema: str, damage: StoreDamagedError, recover: Recover, setting: str
) -> tuple[sqlite3.Connection, Path]:
    """Set the damaged store aside (renamed, kept for looking into), open a fresh one at ``path``
    and copy into it what ``recover`` can read of the old; logged as an error naming both files.
    Restarting on the damaged file would fail the same way each time: its stage would fail for good
    and every alert after it would wait for someone to move the file. Returns the fresh store and
    where the damaged one went."""
    aside = set_aside(path)
    db = open_durable(path, schema)
    try:
        old = sqlite3.connect(aside, isolation_level=None)
    except sqlite3.Error as exc:
        logger.error("%s: %s; set aside as %s (unreadable: %s); a fresh one is started", setting, damage, aside, exc)
        return db, aside
    try:
        with writing(db, path):
            recovered = recover(old, db)
    except StoreWriteError as exc:
        logger.error(
            "%s: %s; set aside as %s and a fresh one started, but what it still held could not be copied (%s): "
            "look into it there",
            setting,
            damage,
            aside,
            exc,
        )
        return db, aside
    finally:
        old.close()
    lost = f"; {recovered.unreadable} row(s) of it could not be read" if recovered.unreadable else ""
    logger.error(
        "%s: %s; set aside as %s, and a fresh one started with the %d alert(s) still to send read from it%s",
        setting,
        damage,
        aside,
        recovered.rows,
        lost,
    )
    return db, aside


def open_when_possible(
    open_store: Callable[[], T],
    setting: str,
    should_stop: Callable[[], bool],
    beat: Callable[[], None] = lambda: None,
    retry_s: float = OPEN_RETRY_S,
) -> T | None:
    """``open_store()``, tried again every ``retry_s`` for as long as it fails for a reason that can
    pass (the disk full), logging why at most once a minute; None when told to stop meanwhile. An
    error that cannot pass is raised (StoreOpenError)."""
    warned = RateLimited(60.0)
    failing_since: float | None = None
    while True:
        try:
            store = open_store()
        except StoreOpenError as exc:
            if not exc.transient:
                raise
            failing_since = failing_since if failing_since is not None else time.monotonic()
            if warned.due():
                logger.error("%s: %s; trying again every %.0f s", setting, exc, retry_s)
            deadline = time.monotonic() + retry_s
            while time.monotonic() < deadline:
                if should_stop():
                    return None
                beat()
                time.sleep(min(0.2, retry_s))
            continue
        if failing_since is not None:
            logger.warning("%s: opened after %.0f s of trying", setting, time.monotonic() - failing_since)
        return store


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


SQLITE_HEADER = b"SQLite format 3\x00"


def not_a_store_problem(path: str | Path) -> str | None:
    """Why the existing file at ``path`` cannot be an alert store (it is something else, which vigil
    must not write into), or None (no file yet, an empty one, or an SQLite database)."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            head = handle.read(len(SQLITE_HEADER))
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None  # nothing there yet (or writable_problem says what is in the way)
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror or exc}"
    if head and head != SQLITE_HEADER:
        return f"{path} exists and is not an SQLite database; vigil will not write in it (move it, or use another path)"
    return None
