"""A delete names the newest version the handler may hold, in every call and across a crash.

A key is applied at version A, deleted, created again (version B) and deleted
again while the handler fails every call for it: the handler is handed the
apply of B (it fails), then the delete.  The node is SIGKILLed once the
tombstone is durable and restarted (its start-up replay hands the delete);
the handler keeps failing a while, then recovers.  Every delete handed after
the apply of B -- by the running node, the replay and each retry -- must name
B: naming A would hand the handler a life it has already seen end.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from conftest import registry_url
from factories import group, measure
from node_procs.harness import (
    NodeProc,
    applied_durably,
    backwards_calls,
    read_record,
    read_state,
    wait_until,
)
from schemacache import open_registry
from schemacache.testing import FAULTS_ENV, write_faults

KEY = "measure/g/k"
TIMEOUT = 60.0

pytestmark = pytest.mark.timeout(180)


async def test_every_delete_after_a_newer_apply_names_that_version(
        tmp_path: Path, request: pytest.FixtureRequest) -> None:
    url = registry_url("sqlite", tmp_path, request)
    reg = open_registry(url)
    record = tmp_path / "record.log"
    faults = tmp_path / "faults.json"
    write_faults(faults)
    state_dir = tmp_path / "state"
    node = NodeProc(url, state_dir, "delete-version", record=record,
                    env={FAULTS_ENV: str(faults)},
                    extra=["--repair-interval", "0", "--backoff-base", "0.05",
                           "--backoff-cap", "0.2"])

    def calls() -> list[tuple[str, int]]:
        return [(c.op, c.revision) for life in read_record(record) for c in life if c.key == KEY]

    try:
        await reg.put(group("g"))
        await node.start()
        await node.wait_url()
        first = await reg.put(measure("g", "k"))

        async def applied_first() -> bool:
            return await applied_durably(node, state_dir, KEY, first)

        await wait_until(applied_first, TIMEOUT, "version A applied durably")
        write_faults(faults, fail={KEY: "injected"})
        ended_first = await reg.delete(KEY)
        second = await reg.put(measure("g", "k", fields=("v2",)))

        async def handed_second() -> bool:
            return ("fail-apply", second) in calls()

        await wait_until(handed_second, TIMEOUT, "the apply of version B handed (and failed)")
        ended_second = await reg.delete(KEY)

        async def tombstone_durable() -> bool:
            state = read_state(state_dir)
            return state is not None and state.desired.get(KEY) == (ended_second, True)

        await wait_until(tombstone_durable, TIMEOUT, "the tombstone durable in state.db")
        await node.kill()
        await node.start()
        await node.wait_url()

        async def retried_after_restart() -> bool:
            lifetimes = read_record(record)
            return len(lifetimes) == 2 and sum(
                c.key == KEY and c.op == "fail-delete" for c in lifetimes[1]) >= 2

        await wait_until(retried_after_restart, TIMEOUT, "the replay and a retry of the delete")
        write_faults(faults)

        async def deleted() -> bool:
            return ("delete", second) in calls() or ("delete", first) in calls()

        await wait_until(deleted, TIMEOUT, "the delete to succeed")
    finally:
        await node.stop()
        await reg.close()

    seen = calls()
    after = seen[seen.index(("fail-apply", second)) + 1:]
    deletes = [(op, rev) for op, rev in after if op.endswith("delete")]
    assert deletes and all(rev == second for _, rev in deletes), seen
    assert deletes[-1] == ("delete", second), seen
    ends = {first: ended_first, second: ended_second}
    assert backwards_calls(read_record(record), lambda _k, v: ends.get(v)) == []
