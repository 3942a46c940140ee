"""One state row per event: an applied version that is its key's durable
desired version is not written to the ``applied`` table (``NodeState.set_applied``).

The desired row then stands for it, and a restart hands the handler that
version again.  Each test below stops the node in a state where the applied
row has to be on disk after all -- because the key's desired version changed,
or a prerequisite's did -- and checks what the restarted node hands its
handler and shows in its cache.  A clean stop leaves the same rows on disk as
a crash after the last commit: applied rows left unwritten stay unwritten.
"""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from factories import group, measure
from schemacache import PermanentError, Resource, open_registry
from schemacache.node import Node
from schemacache.registry import Registry
from test_node_core import DEADLINE, RecordingHandler, new_node, until

MEASURES = 20


def _applied_rows(tmp_path: Path) -> dict[str, int]:
    with sqlite3.connect(tmp_path / "state" / "state.db") as conn:
        return {k: int(r) for k, r in conn.execute("SELECT key, revision FROM applied")}


@pytest.fixture
async def reg(tmp_path: Path) -> AsyncIterator[Registry]:
    """A SQLite registry in ``tmp_path``."""
    registry = open_registry(f"sqlite:///{tmp_path / 'registry.db'}")
    try:
        yield registry
    finally:
        await registry.close()


def _assert_cached(node: Node, key: str, revision: int) -> None:
    cached = node.cache.get(key)
    assert cached is not None and cached.mod_revision == revision, key


async def _group_with_measures(reg: Registry) -> dict[str, int]:
    """Write group ``g`` and :data:`MEASURES` measures on it; their revisions by key."""
    await reg.put(group("g"))
    return {f"measure/g/m{i}": await reg.put(measure("g", f"m{i}")) for i in range(MEASURES)}


async def test_settled_keys_write_one_row_and_a_restart_hands_them_again(
        reg: Registry, tmp_path: Path) -> None:
    """Applied versions equal to their durable desired rows leave no applied row;
    a restart hands every one of them to the handler again and caches it."""
    revisions = await _group_with_measures(reg)
    h = RecordingHandler()
    async with new_node(reg, tmp_path, h) as node:
        await node.ready(DEADLINE)
        assert await node.wait_for_revision(max(revisions.values()), DEADLINE)
        await node.flush()
    assert not set(revisions) & set(_applied_rows(tmp_path))

    again = RecordingHandler()
    async with new_node(reg, tmp_path, again) as node:
        await node.ready(DEADLINE)
        for key, revision in revisions.items():
            assert again.calls_for(key, "apply")[0][2] == revision, key
            _assert_cached(node, key, revision)
        assert node.status()["failures"] == []


async def test_a_prerequisite_that_changes_writes_its_dependents_rows(
        reg: Registry, tmp_path: Path) -> None:
    """The group of settled measures changes and its new version fails for good:
    a restart must not hold the measures back to nothing (their applied rows
    were written with the group's new desired row), it hands each measure the
    version the handler held and keeps it cached."""
    revisions = await _group_with_measures(reg)
    h = RecordingHandler()
    async with new_node(reg, tmp_path, h) as node:
        await node.ready(DEADLINE)
        assert await node.wait_for_revision(max(revisions.values()), DEADLINE)
        h.fail["group/g"] = PermanentError("no room for the new shards")
        changed = group("g")
        changed.spec["resource_opts"]["shard_num"] = 7
        group_revision = await reg.put(Resource.parse(changed.to_dict()))
        await until(lambda: any(f["key"] == "group/g" for f in node.failures()),
                    what="the group's failure")
        await node.flush()
    assert _applied_rows(tmp_path).items() >= revisions.items()

    again = RecordingHandler()
    again.fail["group/g"] = PermanentError("still no room")
    async with new_node(reg, tmp_path, again) as node:
        await node.ready(DEADLINE)
        assert [c[2] for c in again.calls_for("group/g", "apply")][:1] == [group_revision]
        for key, revision in revisions.items():
            assert [c[2] for c in again.calls_for(key)] == [revision], key
            _assert_cached(node, key, revision)


async def test_a_settled_key_deleted_keeps_its_row_until_the_handler_deleted_it(
        reg: Registry, tmp_path: Path) -> None:
    """A settled measure is deleted and the handler's delete fails for good: the
    tombstone's commit carries the applied row, so the restarted node hands the
    delete again (without it the node would believe the key gone while the
    handler still holds it)."""
    await reg.put(group("g"))
    revision = await reg.put(measure("g", "m"))
    h = RecordingHandler()
    async with new_node(reg, tmp_path, h) as node:
        await node.ready(DEADLINE)
        assert await node.wait_for_revision(revision, DEADLINE)
        h.fail["measure/g/m"] = PermanentError("storage busy")
        await reg.delete("measure/g/m")
        await until(lambda: any(f["key"] == "measure/g/m" for f in node.failures()),
                    what="the delete's failure")
        await node.flush()
    assert _applied_rows(tmp_path).get("measure/g/m") == revision

    again = RecordingHandler()
    async with new_node(reg, tmp_path, again) as node:
        await node.ready(DEADLINE)
        deletes = again.calls_for("measure/g/m", "delete")
        assert [c[2] for c in deletes] == [revision]
        assert node.cache.get("measure/g/m") is None
        assert node.status()["failures"] == []


async def test_a_failed_replay_keeps_the_key_cached(reg: Registry, tmp_path: Path) -> None:
    """A settled key whose only record is its desired row, replayed at start-up
    into a failing handler, stays cached (the handler held it before) and is
    applied again once the handler recovers."""
    revision = await reg.put(group("g"))
    async with new_node(reg, tmp_path, RecordingHandler()) as node:
        await node.ready(DEADLINE)
        assert await node.wait_for_revision(revision, DEADLINE)
    assert "group/g" not in _applied_rows(tmp_path)

    again = RecordingHandler()
    again.fail["group/g"] = PermanentError("disk busy")
    async with new_node(reg, tmp_path, again,
                        max_attempts=2, backoff_base=0.01, backoff_cap=0.02) as node:
        await until(lambda: len(again.calls_for("group/g")) >= 1, what="the replay")
        _assert_cached(node, "group/g", revision)
        del again.fail["group/g"]
        await node.repair("manual")
        await until(lambda: node.status()["failures"] == [], what="the repair")
        _assert_cached(node, "group/g", revision)
