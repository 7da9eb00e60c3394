"""The alert stores' files: opened durably where they can be made, refused with the reason where
they cannot, and judged before anything starts without creating anything."""

from __future__ import annotations

from pathlib import Path

import pytest

from stages.alerting.durable import StoreOpenError, open_durable, writable_problem

SCHEMA = "CREATE TABLE IF NOT EXISTS t (x INTEGER);"


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
