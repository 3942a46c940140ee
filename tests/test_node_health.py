"""Honest health: a state store that cannot commit (issue 7, item 4).

"Disk full" is SQLite's own: ``PRAGMA max_page_count`` on the node's state
connection caps the file at its current size, so every commit that needs a
new page fails with SQLITE_FULL -- the error a full disk gives -- and raising
the cap is the disk getting space back.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import httpx

from factories import group, measure
from schemacache.api.admin import create_admin_app
from schemacache.node.node import ALERT_STATE_STORE
from schemacache.registry import Registry
from test_node_core import DEADLINE, RecordingHandler, new_node, reg, until

__all__ = ["reg"]

UNLIMITED_PAGES = 1_073_741_823


def _alerts(node: object) -> set[str]:
    return {a["labels"]["alertname"] for a in node.alerter.active()}  # type: ignore[attr-defined]


async def test_a_state_store_that_cannot_commit_is_reported_and_recovers(
        reg: Registry, tmp_path: Path) -> None:
    """While commits fail: ``/readyz`` answers 503, status says ``degraded`` with
    the store's error, ``SchemaStateStoreFailing`` fires, and no change whose
    desired row is not durable reaches the handler (write-ahead).  Once the
    file may grow again, all by itself: ready, alert resolved, every change
    applied and committed (a restart hands the handler what it held)."""
    await reg.put(group("g"))
    h = RecordingHandler()
    node = new_node(reg, tmp_path, h, monitor_interval=0.05)
    transport = httpx.ASGITransport(app=create_admin_app(node))
    async with node, httpx.AsyncClient(transport=transport, base_url="http://node") as admin:
        await node.ready(DEADLINE)
        assert (await admin.get("/readyz")).status_code == 200
        conn = node._store.file.conn  # the "disk" under the node
        assert conn is not None
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
        conn.execute(f"PRAGMA max_page_count = {pages}")
        calls_before = len(h.calls)
        last = 0
        for i in range(300):
            last = await reg.put(measure("g", f"m{i}", fields=tuple(f"f{j}" for j in range(8))))

        await until(lambda: node.status()["state"] == "degraded", what="state degraded")
        status = node.status()
        assert status["state_store"]["ok"] is False
        assert "full" in status["state_store"]["error"]
        assert not node.is_ready()
        assert (await admin.get("/readyz")).status_code == 503
        await until(lambda: ALERT_STATE_STORE in _alerts(node), what="the alert")
        # Write-ahead: what reached the handler is what had been committed.
        handed = {c[1] for c in h.calls[calls_before:]}
        durable = {k for (k,) in sqlite3.connect(node._store.path).execute(
            "SELECT key FROM desired")}
        assert handed <= durable, sorted(handed - durable)[:5]
        assert len(handed) < 300

        conn.execute(f"PRAGMA max_page_count = {UNLIMITED_PAGES}")
        await until(lambda: node.is_ready() and node.status()["state"] == "ready",
                    within=30, what="recovery")
        assert (await admin.get("/readyz")).status_code == 200
        await until(lambda: ALERT_STATE_STORE not in _alerts(node), what="alert resolved")
        assert await node.wait_for_revision(last, DEADLINE)
        assert {f"measure/g/m{i}" for i in range(300)} <= {c[1] for c in h.calls}
    # Committed: a restart hands the handler exactly the versions it held.
    held = {c[1]: c[2] for c in h.calls}
    restarted = RecordingHandler()
    async with new_node(reg, tmp_path, restarted) as node:
        await node.ready(DEADLINE)
    replayed = {c[1]: c[2] for c in restarted.calls if c[0] == "apply"}
    for i in range(300):
        key = f"measure/g/m{i}"
        assert replayed.get(key) == held[key], key


async def test_ready_only_after_the_resume_point_is_checked(reg: Registry, tmp_path: Path) -> None:
    """A node restarted past a compaction of its resume point is not ready until
    the compaction was found and repaired: the first moment ``ready()`` returns,
    the ``compacted`` repair is done and the cache holds the registry's state
    (a delete it missed while down included)."""
    await reg.put(group("g"))
    await reg.put(measure("g", "gone"))
    h = RecordingHandler()
    async with new_node(reg, tmp_path, h) as node:
        await node.ready(DEADLINE)
    await reg.delete("measure/g/gone")
    last = await reg.put(measure("g", "new"))
    await reg.compact(last)
    async with new_node(reg, tmp_path, h) as node:
        await node.ready(DEADLINE)
        status = node.status()
        assert status["repair"]["count"] == 1, status["repair"]
        assert node.cache.get("measure/g/gone") is None
        assert node.cache.get("measure/g/new") is not None
        assert status["applied_revision"] == last and status["state"] == "ready"
        assert h.calls_for("measure/g/gone", "delete")
