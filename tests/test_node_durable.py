"""Durable node state: restart without a listing, replay, failure records,
corrupt state, compaction, and the node as a subprocess."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from factories import group, measure
from schemacache import open_registry
from schemacache.node import RetryPolicy
from schemacache.node.dirlock import StateDirInUseError
from schemacache.registry import Registry
from test_node_core import DEADLINE, RecordingHandler, new_node, registry_digest, until


@pytest.fixture
async def reg(tmp_path: Path) -> AsyncIterator[Registry]:
    r = open_registry(f"sqlite:///{tmp_path / 'registry.db'}")
    try:
        yield r
    finally:
        await r.close()


def repairs(node_text: str, reason: str) -> float:
    total = 0.0
    for line in node_text.splitlines():
        if line.startswith("schemacache_repairs_total{") and f'reason="{reason}"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_restart_resumes_without_listing(reg: Registry, tmp_path: Path) -> None:
    await reg.put(group("g"))
    for i in range(5):
        await reg.put(measure("g", f"m{i}"))
    h1 = RecordingHandler()
    async with new_node(reg, tmp_path, h1) as node:
        await node.ready(DEADLINE)
        stopped_at = node.received_revision
    # Changes while the node is down: create, update, delete.
    await reg.put(measure("g", "new"))
    await reg.put(measure("g", "m1", fields=("changed",)))
    await reg.delete("measure/g/m2")
    h2 = RecordingHandler()
    async with new_node(reg, tmp_path, h2) as node:
        await node.ready(DEADLINE)
        assert await node.wait_for_revision(await reg.revision(), DEADLINE)
        st = node.status()
        assert st["repair"]["count"] == 0  # no full listing on a normal restart
        assert repairs(node.metrics.render().decode(), "startup") == 0
        assert st["cache"]["digest"] == await registry_digest(reg)
        # Replay rebuilt the handler's state first, in dependency order.
        replayed = [c[1] for c in h2.calls[:6]]
        assert replayed[0] == "group/g" and len(set(replayed)) == 6
        assert h2.calls_for("measure/g/m2", "delete")
        assert h2.calls_for("measure/g/new", "apply")
        assert h2.state == {r.key: r.mod_revision for r in node.cache.list()}
        assert node.received_revision > stopped_at


async def test_failure_records_survive_restart(reg: Registry, tmp_path: Path) -> None:
    await reg.put(group("g"))
    rev = await reg.put(measure("g", "bad"))
    h = RecordingHandler()
    h.fail["measure/g/bad"] = RuntimeError("no space")
    policy = RetryPolicy(max_attempts=2, base=0.01)
    async with new_node(reg, tmp_path, h, retry=policy, repair_backoff_base=60) as node:
        await until(lambda: bool(node.failures()), what="failure record")
        before = node.failures()
    async with new_node(reg, tmp_path, h, retry=policy, repair_backoff_base=60) as node:
        assert node.failures() == before
        assert before[0]["key"] == "measure/g/bad" and before[0]["revision"] == rev
        assert "schemacache_failed_keys 1.0" in node.metrics.render().decode()
        del h.fail["measure/g/bad"]
        await node.repair()
        assert node.failures() == []
    async with new_node(reg, tmp_path, h) as node:
        assert node.failures() == []
        assert node.cache.get("measure/g/bad") is not None


@pytest.mark.parametrize("content", [b"this is not a database at all" * 100, "foreign"])
async def test_corrupt_state_is_moved_aside(reg: Registry, tmp_path: Path,
                                            content: bytes | str) -> None:
    await reg.put(group("g"))
    await reg.put(measure("g", "m"))
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    if content == "foreign":
        conn = sqlite3.connect(state_dir / "state.db")
        conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
        conn.commit()
        conn.close()
    else:
        assert isinstance(content, bytes)
        (state_dir / "state.db").write_bytes(content)
    h = RecordingHandler()
    async with new_node(reg, tmp_path, h) as node:
        await node.ready(DEADLINE)
        assert node.state_moved_aside is not None
        assert os.path.exists(node.state_moved_aside)  # noqa: ASYNC240
        assert node.status()["cache"]["digest"] == await registry_digest(reg)
        assert repairs(node.metrics.render().decode(), "startup") == 1
    aside = [p.name for p in state_dir.iterdir() if p.name.startswith("state.db.corrupt-")]
    assert len(aside) == 1


async def test_one_node_per_state_directory(reg: Registry, tmp_path: Path) -> None:
    await reg.put(group("g"))
    async with new_node(reg, tmp_path, name="first") as first:
        await first.ready(DEADLINE)
        second = new_node(reg, tmp_path, name="second")
        with pytest.raises(StateDirInUseError) as refused:
            await second.start()
        assert refused.value.directory == tmp_path / "state"
        assert refused.value.holder == str(os.getpid())
        assert "each node needs a state directory of its own" in str(refused.value)
        await second.stop()  # harmless after a failed start
        assert first.status()["state"] == "ready", "the running node is untouched"
    # Once the first node stopped, the directory is free again.
    async with new_node(reg, tmp_path, name="third") as third:
        await third.ready(DEADLINE)
        assert third.cache.get("group/g") is not None


async def test_compaction_while_down_repairs_and_deletes(reg: Registry, tmp_path: Path) -> None:
    await reg.put(group("g"))
    for i in range(6):
        await reg.put(measure("g", f"m{i}"))
    h = RecordingHandler()
    async with new_node(reg, tmp_path, h) as node:
        await node.ready(DEADLINE)
    for i in range(3):
        await reg.delete(f"measure/g/m{i}")
    await reg.put(measure("g", "fresh"))
    await reg.compact(await reg.revision())
    h2 = RecordingHandler()
    async with new_node(reg, tmp_path, h2) as node:
        await node.ready(DEADLINE)
        await until(lambda: repairs(node.metrics.render().decode(), "compacted") >= 1,
                    what="compacted repair")
        assert await node.wait_for_revision(await reg.revision(), DEADLINE)
        for i in range(3):
            assert h2.calls_for(f"measure/g/m{i}", "delete"), i
        assert h2.calls_for("measure/g/fresh", "apply")
        assert node.status()["cache"]["digest"] == await registry_digest(reg)
        assert 'schemacache_watch_restarts_total{reason="compacted"} 1.0' in (
            node.metrics.render().decode())
        # Still watching after the repair.
        rev = await reg.put(measure("g", "after"))
        assert await node.wait_for_revision(rev, DEADLINE)


async def test_node_subprocess_serves_admin_and_stops_on_sigterm(
    reg: Registry, tmp_path: Path
) -> None:
    await reg.put(group("g"))
    rev = await reg.put(measure("g", "m"))
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parent))
    proc = subprocess.Popen(  # noqa: ASYNC220 - read through to_thread below
        [sys.executable, "-m", "schemacache.node", "--registry",
         f"sqlite:///{tmp_path / 'registry.db'}", "--state-dir", str(tmp_path / "state"),
         "--name", "sub1", "--handler", "test_node_core:RecordingHandler",
         "--repair-interval", "0", "--node-ttl", "2"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    try:
        assert proc.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), 30)
        assert line.startswith("schemacache node sub1 admin http://127.0.0.1:"), line
        url = line.split()[-1]
        async with httpx.AsyncClient(base_url=url, timeout=5) as client:
            async def status() -> dict[str, object]:
                r = await client.get("/v1/status")
                return dict(r.json()) if r.status_code == 200 else {}

            deadline = asyncio.get_running_loop().time() + DEADLINE
            while (await status()).get("applied_revision") != rev:
                assert asyncio.get_running_loop().time() < deadline, await status()
                await asyncio.sleep(0.05)
            st = await status()
            assert st["node"] == "sub1" and st["cache"] == {  # type: ignore[comparison-overlap]
                "size": 2, "digest": await registry_digest(reg)}
            assert (await client.get("/readyz")).status_code == 200
            assert "schemacache_applied_revision" in (await client.get("/metrics")).text
            nodes = await reg.list_nodes()
            assert [(n.name, n.admin_url) for n in nodes] == [("sub1", url)]
        # A second node on the same state directory is refused, naming the holder.
        second = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "schemacache.node", "--registry",
             f"sqlite:///{tmp_path / 'registry.db'}", "--state-dir", str(tmp_path / "state"),
             "--name", "sub2"],
            capture_output=True, text=True, env=env, timeout=60)
        assert second.returncode == 1, second.stderr
        assert f"is in use by process {proc.pid}" in second.stderr, second.stderr
        assert "Traceback" not in second.stderr
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(asyncio.to_thread(proc.wait), 15) == 0
        assert await reg.list_nodes() == []
        conn = sqlite3.connect(tmp_path / "state" / "state.db")
        (received,) = conn.execute(
            "SELECT value FROM meta WHERE name='received_revision'").fetchone()
        conn.close()
        assert int(json.loads(received)) == rev
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
