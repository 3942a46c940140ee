"""Parked keys wait across a restart (DESIGN.md invariants 2 and 4).

A node subprocess with the recording handler (``tests/node_procs/recording.py``)
follows a real SQLite registry.  A measure's group fails permanently, so the
measure is parked and never reaches the handler; the node is SIGKILLed while
it waits.  The restarted node's start-up replay must not hand the measure over
either (its group is recorded as failed).  The group is fixed and the node dies
right after the group's call; the restarted node hands the group, then the
measure, once each.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from factories import group, measure
from node_procs.harness import NodeProc, read_record, read_state, wait_until
from node_procs.recording import KILL_ENV
from schemacache import open_registry
from schemacache.testing import FAULTS_ENV, write_faults

CONVERGE_TIMEOUT = 60.0
GROUP, MEASURE = "group/g", "measure/g/m"

pytestmark = pytest.mark.timeout(240)


async def test_a_parked_measure_gets_no_call_at_restart_until_its_group_is_fixed(
        tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'registry.db'}"
    reg = open_registry(url)
    faults = tmp_path / "faults.json"
    write_faults(faults, permanent={GROUP: "no space for the group"})
    record = tmp_path / "rec.log"
    state_dir = tmp_path / "state"
    trigger = tmp_path / "kill"
    node = NodeProc(url, state_dir, "parked", record=record,
                    env={FAULTS_ENV: str(faults), KILL_ENV: str(trigger)},
                    extra=["--repair-interval", "0"])

    async def parked() -> bool:
        status: dict[str, Any] = await node.get("/v1/status")
        return status["blocked"] == [{"key": MEASURE, "blocked_by": [GROUP]}]

    async def ready() -> bool:
        async with httpx.AsyncClient(timeout=5) as client:
            return (await client.get(f"{node.url}/readyz")).status_code == 200

    try:
        await reg.put(group("g"))
        m_rev = await reg.put(measure("g", "m"))
        await node.start()
        await node.wait_url()
        await wait_until(parked, CONVERGE_TIMEOUT, "the measure parked behind its group")

        async def durable() -> bool:
            state = read_state(state_dir)
            return (state is not None and GROUP in state.failures
                    and state.desired.get(MEASURE) == (m_rev, False))

        await wait_until(durable, CONVERGE_TIMEOUT, "the failure and the parked key on disk")
        await node.kill()  # a crash while the measure is parked

        await node.start()
        await node.wait_url()
        await wait_until(ready, CONVERGE_TIMEOUT, "the restarted node to be ready")
        # Ready means the start-up replay is over: the group's calls failed (the
        # replay's one included), the measure got none, in either lifetime.
        lifetimes = read_record(record)
        assert len(lifetimes) == 2
        for n, calls in enumerate(lifetimes):
            assert [c for c in calls if c.key == MEASURE] == [], (n, calls)
            assert calls and all(c.op == "fail-apply" for c in calls), (n, calls)
        await wait_until(parked, CONVERGE_TIMEOUT, "the measure parked again after the restart")
        lifetimes = read_record(record)
        assert [c for c in lifetimes[-1] if c.key == MEASURE] == []

        # The group is fixed: a new version that the handler takes -- and the
        # process dies right after that call, before its applied row is on disk.
        write_faults(faults)
        trigger.write_text(f"apply {GROUP} 0")
        g_rev = await reg.put(group("g"))  # the same spec, put again: a new revision
        assert node.proc is not None
        await asyncio.wait_for(node.proc.wait(), CONVERGE_TIMEOUT)
        await node.kill()  # reaps the output reader
        trigger.unlink()
        assert [(c.op, c.key, c.revision) for c in read_record(record)[-1]
                if not c.op.startswith("fail")] == [("apply", GROUP, g_rev)]

        # The restarted node hands the group its new version again, then the
        # measure for the first time: its prerequisite comes first.
        await node.start()
        await node.wait_url()
        await wait_until(ready, CONVERGE_TIMEOUT, "the node to be ready after the fix")

        async def measure_applied() -> bool:
            calls = read_record(record)[-1]
            return any(c.op == "apply" and c.key == MEASURE for c in calls)

        await wait_until(measure_applied, CONVERGE_TIMEOUT, "the measure handed over")
        calls = [(c.op, c.key, c.revision) for c in read_record(record)[-1]]
        assert calls == [("apply", GROUP, g_rev), ("apply", MEASURE, m_rev)], calls
        status: dict[str, Any] = await node.get("/v1/status")
        assert status["blocked"] == [] and status["failures"] == [], status
    finally:
        await node.stop()
        await reg.close()
