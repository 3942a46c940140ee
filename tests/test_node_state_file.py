"""The state file on its own (no buffering, no flusher): one batch per
transaction, deletes by ``None``, the directory locked while open, and a
batch that fails writes nothing."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from factories import group, measure
from schemacache.node.dirlock import StateDirInUseError
from schemacache.node.failures import FailureRecord
from schemacache.node.state_db import STATE_FILE, StateError, StateFile
from schemacache.stored import StoredResource


def _record() -> StoredResource:
    return StoredResource.of(group("g").with_revisions(2, 2))


def test_a_batch_is_one_transaction_and_none_deletes(tmp_path: Path) -> None:
    file = StateFile(tmp_path)
    assert file.open().fresh
    g = _record()
    m = StoredResource.of(measure("g", "m").with_revisions(3, 3))
    failure = FailureRecord("measure/g/m", 3, 5, 1.0, 2.0, "boom")
    try:
        file.commit({"group/g": (2, False, g, True), "measure/g/m": (3, False, m, False)},
                    {"group/g": (2, g)}, {"measure/g/m": failure},
                    {"received_revision": "3"})
        file.commit({"measure/g/m": None}, {}, {"measure/g/m": None}, {})
    finally:
        file.close()
    reopened = StateFile(tmp_path)
    loaded = reopened.open()
    try:
        assert not loaded.fresh and loaded.received_revision == 3
        assert list(loaded.desired) == ["group/g"] and loaded.failures == {}
        assert loaded.applied["group/g"][1] is loaded.desired["group/g"][2]  # one record
        assert loaded.applied["group/g"][1] == g
    finally:
        reopened.close()


def test_the_directory_is_locked_while_open(tmp_path: Path) -> None:
    first = StateFile(tmp_path)
    first.open()
    try:
        with pytest.raises(StateDirInUseError):
            StateFile(tmp_path).open()
    finally:
        first.close()
    second = StateFile(tmp_path)  # let go at close
    second.open()
    second.close()


def test_a_failing_batch_writes_nothing(tmp_path: Path) -> None:
    file = StateFile(tmp_path)
    file.open()
    g = _record()
    try:
        with pytest.raises(sqlite3.IntegrityError):
            # The failure row breaks NOT NULL after the desired row went in.
            file.commit({"group/g": (2, False, g, False)}, {},
                        {"x": FailureRecord("x", 1, 1, 1.0, 1.0, None)},  # type: ignore[arg-type]
                        {})
    finally:
        file.close()
    rows = sqlite3.connect(tmp_path / STATE_FILE).execute("SELECT key FROM desired").fetchall()
    assert rows == []
    with pytest.raises(StateError, match="closed"):
        file.commit({}, {}, {}, {})
