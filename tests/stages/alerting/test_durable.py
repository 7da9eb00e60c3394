"""The alert stores' files: opened durably where they can be made, refused with the reason where
they cannot, judged before anything starts without creating anything, and a disk that fills up
(a real tmpfs) met with errors that say so and writes that are all or nothing."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from stages.alerting.durable import (
    StoreInUseError,
    StoreOpenError,
    StoreWriteError,
    holder_of,
    not_a_store_problem,
    open_durable,
    open_when_possible,
    writable_problem,
    writing,
)
from stages.alerting.store import AlertStore
from tests.support.small_disk import small_disk
from tests.support.store_holder import hold_in_another_process

SCHEMA = "CREATE TABLE IF NOT EXISTS t (x INTEGER);"
SCHEMA_BLOB = "CREATE TABLE IF NOT EXISTS t (x BLOB);"


def test_a_store_in_folders_that_do_not_exist_yet_is_judged_possible_and_nothing_is_created(tmp_path: Path) -> None:
    path = tmp_path / "state" / "deep" / "alerts.sqlite"
    assert writable_problem(path) is None
    assert not (tmp_path / "state").exists(), "judging creates nothing"
    open_durable(path, SCHEMA).close()
    assert path.is_file()
    assert writable_problem(path) is None, "an existing, writable store"


def test_a_store_under_a_file_is_refused_before_and_when_opened(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    path = blocker / "state" / "alerts.sqlite"
    assert writable_problem(path) == f"cannot create {path}: {blocker} is a file, not a folder"
    with pytest.raises(StoreOpenError, match=f"cannot open {path}: ") as caught:
        open_durable(path, SCHEMA)
    assert isinstance(caught.value, OSError), "also an OSError, as the builtins it stands for"


def test_a_store_path_that_is_a_folder_is_refused(tmp_path: Path) -> None:
    assert writable_problem(tmp_path) == f"{tmp_path} is a folder, not a file"


# ----- a disk that fills up (a real tmpfs; needs root, as make test has) ----------------------------
def test_a_write_the_full_disk_refuses_names_the_file_and_leaves_nothing_half_done(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk") as disk:
        path = disk.path / "t.sqlite"
        db = open_durable(path, SCHEMA_BLOB)
        disk.fill()
        full = rf"cannot write {path}: database or disk is full \(\d+ B free\)"
        with pytest.raises(StoreWriteError, match=full), writing(db, path):
            db.execute("INSERT INTO t VALUES (?)", (os.urandom(300_000),))
        assert not db.in_transaction, "rolled back, not left open"
        assert db.execute("SELECT COUNT(*) FROM t").fetchone() == (0,)
        disk.free()
        with writing(db, path):
            db.execute("INSERT INTO t VALUES (?)", (os.urandom(300_000),))
        assert db.execute("SELECT COUNT(*) FROM t").fetchone() == (1,), "the same write works once there is room"
        db.close()


def test_a_store_the_full_disk_cannot_open_is_a_transient_error_and_one_under_a_file_is_not(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk") as disk:
        disk.fill()
        with pytest.raises(StoreOpenError, match=r"database or disk is full \(\d+ B free\)") as full:
            open_durable(disk.path / "t.sqlite", SCHEMA_BLOB)
    assert full.value.transient
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(StoreOpenError) as blocked:
        open_durable(tmp_path / "a-file" / "t.sqlite", SCHEMA_BLOB)
    assert not blocked.value.transient, "a file in the way does not go away by waiting"


def test_a_store_is_opened_once_the_full_disk_has_room_and_not_after_a_stop(tmp_path: Path) -> None:
    with small_disk(tmp_path / "disk") as disk:
        path = disk.path / "t.sqlite"
        disk.fill()
        threading.Timer(1.0, disk.free).start()
        beats: list[float] = []
        started = time.monotonic()
        db = open_when_possible(
            lambda: open_durable(path, SCHEMA_BLOB), "test.path", lambda: False, lambda: beats.append(1), retry_s=0.2
        )
        assert db is not None and time.monotonic() - started >= 1.0
        assert len(beats) >= 3, "the stage's heartbeat goes on while it waits"
        db.close()
        disk.fill()
        stop = threading.Event()
        threading.Timer(0.5, stop.set).start()
        assert open_when_possible(lambda: open_durable(disk.path / "u.sqlite", SCHEMA_BLOB), "x", stop.is_set) is None
    with pytest.raises(StoreOpenError):  # not waited for
        open_when_possible(lambda: open_durable(tmp_path, SCHEMA_BLOB), "x", lambda: False, retry_s=0.1)


# ----- one process per store ---------------------------------------------------------------------
def test_a_store_another_process_holds_is_refused_naming_it_until_that_process_dies(tmp_path: Path) -> None:
    path = tmp_path / "alerts.sqlite"
    holder = hold_in_another_process(path)
    try:
        assert holder_of(path) == f"pid {holder.pid}, started by pid {os.getpid()}"
        with pytest.raises(StoreInUseError, match=rf"{path} is in use by another vigil process \(pid {holder.pid}, "):
            AlertStore(path, exclusive=True)
        AlertStore(path).close()  # shared opens (delivery workers, run.py alerts) are not refused
    finally:
        holder.kill()  # SIGKILL: the kernel lets go of the claim, nothing to clean up
        holder.wait()
    assert holder_of(path) is None
    AlertStore(path, exclusive=True).close()
    assert holder_of(path) is None, "closing lets go too"


def test_an_existing_file_that_is_not_sqlite_is_not_a_store_and_nothing_else_is_judged_one(tmp_path: Path) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("not a database")
    assert not_a_store_problem(notes) == (
        f"{notes} exists and is not an SQLite database; vigil will not write in it (move it, or use another path)"
    )
    open_durable(tmp_path / "real.sqlite", SCHEMA).close()
    (tmp_path / "empty.sqlite").touch()  # what SQLite itself makes of a new file before its first write
    for fine in ("real.sqlite", "empty.sqlite", "missing.sqlite", "missing-folder/x.sqlite"):
        assert not_a_store_problem(tmp_path / fine) is None, fine
