"""A SQLite registry file replaced on disk under running processes.

Moving a backup over the live file (``mv``, ``os.replace``) gives the name to a
new file while every running process still holds the old one, and the old
file's log (``registry.db-wal``) keeps the registry's name: whoever opens the
new file while the log is held reads the old log's pages as the new file's.
A registry that sees another file under its name therefore refuses every call
with :class:`SqliteReplacedError` and closes its connections, so that the log
is folded into the old file and removed; a node on it reports the registry
unreachable with that reason, and once restarted converges on the new file
as on any restored backup.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest

from factories import group, measure
from node_procs.harness import wait_until
from schemacache import Registry, open_registry
from schemacache.model import digest_of
from schemacache.node import Node
from schemacache.node.repair import ALERT_REWOUND
from schemacache.observe.alerts import is_resolved
from schemacache.registry.sqlite_conn import SqliteReplacedError
from schemacache.testing import AlertReceiver
from service_helpers import Proc, run_cli
from sqlite_files import online_copy

TIMEOUT = 30.0
UNREACHABLE = "SchemaRegistryUnreachable"

pytestmark = pytest.mark.timeout(120)


def _exists(path: str) -> bool:
    return os.path.exists(path)


async def _listing(reg: Registry) -> dict[str, int]:
    items, _ = await reg.list()
    return {r.key: r.mod_revision for r in items}


async def _write_past_backup(reg: Registry, backup: Path, db: Path) -> dict[str, int]:
    """Write ``g`` and six measures, take ``backup``, then update, delete and
    create after it; the listing at the backup."""
    await reg.put(group("g"))
    for i in range(6):
        await reg.put(measure("g", f"m{i}"))
    online_copy(db, backup)
    at_backup = await _listing(reg)
    await reg.put(measure("g", "m0", fields=("changed",)))
    await reg.delete("measure/g/m1")
    await reg.put(measure("g", "later"))
    return at_backup


async def test_a_replaced_file_is_refused_and_let_go(tmp_path: Path) -> None:
    """After ``os.replace(backup, db)`` the open registry refuses reads and writes
    with a message that says what happened and what to do, and it let go of the
    old log: a process opening the name now reads exactly the backup (without
    that, it would read the old log's pages as the backup's)."""
    db, backup = tmp_path / "registry.db", tmp_path / "backup.db"
    reg = open_registry(f"sqlite:///{db}")
    try:
        at_backup = await _write_past_backup(reg, backup, db)
        os.replace(backup, db)

        with pytest.raises(SqliteReplacedError, match=r"replaced on disk.*restart"):
            await reg.list()
        with pytest.raises(SqliteReplacedError):
            await reg.put(measure("g", "refused"))
        with pytest.raises(SqliteReplacedError):
            await reg.revision()
    finally:
        await reg.close()
    assert not _exists(f"{db}-wal"), "the old log still has the registry's name"

    fresh = open_registry(f"sqlite:///{db}")
    try:
        assert await _listing(fresh) == at_backup  # and the refused write is nowhere
    finally:
        await fresh.close()


async def test_a_node_on_a_replaced_file_says_why_and_converges_once_restarted(
        tmp_path: Path) -> None:
    """A node whose registry file is replaced goes ``disconnected`` and fires
    ``SchemaRegistryUnreachable`` naming the replaced file (it keeps serving its
    cache); restarted on the same state, it converges on the backup, with
    ``SchemaRegistryRewound`` fired and resolved."""
    db, backup = tmp_path / "registry.db", tmp_path / "backup.db"
    url = f"sqlite:///{db}"
    receiver = AlertReceiver()
    await receiver.start()
    settings: dict[str, Any] = dict(
        name="replaced", state_dir=tmp_path / "state", alert_webhook=receiver.url,
        unreachable_alert_after=0.5, reconnect_base=0.1, reconnect_cap=0.5,
        monitor_interval=0.05, repair_interval=0)
    reg = open_registry(url)
    node = Node(reg, **settings)
    try:
        await node.start()
        at_backup = await _write_past_backup(reg, backup, db)
        assert await node.wait_for_revision(await reg.revision(), TIMEOUT)
        cached = node.status()["cache"]["size"]
        os.replace(backup, db)

        async def unreachable() -> list[dict[str, Any]]:
            return receiver.matching(UNREACHABLE, resolved=False)

        firing = await wait_until(unreachable, TIMEOUT, f"{UNREACHABLE} at the webhook")
        assert "replaced on disk" in firing[0]["annotations"]["last_error"]
        assert node.status()["state"] == "disconnected"
        assert node.status()["cache"]["size"] == cached  # still serving
    finally:
        await node.stop()
        await reg.close()

    reg = open_registry(url)
    node = Node(reg, **settings)
    try:
        await node.start()

        async def converged() -> bool:
            items, _ = await reg.list()
            status = node.status()
            return bool(status["state"] == "ready"
                        and status["cache"]["digest"] == digest_of(items))

        await wait_until(converged, TIMEOUT, "the node to converge on the backup")
        assert await _listing(reg) == at_backup
        assert {r.key for r in node.cache.list()} == set(at_backup)

        async def rewound() -> list[str]:
            states = ["resolved" if is_resolved(a) else "firing" for a in receiver.received
                      if a["labels"]["alertname"] == ALERT_REWOUND]
            return states if states[-1:] == ["resolved"] else []

        assert (await wait_until(rewound, TIMEOUT, f"{ALERT_REWOUND} resolved"))[0] == "firing"
        assert node.status()["registry"]["rewinds"] >= 1
    finally:
        await node.stop()
        await reg.close()
        await receiver.stop()


MANIFEST = ("kind: measure\nmetadata: {group: g, name: after}\nspec:\n"
            "  tag_families: [{name: default, tags: [{name: id, type: STRING}]}]\n"
            "  fields: [{name: v, field_type: INT}]\n  entity: {tag_names: [id]}\n")


async def test_serve_on_a_replaced_file_answers_503_and_writes_nothing(tmp_path: Path) -> None:
    """``apply`` through a ``serve`` whose file was replaced fails (503, exit 1),
    telling that retrying will not help, and writes nothing; a ``serve`` started
    again on the name writes to the new file."""
    db, backup = tmp_path / "registry.db", tmp_path / "backup.db"
    url = f"sqlite:///{db}"
    manifest = tmp_path / "after.yaml"
    manifest.write_text(MANIFEST)
    reg = open_registry(url)
    try:
        at_backup = await _write_past_backup(reg, backup, db)
    finally:
        await reg.close()
    for attempt in ("refused", "accepted"):
        serve = Proc(["serve", "--registry", url, "--listen", "127.0.0.1:0"], cwd=tmp_path)
        try:
            server = await asyncio.to_thread(serve.wait_url)
            if attempt == "refused":
                os.replace(backup, db)
            result = await asyncio.to_thread(run_cli, "apply", "-f", str(manifest),
                                             server=server)
        finally:
            await asyncio.to_thread(serve.stop)
        if attempt == "refused":
            assert result.returncode == 1, result.stdout + result.stderr
            assert "unavailable to this server until an operator acts" in result.stderr
            assert any("replaced on disk" in line for line in serve.lines)
        else:
            assert result.returncode == 0, result.stdout + result.stderr
    reg = open_registry(url)
    try:
        assert set(await _listing(reg)) == set(at_backup) | {"measure/g/after"}
    finally:
        await reg.close()
