"""A registry restored from an older backup under running nodes (DESIGN.md invariants 7, 8).

Real parts: a SQLite registry file, ``schemacache serve`` on it, two node
subprocesses with the recording handler, an Alertmanager-style receiver, and
``schemacache apply --wait``.  The backup is restored the way the README
tells an operator to: SQLite's online backup API writing into the live file
(``sqlite3 registry.db ".restore backup.db"``), which keeps every open
connection valid.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import pytest

from factories import group, measure
from node_procs.harness import Call, NodeProc, read_record, wait_until
from node_procs.recording import DELAY_ENV, KILL_ENV
from schemacache import Resource, open_registry
from schemacache.node.repair import ALERT_REWOUND
from schemacache.observe.alerts import is_resolved
from schemacache.registry import Registry
from schemacache.testing import AlertReceiver
from service_helpers import Proc, run_cli
from sqlite_files import online_copy

CONVERGE_TIMEOUT = 60.0
SLOW_CALL_MS = 300
"""Milliseconds each handler call takes where a repair must be seen to be slow."""

pytestmark = pytest.mark.timeout(240)


def _rewind_alerts(receiver: AlertReceiver) -> list[str]:
    """``firing``/``resolved``, in the order received, of every rewind alert."""
    return ["resolved" if is_resolved(a) else "firing" for a in receiver.received
            if a["labels"]["alertname"] == ALERT_REWOUND]


async def _registry_map(reg: Registry) -> dict[str, int]:
    items, _ = await reg.list()
    return {r.key: r.mod_revision for r in items}


async def _node_map(node: NodeProc) -> dict[str, int]:
    cache = await node.get("/v1/cache")
    return {Resource.from_stored(r).key: int(r["metadata"]["mod_revision"])
            for r in cache["resources"]}


async def test_restoring_an_older_backup_under_running_nodes(tmp_path: Path) -> None:
    """Two nodes follow a SQLite registry; a backup is taken; creates, updates and
    deletes follow; then the backup is restored under the running nodes and a
    new resource is applied at once with ``apply --wait``.

    - ``apply --wait`` exits 0 only when every node's ``/v1/cache`` equals the
      registry (keys and mod_revisions) -- checked the moment it returns;
    - every node ends equal to the restored registry (plus the new write):
      keys created after the backup are deleted from the handler, keys deleted
      after it come back, keys updated after it hold the backup's version;
    - each node fired ``SchemaRegistryRewound`` and resolved it, and its status
      counts the rewind.
    """
    db = tmp_path / "registry.db"
    url = f"sqlite:///{db}"
    reg = open_registry(url)
    receiver = AlertReceiver()
    await receiver.start()
    serve = Proc(["serve", "--registry", url, "--listen", "127.0.0.1:0"], cwd=tmp_path)
    nodes = [NodeProc(url, tmp_path / f"state-{i}", f"rw-{i}", record=tmp_path / f"rec-{i}.log",
                      extra=["--alert-webhook", receiver.url, "--node-ttl", "1",
                             "--repair-interval", "0"]) for i in range(2)]
    try:
        server = await asyncio.to_thread(serve.wait_url)
        for node in nodes:
            await node.start()
        for node in nodes:
            await node.wait_url()
        await reg.put(group("g"))
        for i in range(10):
            await reg.put(measure("g", f"m{i}"))

        async def registered() -> bool:
            return len(await reg.list_nodes()) == 2

        await wait_until(registered, CONVERGE_TIMEOUT, "both nodes registered")
        backup = tmp_path / "backup.db"
        online_copy(db, backup)
        at_backup = await _registry_map(reg)
        for i in range(4):
            await reg.put(measure("g", f"m{i}", fields=("changed",)))
        for i in range(4, 7):
            await reg.delete(f"measure/g/m{i}")
        for i in range(5):
            await reg.put(measure("g", f"n{i}"))

        async def converged() -> bool:
            want = await _registry_map(reg)
            return all([await _node_map(n) == want for n in nodes])

        await wait_until(converged, CONVERGE_TIMEOUT, "nodes equal to the registry")
        ahead = await reg.revision()

        online_copy(backup, db)
        assert await reg.revision() < ahead
        manifest = tmp_path / "after.yaml"
        manifest.write_text("kind: measure\nmetadata: {group: g, name: after}\nspec:\n"
                            "  tag_families: [{name: default, tags: [{name: id, type: "
                            "STRING}]}]\n  fields: [{name: v, field_type: INT}]\n"
                            "  entity: {tag_names: [id]}\n")
        result = await asyncio.to_thread(run_cli, "apply", "-f", str(manifest), "--wait",
                                         "--timeout", str(CONVERGE_TIMEOUT), server=server)
        want = await _registry_map(reg)
        seen = [await _node_map(n) for n in nodes]
        assert result.returncode == 0, result.stdout + result.stderr
        assert all(s == want for s in seen), (
            f"apply --wait succeeded while a node differs from the registry {want}: {seen}")
        expected = dict(at_backup)
        expected["measure/g/after"] = want["measure/g/after"]
        assert want == expected

        async def resolved() -> bool:
            states: dict[str, list[str]] = {}
            for alert in receiver.received:
                if alert["labels"]["alertname"] == ALERT_REWOUND:
                    states.setdefault(alert["labels"]["node"], []).append(
                        "resolved" if is_resolved(alert) else "firing")
            return all(states.get(n.name, [])[:1] == ["firing"]
                       and states[n.name][-1] == "resolved" for n in nodes)

        await wait_until(resolved, CONVERGE_TIMEOUT, f"{ALERT_REWOUND} fired and resolved")
        for node in nodes:
            status: dict[str, Any] = await node.get("/v1/status")
            assert status["registry"]["rewinds"] >= 1
            assert status["state"] == "ready" and status["failures"] == []
    finally:
        for node in nodes:
            await node.stop()
        await asyncio.to_thread(serve.stop)
        await receiver.stop()
        await reg.close()

    for node in nodes:
        assert node.record is not None
        calls = [c for life in read_record(node.record) for c in life]
        state: dict[str, int] = {}
        for call in calls:
            if call.op == "apply":
                state[call.key] = call.revision
            elif call.op == "delete":
                state.pop(call.key, None)
        # The handler's own state followed the registry back (the handler was
        # never restarted: its record is one lifetime).
        assert state == want, f"{node.name}: handler state {state} != registry {want}"


async def _ready_answer(node: NodeProc, record: Path) -> tuple[dict[str, Any], list[Call]] | None:
    """The node's status and the handler's calls since its last start, if the
    node claims ready (``/readyz`` answers 200 or ``/v1/status`` is past
    ``syncing``); the record is read after the answer, so it holds at least every
    call made before the node claimed ready."""
    async with httpx.AsyncClient(timeout=5) as client:
        ready = (await client.get(f"{node.url}/readyz")).status_code == 200
        status = (await client.get(f"{node.url}/v1/status")).json()
    if not ready and status["state"] in ("syncing", "disconnected"):
        return None
    return status, read_record(record)[-1]


async def test_a_node_killed_before_converging_after_a_rewind_resolves_its_alert(
        tmp_path: Path) -> None:
    """A node fires ``SchemaRegistryRewound`` on a restored backup and dies (SIGKILL,
    from its handler) in the middle of its repair: the handler has just deleted a
    key the backup lacks, the node has not resolved the alert.  The rewind is
    durable in ``state.db`` and the restarted node takes it up: it fires the alert
    (still unresolved), converges on the restored registry and resolves it."""
    db = tmp_path / "registry.db"
    url = f"sqlite:///{db}"
    reg = open_registry(url)
    receiver = AlertReceiver()
    await receiver.start()
    trigger = tmp_path / "kill"
    state_dir = tmp_path / "state"
    record = tmp_path / "rec.log"
    node = NodeProc(url, state_dir, "rw-kill", record=record,
                    env={KILL_ENV: str(trigger)},
                    extra=["--alert-webhook", receiver.url, "--repair-interval", "0"])

    try:
        await node.start()
        await node.wait_url()
        await reg.put(group("g"))
        await reg.put(measure("g", "kept"))
        backup = tmp_path / "backup.db"
        online_copy(db, backup)
        await reg.put(measure("g", "lost"))

        async def caught_up() -> bool:
            return "measure/g/lost" in await _node_map(node)

        await wait_until(caught_up, CONVERGE_TIMEOUT, "the node to hold the lost write")
        trigger.write_text("delete measure/g/lost 0")
        online_copy(backup, db)
        assert node.proc is not None
        await asyncio.wait_for(node.proc.wait(), CONVERGE_TIMEOUT)
        await node.kill()  # reaps the output reader
        trigger.unlink()
        with sqlite3.connect(state_dir / "state.db") as conn:
            meta = dict(conn.execute("SELECT name, value FROM meta").fetchall())
        assert meta.get("rewound"), meta
        assert "resolved" not in _rewind_alerts(receiver)
        # A slow handler makes the repair the restarted node owes take a while:
        # the registry is not below the received revision any more, so that
        # repair takes every version from the listing again (a call per key).
        node.env = {DELAY_ENV: str(SLOW_CALL_MS)}
        await node.start()
        await node.wait_url()
        # Watched from the moment the admin URL is up: the first answer that
        # claims ready (on /readyz or /v1/status) comes after the repair's calls.
        first = await wait_until(lambda: _ready_answer(node, record), CONVERGE_TIMEOUT,
                                 "the restarted node to say ready", interval=0.005)
        status_at_ready, calls_at_ready = first
        # The replay re-applied g and kept and deleted lost; the repair then
        # applied every version again -- all of it before the node said ready.
        assert [(c.op, c.key) for c in calls_at_ready] == [
            ("apply", "group/g"), ("apply", "measure/g/kept"), ("delete", "measure/g/lost"),
            ("apply", "group/g"), ("apply", "measure/g/kept")], calls_at_ready
        assert status_at_ready["repair"]["last_reason"] == "rewound", status_at_ready["repair"]
        assert status_at_ready["registry"]["rewinds"] == 1, status_at_ready["registry"]

        async def resolved() -> bool:
            return _rewind_alerts(receiver)[-1:] == ["resolved"]

        await wait_until(resolved, CONVERGE_TIMEOUT, f"{ALERT_REWOUND} resolved after the restart")
        assert await _node_map(node) == await _registry_map(reg)
        status: dict[str, Any] = await node.get("/v1/status")
        assert status["failures"] == [] and status["state"] == "ready"
        assert read_record(record)[-1] == calls_at_ready  # nothing was left for after ready
        with sqlite3.connect(state_dir / "state.db") as conn:
            meta = dict(conn.execute("SELECT name, value FROM meta").fetchall())
        assert not meta.get("rewound"), meta
    finally:
        await node.stop()
        await receiver.stop()
        await reg.close()


async def test_a_backup_restored_and_written_past_while_a_node_was_down(
        tmp_path: Path) -> None:
    """The node stops at revision R; a backup older than R is restored and written
    to until the registry is past R, so its revision alone cannot tell: the
    change at R is another one.  The restarted node fires ``SchemaRegistryRewound``
    before it says ready, drops every version of the lost history (an update the
    backup lacks, a delete it lacks, a create it lacks), converges on the
    registry and resolves the alert; no handler call hands a version the
    registry never had after the restart."""
    db = tmp_path / "registry.db"
    url = f"sqlite:///{db}"
    reg = open_registry(url)
    receiver = AlertReceiver()
    await receiver.start()
    record = tmp_path / "rec.log"
    node = NodeProc(url, tmp_path / "state", "rw-past", record=record,
                    extra=["--alert-webhook", receiver.url, "--repair-interval", "0"])

    try:
        await node.start()
        await node.wait_url()
        await reg.put(group("g"))
        for i in range(4):
            await reg.put(measure("g", f"m{i}"))
        backup = tmp_path / "backup.db"
        online_copy(db, backup)
        await reg.put(measure("g", "m0", fields=("lost",)))    # an update the backup lacks
        await reg.delete("measure/g/m1")                        # a delete it lacks
        await reg.put(measure("g", "lost"))                     # a create it lacks
        lost_head = await reg.revision()

        async def holds_lost() -> bool:
            return await _node_map(node) == await _registry_map(reg)

        await wait_until(holds_lost, CONVERGE_TIMEOUT, "the node to hold the lost history")
        await node.stop()
        online_copy(backup, db)
        # Written past the node's received revision: the numbers are reused.
        for i in range(4):
            await reg.put(measure("g", f"new{i}"))
        assert await reg.revision() > lost_head
        await node.start()
        await node.wait_url()

        async def resolved() -> bool:
            return _rewind_alerts(receiver)[-1:] == ["resolved"]

        await wait_until(resolved, CONVERGE_TIMEOUT, f"{ALERT_REWOUND} fired and resolved")
        assert _rewind_alerts(receiver)[0] == "firing"
        want = await _registry_map(reg)
        assert await _node_map(node) == want
        assert "measure/g/m1" in want and "measure/g/lost" not in want
        status: dict[str, Any] = await node.get("/v1/status")
        assert status["state"] == "ready" and status["registry"]["rewinds"] == 1
        # The handler followed: the restored m0 and m1 again, the lost create deleted.
        calls = read_record(record)[-1]  # the lifetime after the restart
        state: dict[str, int] = {}
        for call in calls:
            if call.op == "apply":
                state[call.key] = call.revision
            else:
                state.pop(call.key, None)
        assert {k: state.get(k) for k in ("measure/g/m0", "measure/g/m1")} == {
            "measure/g/m0": want["measure/g/m0"], "measure/g/m1": want["measure/g/m1"]}
        assert any(c.op == "delete" and c.key == "measure/g/lost" for c in calls)
    finally:
        await node.stop()
        await receiver.stop()
        await reg.close()
