"""The state file holds each resource as its JSON text and gives it back as one
record per version: desired and applied share it, nothing is decoded at load,
and a row that is not a resource's JSON makes the file count as corrupt."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from factories import group, measure
from schemacache.node.state import STATE_FILE, StateStore
from schemacache.stored import StoredResource


async def _write(tmp_path: Path) -> tuple[StoredResource, StoredResource]:
    store = StateStore(tmp_path)
    await store.open()
    g = StoredResource.of(group("g").with_revisions(2, 2))
    m_old = StoredResource.of(measure("g", "m").with_revisions(3, 3))
    m_new = StoredResource.of(measure("g", "m", fields=("v2",)).with_revisions(3, 4))
    try:
        store.put_desired("group/g", 2, False, g)
        store.put_applied("group/g", 2, g)
        store.put_desired("measure/g/m", 4, False, m_new)
        store.put_applied("measure/g/m", 3, m_old)
        store.set_received_revision(4)
        await store.flush()
    finally:
        await store.close()
    return g, m_new


async def test_records_come_back_shared_and_as_written(tmp_path: Path) -> None:
    g, m_new = await _write(tmp_path)
    store = StateStore(tmp_path)
    loaded = await store.open()
    try:
        d_rev, deleted, d_group = loaded.desired["group/g"]
        assert (d_rev, deleted, d_group) == (2, False, g)
        # The applied version is the desired one: one record for both.
        assert loaded.applied["group/g"][1] is d_group
        assert loaded.desired["measure/g/m"][2] == m_new
        a_rev, a_measure = loaded.applied["measure/g/m"]
        assert a_rev == 3 and a_measure.mod_revision == 3
        assert a_measure.model().spec["fields"][0]["name"] == "value"
        assert a_measure is not loaded.desired["measure/g/m"][2]
    finally:
        await store.close()


@pytest.mark.parametrize("text", ["not json", '{"metadata": {"name": "g", "mod_revision": 2}}',
                                  '{"kind": "group", "metadata": {"name": "g"}}'])
async def test_a_row_that_is_not_a_resource_is_a_corrupt_file(tmp_path: Path, text: str) -> None:
    await _write(tmp_path)
    conn = sqlite3.connect(tmp_path / STATE_FILE)
    with conn:
        conn.execute("UPDATE desired SET resource = ? WHERE key = 'group/g'", (text,))
    conn.close()
    store = StateStore(tmp_path)
    loaded = await store.open()
    try:
        assert loaded.fresh and loaded.moved_aside is not None
        assert loaded.desired == {} and loaded.applied == {}
    finally:
        await store.close()
