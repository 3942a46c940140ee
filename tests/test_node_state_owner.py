"""NodeState alone, on a real state file: every change writes through (memory,
durable row, cache digest) and a key waits for its desired row's commit before
a worker may take it (the write-ahead rule)."""

from __future__ import annotations

from pathlib import Path

from factories import group, measure
from polling import until
from schemacache.node.desired import Desired
from schemacache.node.nodestate import UNKNOWN_REVISION, NodeState
from schemacache.node.queue import PRIO_LIVE, PRIO_REPAIR
from schemacache.node.state import StateStore
from schemacache.stored import StoredResource


async def _reopen(path: Path) -> tuple[StateStore, object]:
    store = StateStore(path)
    return store, await store.open()


async def test_changes_write_through_to_disk_and_digest(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    await store.open()
    durable: list[tuple[str, int]] = []
    state = NodeState(store, on_durable=lambda key, prio: durable.append((key, prio)))
    g = group("g1")
    try:
        empty_digest = state.cache.digest()
        state.set_desired(g.key, Desired.of(3, False, g))
        assert state.set_applied(g.key, 3, state.desired[g.key].stored) is None
        assert state.cache.get(g.key) == g and state.cache.digest() != empty_digest
        assert state.is_settled(g.key, state.desired[g.key])
        # Applied and desired share one record; the model is let go once applied.
        assert state.applied[g.key][1] is state.desired[g.key].stored
        assert state.desired[g.key].model is None
        state.set_cluster_id("c1")
        await store.flush()
    finally:
        await store.close()
    store, loaded = await _reopen(tmp_path)
    try:
        assert loaded.desired[g.key][0] == 3  # type: ignore[attr-defined]
        assert loaded.applied[g.key][0] == 3  # type: ignore[attr-defined]
        assert loaded.cluster_id == "c1"  # type: ignore[attr-defined]
        state = NodeState(store, on_durable=lambda key, prio: None)
        state.applied[g.key] = (3, StoredResource.of(g))
        state.mark_reapply([g.key], durable=True)
        assert state.applied[g.key][0] == UNKNOWN_REVISION
        await store.flush()
    finally:
        await store.close()
    store, loaded = await _reopen(tmp_path)
    try:
        assert loaded.applied[g.key][0] == UNKNOWN_REVISION  # type: ignore[attr-defined]
        state = NodeState(store, on_durable=lambda key, prio: None)
        state.desired[g.key] = Desired.of(3, False, g)
        state.applied[g.key] = (3, StoredResource.of(g))
        assert state.drop_applied(g.key) == (3, StoredResource.of(g))
        assert state.cache.get(g.key) is None
        state.drop_desired(g.key)
        await store.flush()
    finally:
        await store.close()
    store, loaded = await _reopen(tmp_path)
    try:
        assert loaded.desired == {} and loaded.applied == {}  # type: ignore[attr-defined]
    finally:
        await store.close()


async def test_a_key_waits_for_its_desired_commit(tmp_path: Path) -> None:
    store = StateStore(tmp_path, flush_interval=60.0)  # commits only when asked
    await store.open()
    released: list[tuple[str, int]] = []
    state = NodeState(store, on_durable=lambda key, prio: released.append((key, prio)))
    g = group("g1")
    try:
        state.set_desired(g.key, Desired.of(5, False, g))
        assert not state.durable(g.key)
        state.hold_for_commit(g.key, PRIO_REPAIR)
        state.hold_for_commit(g.key, PRIO_LIVE)  # asked again, more urgently
        assert state.awaits_commit(g.key) and state.awaiting_urgent == 1
        assert released == []
        # Released by the commit the hold asked for, not by the 60 s timer.
        await until(lambda: released, "the commit to release the key", within=10.0)
        assert released == [(g.key, PRIO_LIVE)]
        assert state.durable(g.key) and not state.awaits_commit(g.key)
        assert state.awaiting_urgent == 0
        state.set_desired(g.key, Desired.of(6, False, g))  # a newer version: a new commit
        assert not state.durable(g.key)
        state.hold_for_commit(g.key, PRIO_REPAIR)
        await until(lambda: len(released) == 2, "the second commit", within=10.0)
        assert released[1] == (g.key, PRIO_REPAIR) and state.durable(g.key)
    finally:
        await store.close()


async def test_a_failed_commit_releases_nothing_until_a_later_one_succeeds(
        tmp_path: Path) -> None:
    """Rows are durable by the number of the commit that took them: rows of a
    commit that failed are not durable (their keys stay held), rows written
    meanwhile are not either, and the next commit that succeeds releases both,
    in the order held."""
    store = StateStore(tmp_path, flush_interval=60.0)  # commits only when asked
    await store.open()
    released: list[tuple[str, int]] = []
    state = NodeState(store, on_durable=lambda key, prio: released.append((key, prio)))
    conn = store.file.conn
    assert conn is not None
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")  # the disk is full
    first = [measure("g", f"m{i}", fields=tuple(f"f{j}" for j in range(8))) for i in range(50)]
    try:
        for m in first:
            state.set_desired(m.key, Desired.of(7, False, m))
            state.hold_for_commit(m.key, PRIO_LIVE)
        await until(lambda: store.failing is not None, "the commit to fail", within=10.0)
        assert released == [] and not any(state.durable(m.key) for m in first)
        late = group("late")
        state.set_desired(late.key, Desired.of(8, False, late))
        state.hold_for_commit(late.key, PRIO_REPAIR)
        assert state.awaiting_urgent == len(first)
        conn.execute("PRAGMA max_page_count = 1073741823")  # room again
        await until(lambda: len(released) == len(first) + 1, "the retried commit",
                    within=10.0)
        assert released == [(m.key, PRIO_LIVE) for m in first] + [(late.key, PRIO_REPAIR)]
        assert all(state.durable(k) for k, _ in released) and state.awaiting_urgent == 0
    finally:
        await store.close()
    store, loaded = await _reopen(tmp_path)
    try:
        assert set(loaded.desired) == {k for k, _ in released}  # type: ignore[attr-defined]
    finally:
        await store.close()
