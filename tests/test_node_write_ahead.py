"""Write-ahead: a handler never goes back in time across a crash (DESIGN.md invariant 2).

A node subprocess runs the recording handler (``tests/node_procs/recording.py``),
armed to SIGKILL its own process a few milliseconds after it applied (or
deleted) one key -- the instant where the node knows the handler saw a version
but has not committed that yet.  The restarted node must hand the handler
nothing older than what the dead one handed it, and never resurrect a deleted
key.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from conftest import registry_url
from factories import group, measure
from node_procs.harness import NodeProc, applied_durably, backwards_calls, read_record, wait_until
from node_procs.recording import KILL_ENV
from schemacache import Resource, open_registry

KILL_DELAYS_MS = (0, 5, 20, 50)
"""Milliseconds between the handler's successful call and its SIGKILL."""
CASES = [(op, delay) for op in ("update", "delete") for delay in KILL_DELAYS_MS]
CONVERGE_TIMEOUT = 60.0

pytestmark = pytest.mark.timeout(300)


async def _cached(node: NodeProc, key: str) -> int | None:
    cache = await node.get("/v1/cache")
    for r in cache["resources"]:
        if Resource.from_stored(r).key == key:
            return int(r["metadata"]["mod_revision"])
    return None


@pytest.mark.parametrize("backend", ["sqlite", "etcd"])
async def test_restart_after_a_kill_right_after_a_call_never_goes_back(
        backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """For each case (an update, then a delete; kill delays 0, 5, 20 and 50 ms),
    on one node that is killed and restarted once per case:

    1. the key is created (and, for an update, updated) and the node's
       ``state.db`` holds that version as applied -- what a restart used to
       replay;
    2. the handler is armed, and the key is updated (or deleted); the handler
       records the call and its process dies ``delay`` ms later;
    3. the node restarts on the same state directory and its cache reaches
       the registry's version of the key (or its absence).

    Then the handler's record, over all nine process lifetimes: no key ever
    goes back (no older version after a newer one, no apply after a delete),
    every kill landed right after the armed call, and after each update kill
    the first call the restarted process made for the key is the newest
    version (never the older applied one); after each delete kill the key is
    never applied again.
    """
    url = registry_url(backend, tmp_path, request)
    reg = open_registry(url)
    record = tmp_path / "record.log"
    trigger = tmp_path / "kill"
    state_dir = tmp_path / "state"
    node = NodeProc(url, state_dir, "write-ahead", record=record, env={KILL_ENV: str(trigger)},
                    extra=["--workers", "2", "--repair-interval", "0"])
    deletes: dict[str, list[int]] = defaultdict(list)
    armed: list[tuple[str, str, int]] = []  # (op, key, revision of the armed write)
    try:
        await reg.put(group("g"))
        await node.start()
        await node.wait_url()
        for i, (op, delay) in enumerate(CASES):
            key = f"measure/g/k{i}"
            rev = await reg.put(measure("g", f"k{i}"))
            if op == "update":
                rev = await reg.put(measure("g", f"k{i}", fields=("v2",)))

            async def durable(key: str = key, rev: int = rev) -> bool:
                return await applied_durably(node, state_dir, key, rev)

            await wait_until(durable, CONVERGE_TIMEOUT, f"{key} at {rev} applied durably")
            trigger.write_text(f"{'apply' if op == 'update' else 'delete'} {key} {delay}")
            if op == "update":
                new = await reg.put(measure("g", f"k{i}", fields=("v3",)))
            else:
                new = await reg.delete(key)
                deletes[key].append(new)
            armed.append((op, key, new))
            assert node.proc is not None
            await asyncio.wait_for(node.proc.wait(), CONVERGE_TIMEOUT)
            await node.kill()  # reaps the output reader
            trigger.unlink()
            await node.start()
            await node.wait_url()

            async def converged(key: str = key, op: str = op, new: int = new) -> bool:
                return await _cached(node, key) == (new if op == "update" else None)

            await wait_until(converged, CONVERGE_TIMEOUT, f"{key} converged after the kill")
        status: dict[str, Any] = await node.get("/v1/status")
        assert status["failures"] == []
    finally:
        await node.stop()
        await reg.close()

    lifetimes = read_record(record)
    assert len(lifetimes) == len(CASES) + 1

    def delete_end(key: str, version: int) -> int | None:
        later = [d for d in deletes.get(key, []) if d > version]
        return min(later) if later else None

    assert backwards_calls(lifetimes, delete_end) == []
    for n, (op, key, new) in enumerate(armed):
        died, restarted = lifetimes[n], lifetimes[n + 1]
        own = [c for c in died if c.key == key]
        assert own and own[-1].op == ("apply" if op == "update" else "delete"), (n, own)
        later = [c for c in restarted if c.key == key]
        if op == "update":
            assert own[-1].revision == new
            assert later and (later[0].op, later[0].revision) == ("apply", new), (n, later)
        else:
            assert all(c.op == "delete" for c in later), (n, later)
