"""The ``sqlite:///`` registry: its own behaviour, across instances and across processes.

Everything runs against real files under ``tmp_path``; the cross-process tests
start real writer and watcher subprocesses (``tests/sqlite_procs/``) and kill
them by PID when done.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from polling import until
from schemacache import (
    CompactedError,
    ConflictError,
    Event,
    NotFoundError,
    ReferencedError,
    RegistryRewoundError,
    RegistryUnavailableError,
    Resource,
    ValidationError,
    open_registry,
)
from schemacache.registry import sqlite_changes, sqlite_watch
from schemacache.registry.history import event_mark
from schemacache.registry.sqlite import SqliteRegistry, SqliteStoreError
from sqlite_files import online_copy

PROCS = Path(__file__).parent / "sqlite_procs"
WAIT = 30.0
"""Seconds a test waits for a condition before failing."""

_spec = importlib.util.spec_from_file_location("sqlite_procs_common", PROCS / "common.py")
assert _spec is not None and _spec.loader is not None
common = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(common)
group, index_rule, measure = common.group, common.index_rule, common.measure
binding, topn = common.binding, common.topn


# ---------------------------------------------------------------- helpers


@pytest.fixture
def db(tmp_path: Path) -> str:
    return str(tmp_path / "nested" / "dir" / "registry.db")


@pytest.fixture
async def reg(db: str) -> AsyncIterator[SqliteRegistry]:
    registry = SqliteRegistry(db)
    try:
        yield registry
    finally:
        await registry.close()


async def wait_until(cond: Callable[[], Any], within: float = WAIT) -> None:
    await until(cond, "condition", within, interval=0.01)


def poll(cond: Callable[[], bool], timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


async def collect(agen: AsyncIterator[Event], n: int, within: float = WAIT) -> list[Event]:
    out: list[Event] = []

    async def run() -> None:
        async for event in agen:
            out.append(event)
            if len(out) >= n:
                return

    await asyncio.wait_for(run(), within)
    return out


def raw(path: str) -> sqlite3.Connection:
    """A plain read connection to the registry file, for checking what is stored."""
    return sqlite3.connect(path, isolation_level=None, timeout=WAIT)


def change_revisions(path: str) -> list[int]:
    with raw(path) as conn:
        return [r for (r,) in conn.execute("SELECT revision FROM changes ORDER BY revision")]


def meta_revision(path: str) -> int:
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=WAIT)
    except sqlite3.OperationalError:
        return 0
    try:
        row = conn.execute("SELECT revision FROM meta").fetchone()
        return int(row[0]) if row else 0
    except sqlite3.OperationalError:  # not created yet
        return 0
    finally:
        conn.close()


class Procs:
    """Subprocesses started by one test; all killed by PID at teardown."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, script: str, *args: str) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(
            [sys.executable, str(PROCS / script), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.procs.append(proc)
        return proc

    def kill_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGKILL)
            proc.wait(timeout=WAIT)
            for stream in (proc.stdout, proc.stderr):
                if stream is not None:
                    stream.close()


@pytest.fixture
def procs() -> Iterator[Procs]:
    p = Procs()
    try:
        yield p
    finally:
        p.kill_all()


def finish(proc: subprocess.Popen[bytes], timeout: float = 90.0) -> None:
    _, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err.decode()


def read_records(path: Path) -> list[list[str]]:
    return [line.split("\t") for line in path.read_text().splitlines()]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# ---------------------------------------------------------------- the store itself


async def test_store_is_created_on_first_use_in_wal_mode(db: str) -> None:
    registry = SqliteRegistry(db)
    assert not await asyncio.to_thread(os.path.exists, db), "nothing touched before first use"
    try:
        assert await registry.revision() == 0
        cid = await registry.cluster_id()
    finally:
        await registry.close()
    assert len(cid) == 16 and int(cid, 16) >= 0
    with raw(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"meta", "resources", "changes", "nodes"} <= tables
    again = SqliteRegistry(db)
    try:
        assert await again.cluster_id() == cid, "the cluster id lives with the store"
    finally:
        await again.close()
    other = SqliteRegistry(db + ".other")
    try:
        assert await other.cluster_id() != cid
    finally:
        await other.close()


async def test_open_registry_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    relative = open_registry("sqlite:///var/rel.db?history=7")
    absolute = open_registry(f"sqlite:///{tmp_path}/abs.db")
    try:
        assert isinstance(relative, SqliteRegistry) and isinstance(absolute, SqliteRegistry)
        await relative.put(group())
        await absolute.put(group())
        assert (tmp_path / "var" / "rel.db").exists() and (tmp_path / "abs.db").exists()
        for _ in range(10):
            await relative.put(group())
        with raw(str(tmp_path / "var" / "rel.db")) as conn:
            assert conn.execute("SELECT count(*) FROM changes").fetchone()[0] == 7
    finally:
        await relative.close()
        await absolute.close()


async def test_a_file_that_is_not_a_registry_is_refused_clearly(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database\n" * 400)
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as conn:
        conn.execute("CREATE TABLE people (name TEXT)")
    directory = tmp_path / "adir"
    directory.mkdir()
    for path in (garbage, foreign, directory):
        registry = SqliteRegistry(str(path))
        try:
            with pytest.raises(SqliteStoreError) as info:
                await registry.list()
            assert str(path) in str(info.value)
        finally:
            await registry.close()
    assert garbage.read_bytes().startswith(b"this is not a database"), "left untouched"


async def test_close_twice_ends_watches_and_refuses_calls(db: str) -> None:
    registry = SqliteRegistry(db)
    await registry.put(group())
    received: list[Event] = []

    async def watch() -> None:
        async for event in registry.watch("", 1):
            received.append(event)

    task = asyncio.create_task(watch())
    await wait_until(lambda: len(received) == 1)
    await registry.close()
    await asyncio.wait_for(task, WAIT)  # the watch ends, without an error
    await registry.close()
    with pytest.raises(RegistryUnavailableError):
        await registry.get("group/g")


# ---------------------------------------------------------------- basic semantics


async def test_cas_create_update_delete(reg: SqliteRegistry, db: str) -> None:
    assert await reg.put(group(), expected_revision=0) == 1
    with pytest.raises(ConflictError) as info:
        await reg.put(group(), expected_revision=0)
    assert (info.value.expected, info.value.actual) == (0, 1)
    assert await reg.put(group(), expected_revision=1) == 2
    with pytest.raises(ConflictError):
        await reg.put(group(), expected_revision=1)
    assert await reg.put(index_rule("a")) == 3
    current = await reg.get("group/g")
    assert (current.create_revision, current.mod_revision) == (1, 2)
    assert current.metadata.updated_at is not None
    with pytest.raises(ConflictError):
        await reg.delete("index_rule/g/a", expected_revision=2)
    with pytest.raises(NotFoundError):
        await reg.delete("index_rule/g/nope")
    with pytest.raises(ConflictError) as missing:
        await reg.delete("index_rule/g/nope", expected_revision=3)
    assert missing.value.actual == 0
    with pytest.raises(NotFoundError):
        await reg.get("index_rule/g/nope")
    assert await reg.revision() == 3, "refused writes do not use a revision"
    assert change_revisions(db) == [1, 2, 3]
    assert await reg.delete("index_rule/g/a", expected_revision=3) == 4
    with pytest.raises(NotFoundError):
        await reg.get("index_rule/g/a")
    assert await reg.put(index_rule("a"), expected_revision=0) == 5
    assert (await reg.get("index_rule/g/a")).create_revision == 5, "a new life after a delete"


async def test_list_snapshot_then_watch_from_next_revision(reg: SqliteRegistry) -> None:
    await reg.put(group())
    for i in range(5):
        await reg.put(index_rule(f"r{i}"))
    items, rev = await reg.list()
    assert rev == 6 and [r.key for r in items] == ["group/g"] + [
        f"index_rule/g/r{i}" for i in range(5)
    ]
    assert [r.key for r in (await reg.list("index_rule/g/r1"))[0]] == ["index_rule/g/r1"]
    assert (await reg.list("nothing/"))[0] == []

    everything = reg.watch("", rev + 1)
    only_m = reg.watch("measure/", rev + 1)
    first = asyncio.ensure_future(collect(everything, 4))
    second = asyncio.ensure_future(collect(only_m, 1))
    await asyncio.sleep(0)
    expected = [
        await reg.put(measure("m")),
        await reg.put(index_rule("r0", tag="x")),
        await reg.delete("index_rule/g/r1"),
        await reg.put(index_rule("r9")),
    ]
    events = await first
    assert [e.revision for e in events] == expected == [7, 8, 9, 10]
    assert [(e.type, e.key) for e in events] == [
        ("PUT", "measure/g/m"),
        ("PUT", "index_rule/g/r0"),
        ("DELETE", "index_rule/g/r1"),
        ("PUT", "index_rule/g/r9"),
    ]
    assert events[1].resource.spec["tags"] == ["x"]
    assert events[2].resource.mod_revision == 3, "a DELETE carries the last version"
    assert [e.key for e in await second] == ["measure/g/m"]
    for e in events:
        # The registry's own text rides along (a node stores it as is), and is
        # no part of the event's identity.
        assert e.stored_json is not None
        assert Resource.from_stored(json.loads(e.stored_json)) == e.resource
        assert e == Event(type=e.type, key=e.key, revision=e.revision, resource=e.resource)
    assert Event(type=events[0].type, key="measure/g/m", revision=7,
                 resource=events[0].resource).stored_json is None
    await everything.aclose()
    await only_m.aclose()
    # With no watch left, the poll for other processes' commits stops.
    await wait_until(lambda: not reg._watches.polling)

    from_now = reg.watch()
    upcoming = asyncio.ensure_future(collect(from_now, 1))
    await wait_until(lambda: reg._watches.idle == 1)  # started, idle at the head
    assert await reg.put(index_rule("r8")) == 11
    assert [e.revision for e in await upcoming] == [11], "default start: the next revision"
    await from_now.aclose()


async def test_prefix_watch_reads_past_batches_of_other_keys(
    db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No wake-ups at all for the watcher: it must read on by itself while
    # whole batches of the log hold no key under its prefix.
    monkeypatch.setattr(sqlite_watch, "WATCH_SAFETY_WAKEUP", 3600.0)
    monkeypatch.setattr(sqlite_changes, "WATCH_BATCH", 10)
    writer = SqliteRegistry(db)
    watcher = SqliteRegistry(db, poll_interval=3600.0)
    try:
        await writer.put(group())
        for i in range(25):
            await writer.put(index_rule(f"r{i}"))
        rev = await writer.put(measure("m"))
        events = await collect(watcher.watch("measure/", 1), 1, within=10)
        assert [(e.key, e.revision) for e in events] == [("measure/g/m", rev)]
    finally:
        await writer.close()
        await watcher.close()


async def test_watch_reads_the_next_batch_ahead_and_closes_cleanly(
    db: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(sqlite_changes, "WATCH_BATCH", 10)
    reg = SqliteRegistry(db)
    reads: list[int] = []
    real_read = sqlite_changes.read_changes

    def counted(conn: sqlite3.Connection, prefix: str, next_rev: int,
                last_mark: str | None = None) -> Any:
        reads.append(next_rev)
        return real_read(conn, prefix, next_rev, last_mark)

    monkeypatch.setattr(sqlite_watch, "read_changes", counted)
    try:
        await reg.put(group())
        for i in range(34):
            await reg.put(index_rule(f"r{i}"))
        batches = reg.watch_batches("", 1)
        first = await asyncio.wait_for(batches.__anext__(), WAIT)
        assert [e.revision for e in first] == list(range(1, 11))
        # Handed the first batch, the watch is already reading the second.
        await until(lambda: reads == [1, 11], "the read ahead", WAIT)
        rest = [e.revision for _ in range(3)
                for e in await asyncio.wait_for(batches.__anext__(), WAIT)]
        assert rest == list(range(11, 36))
        await batches.aclose()
        # Closed with a read under way: nothing is left running, nothing logged.
        await until(lambda: not [t for t in asyncio.all_tasks()
                                 if t.get_coro().__qualname__ == "SqliteConnections.read"],
                    "the read ahead to end", WAIT)
    finally:
        await reg.close()
    assert "never retrieved" not in caplog.text


async def test_list_is_one_snapshot_while_another_instance_writes(
    reg: SqliteRegistry, db: str
) -> None:
    writer = SqliteRegistry(db)
    await writer.put(group())
    stop = asyncio.Event()

    async def write() -> None:
        i = 0
        while not stop.is_set():
            if i % 3 == 2:
                await writer.delete(f"index_rule/g/r{i - 1}")
            else:
                await writer.put(index_rule(f"r{i}"))
            i += 1

    task = asyncio.create_task(write())
    listings: list[tuple[set[tuple[str, int]], int]] = []
    try:
        for _ in range(30):
            items, rev = await reg.list()
            listings.append(({(r.key, r.mod_revision) for r in items}, rev))
            await asyncio.sleep(0.003)
    finally:
        stop.set()
        await task
        await writer.close()
    with raw(db) as conn:
        log = conn.execute("SELECT revision, key, type FROM changes ORDER BY revision").fetchall()
    revisions = {rev for _, rev in listings}
    assert len(revisions) > 5, "the writer made progress between listings"
    for state, rev in listings:
        expected: dict[str, int] = {}
        for r, key, kind in log:
            if r > rev:
                break
            if kind == "PUT":
                expected[key] = r
            else:
                expected.pop(key, None)
        assert state == set(expected.items()), f"listing at {rev} is not one snapshot"


async def test_compaction_by_history_and_explicitly(db: str) -> None:
    reg = SqliteRegistry(db, history=5)
    try:
        await reg.put(group())
        for i in range(9):
            await reg.put(index_rule(f"r{i}"))
        assert change_revisions(db) == [6, 7, 8, 9, 10]
        with pytest.raises(CompactedError) as info:
            await collect(reg.watch("", 3), 1)
        assert (info.value.compact_revision, info.value.requested) == (6, 3)
        events = await collect(reg.watch("", 6), 5)
        assert [e.revision for e in events] == [6, 7, 8, 9, 10]

        await reg.compact(9)
        assert change_revisions(db) == [9, 10]
        with pytest.raises(CompactedError) as info:
            await collect(reg.watch("", 8), 1)
        assert info.value.compact_revision == 9
        await reg.compact(4)  # older than what is kept: nothing changes
        await reg.compact(1000)  # past the head: compacts to the head only
        assert change_revisions(db) == [10]

        # A slow watcher overtaken by compaction learns it on its next read.
        slow = reg.watch("", 10)
        assert (await slow.__anext__()).revision == 10
        other = SqliteRegistry(db, history=5)
        try:
            for i in range(8):
                await other.put(index_rule(f"s{i}"))
        finally:
            await other.close()
        with pytest.raises(CompactedError) as info:
            await slow.__anext__()
        assert (info.value.compact_revision, info.value.requested) == (14, 11)
    finally:
        await reg.close()


async def test_references_and_cascade_delete(reg: SqliteRegistry, db: str) -> None:
    with pytest.raises(ValidationError) as info:
        await reg.put(measure("m"))
    assert info.value.field == "metadata.group"
    await reg.put(group("s", catalog="STREAM"))
    with pytest.raises(ValidationError):
        await reg.put(measure("m", group_name="s"))
    await reg.put(group())
    await reg.put(measure("m"))
    await reg.put(index_rule("r"))
    with pytest.raises(ValidationError) as info:
        await reg.put(binding("b", ["r", "missing"], "m"))
    assert info.value.field == "spec.rules[1]"
    await reg.put(binding("b", ["r"], "m"))
    await reg.put(topn("t", "m"))
    with pytest.raises(ValidationError):
        await reg.put(group(catalog="STREAM"))  # catalog change with members
    head = await reg.revision()

    with pytest.raises(ReferencedError) as refused:
        await reg.delete("group/g")
    assert set(refused.value.dependents) >= {"measure/g/m", "index_rule/g/r"}
    with pytest.raises(ReferencedError):
        await reg.delete("measure/g/m")
    assert await reg.revision() == head and change_revisions(db)[-1] == head

    watch = reg.watch("", head + 1)
    rev = await reg.delete("group/g", cascade=True)
    events = await collect(watch, 5)
    await watch.aclose()
    assert rev == head + 5
    assert [e.revision for e in events] == list(range(head + 1, head + 6))
    assert all(e.type == "DELETE" for e in events)
    order = [e.key for e in events]
    assert set(order[:2]) == {"index_rule_binding/g/b", "topn_aggregation/g/t"}
    assert set(order[2:4]) == {"measure/g/m", "index_rule/g/r"}
    assert order[4] == "group/g"
    assert [r.key for r in (await reg.list())[0]] == ["group/s"]


CASCADE_MEMBERS = 300


async def test_cascade_is_one_transaction_to_other_readers(reg: SqliteRegistry, db: str) -> None:
    await reg.put(group())
    for i in range(CASCADE_MEMBERS):
        await reg.put(index_rule(f"r{i}"))
    head = await reg.revision()
    reader = SqliteRegistry(db)  # its own connection, as another process would have
    seen: list[tuple[int, int]] = []
    try:
        deleting = asyncio.ensure_future(reg.delete("group/g", cascade=True))
        while not deleting.done():
            items, rev = await reader.list()
            seen.append((len(items), rev))
        rev = await deleting
        items, last = await reader.list()
        seen.append((len(items), last))
    finally:
        await reader.close()
    assert rev == head + CASCADE_MEMBERS + 1, "one revision per deleted resource"
    everything = CASCADE_MEMBERS + 1
    assert {(n, r) for n, r in seen} <= {(everything, head), (0, rev)}, (
        "a reader saw part of the cascade")
    assert seen[-1] == (0, rev)


async def test_node_registrations_expire_and_stay_apart(reg: SqliteRegistry, db: str) -> None:
    await reg.put(group())
    lease = await reg.register_node("n1", "http://127.0.0.1:9001", ttl=0.5)
    long = await reg.register_node("n2", "http://127.0.0.1:9002", ttl=60)
    other = SqliteRegistry(db)
    try:
        assert [n.name for n in await other.list_nodes()] == ["n1", "n2"]
        assert await reg.revision() == 1 and change_revisions(db) == [1]
        assert [r.key for r in (await reg.list())[0]] == ["group/g"]

        async def only_n2() -> bool:
            return [n.name for n in await other.list_nodes()] == ["n2"]

        await wait_until(only_n2, within=5)  # n1 expired without a refresh
        await lease.refresh()  # re-registers after expiry
        assert [n.admin_url for n in await other.list_nodes()] == [
            "http://127.0.0.1:9001",
            "http://127.0.0.1:9002",
        ]
        await long.revoke()
        assert [n.name for n in await other.list_nodes()] == ["n1"]
        assert await reg.revision() == 1 and change_revisions(db) == [1]
    finally:
        await other.close()


async def test_list_of_100k_resources(tmp_path: Path) -> None:
    db = str(tmp_path / "big.db")
    count = 100_000
    async with SqliteRegistry(db) as reg:
        await reg.put(group())
    template = index_rule("x").to_dict()
    rows, changes = [], []
    for i in range(count):
        rev = i + 2
        doc = dict(template, metadata={"group": "g", "name": f"r{i:06d}", "create_revision": rev,
                                       "mod_revision": rev, "updated_at": "2026-01-01T00:00:00Z"})
        value = json.dumps(doc, separators=(",", ":"))
        key = f"index_rule/g/r{i:06d}"
        rows.append((key, "index_rule", "g", value, rev, rev))
        changes.append((rev, key, "PUT", value))
    with raw(db) as conn:  # written in bulk: building it through put() would take minutes
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO resources VALUES (?, ?, ?, ?, ?, ?)", rows)
        conn.executemany("INSERT INTO changes VALUES (?, ?, ?, ?)", changes)
        conn.execute("UPDATE meta SET revision = ?", (count + 1,))
        conn.execute("COMMIT")
    del rows, changes
    async with SqliteRegistry(db) as reg:
        await reg.revision()
        started = time.perf_counter()
        items, rev = await reg.list()
        elapsed = time.perf_counter() - started
        assert rev == count + 1 and len(items) == count + 1
        assert items[0].key == "group/g" and items[-1].key == f"index_rule/g/r{count - 1:06d}"
        assert items[-1].mod_revision == count + 1 and items[-1].spec == template["spec"]
        started = time.perf_counter()
        prefixed, _ = await reg.list("index_rule/g/r01")
        elapsed_prefix = time.perf_counter() - started
        assert len(prefixed) == 10_000
    print(f"\n[sqlite] list() of {count + 1} resources: {elapsed:.2f} s; "
          f"of 10,000 by prefix: {elapsed_prefix:.3f} s")


# ---------------------------------------------------------------- two instances, one file


async def test_two_instances_on_one_file(db: str) -> None:
    a, b = SqliteRegistry(db), SqliteRegistry(db)
    try:
        await a.put(group())
        seen = asyncio.ensure_future(collect(a.watch("", 2), 200))
        await asyncio.sleep(0)

        async def writes(reg: SqliteRegistry, tag: str) -> list[int]:
            return [await reg.put(index_rule(f"{tag}{i}")) for i in range(100)]

        revs_a, revs_b = await asyncio.gather(writes(a, "a"), writes(b, "b"))
        events = await seen
        assert sorted(revs_a + revs_b) == list(range(2, 202)), "gap-free across connections"
        assert [e.revision for e in events] == list(range(2, 202))
        assert {e.key for e in events if e.revision in set(revs_b)} == {
            f"index_rule/g/b{i}" for i in range(100)
        }
        assert await a.cluster_id() == await b.cluster_id()
    finally:
        await a.close()
        await b.close()


# ---------------------------------------------------------------- other processes


def test_cross_process_watcher_receives_2000_writes_in_order(
    tmp_path: Path, procs: Procs
) -> None:
    db, out, times = str(tmp_path / "reg.db"), tmp_path / "watch.tsv", tmp_path / "times.tsv"
    count = 2000
    watcher = procs.start("watcher.py", db, "1", str(count + 1), str(out))
    poll(lambda: Path(str(out) + ".ready").exists())
    writer = procs.start("writer.py", db, str(count), "--times", str(times))
    finish(writer)
    finish(watcher)

    received = read_records(out)
    revisions = [int(r[0]) for r in received]
    assert revisions == list(range(1, count + 2)), "all, in order, no gap, no repeat"
    written = {int(r[0]): r[1] for r in read_records(times)}
    assert {int(r[0]): r[1] for r in received} == written
    lat = [(int(r[3]) - int(t[2])) / 1e6 for r, t in zip(received, read_records(times),
                                                            strict=True)]
    print(f"\n[sqlite] burst of {count + 1} writes, cross-process commit->seen latency: "
          f"p50 {percentile(lat, 0.5):.2f} ms, p99 {percentile(lat, 0.99):.2f} ms, "
          f"max {max(lat):.2f} ms")


def test_cross_process_latency_of_paced_writes(tmp_path: Path, procs: Procs) -> None:
    db, out, times = str(tmp_path / "reg.db"), tmp_path / "watch.tsv", tmp_path / "times.tsv"
    count = 150
    watcher = procs.start("watcher.py", db, "1", str(count + 1), str(out))
    poll(lambda: Path(str(out) + ".ready").exists())
    writer = procs.start("writer.py", db, str(count), "--interval", "0.02", "--times", str(times))
    finish(writer)
    finish(watcher)
    received, written = read_records(out), read_records(times)
    assert [int(r[0]) for r in received] == [int(t[0]) for t in written]
    lat = [(int(r[3]) - int(t[2])) / 1e6 for r, t in zip(received, written, strict=True)]
    print(f"\n[sqlite] {count + 1} paced writes (20 ms apart), cross-process commit->seen "
          f"latency: p50 {percentile(lat, 0.5):.2f} ms, p99 {percentile(lat, 0.99):.2f} ms, "
          f"mean {statistics.fmean(lat):.2f} ms")


def test_two_writer_processes_share_one_revision_sequence(tmp_path: Path, procs: Procs) -> None:
    db = str(tmp_path / "reg.db")  # both create the store and race for the group
    times = [tmp_path / "w1.tsv", tmp_path / "w2.tsv"]
    writers = [
        procs.start("writer.py", db, "300", "--start", str(i * 100_000), "--times", str(t))
        for i, t in enumerate(times)
    ]
    for w in writers:
        finish(w)
    own = [[int(r[0]) for r in read_records(t)] for t in times]
    assert all(revs == sorted(revs) for revs in own)
    assert sorted(own[0] + own[1]) == list(range(1, 602)), "one group, 600 rules, no gap"
    assert change_revisions(db) == list(range(1, 602))


OPENERS = 2
"""Two, not more: an opener spinning without a core to run on would miss the race."""
OPEN_ROUNDS = 8


def test_processes_creating_one_store_at_once_all_succeed(tmp_path: Path, procs: Procs) -> None:
    # SQLite refuses a concurrent switch to WAL without waiting for the lock;
    # the store must retry it rather than fail whoever comes second.
    for round_ in range(OPEN_ROUNDS):
        db, go = tmp_path / f"reg{round_}.db", tmp_path / f"go{round_}"
        openers = [procs.start("opener.py", str(db), str(go)) for _ in range(OPENERS)]
        for proc in openers:
            assert proc.stdout is not None
            assert proc.stdout.readline() == b"ready\n"
        go.touch()
        outputs = []
        for proc in openers:
            out, err = proc.communicate(timeout=WAIT)
            assert proc.returncode == 0, err.decode()
            outputs.append(out.decode().split("\t"))
        assert len({cluster for cluster, _ in outputs}) == 1, "one store, one cluster id"
        assert all(rev.strip() == "0" for _, rev in outputs)


def _check_consistent(db: str) -> int:
    """Assert the stored state is whole; returns the head revision."""
    with raw(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        head, compact = conn.execute("SELECT revision, compact_revision FROM meta").fetchone()
        log = conn.execute(
            "SELECT revision, key, type, resource FROM changes ORDER BY revision"
        ).fetchall()
        assert [r[0] for r in log] == list(range(max(1, compact), head + 1)), "gap-free log"
        last: dict[str, tuple[int, str, str]] = {r[1]: (r[0], r[2], r[3]) for r in log}
        rows = {
            key: (value, mod)
            for key, value, mod in conn.execute("SELECT key, value, mod_revision FROM resources")
        }
    live = {key: (rev, value) for key, (rev, kind, value) in last.items() if kind == "PUT"}
    assert set(rows) == set(live), "resource rows are exactly the keys last PUT"
    for key, (value, mod) in rows.items():
        assert (mod, value) == live[key], f"{key} differs from its last change"
        assert json.loads(value)["metadata"]["mod_revision"] == mod
    return int(head)


def test_sigkill_mid_stream_leaves_store_consistent(tmp_path: Path, procs: Procs) -> None:
    db = str(tmp_path / "reg.db")
    head = 0
    for round_no in range(3):
        writer = procs.start("writer.py", db, "100000", "--mixed", "--start",
                             str(round_no * 1_000_000))
        target = head + 300 + 150 * round_no
        poll(lambda t=target: meta_revision(db) >= t)  # type: ignore[misc]
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait(timeout=WAIT)
        assert writer.returncode == -signal.SIGKILL
        head = _check_consistent(db)
        assert head >= target

    async def reopen() -> None:
        async with SqliteRegistry(db) as reg:
            items, rev = await reg.list()
            assert rev == head
            with raw(db) as conn:
                assert len(items) == conn.execute("SELECT count(*) FROM resources").fetchone()[0]
            assert await reg.put(index_rule("after_crash")) == head + 1
            events = await collect(reg.watch("", 1), head + 1)
            assert [e.revision for e in events] == list(range(1, head + 2))

    asyncio.run(reopen())
    _check_consistent(db)


# ---------------------------------------------------------------- restored and written past


async def test_a_backup_restored_and_written_past_is_told_by_its_change_marks(
        reg: SqliteRegistry, db: str, tmp_path: Path) -> None:
    """Revision R names another change once a backup older than R was restored and
    written past R: ``check_resume`` with the mark of the change seen at R refuses
    (diverged), with the registry's own mark it passes, and a running watch whose
    cursor is past the backup raises instead of reading the new history on."""
    await reg.put(group("g"))
    backup = str(tmp_path / "backup.db")
    online_copy(db, backup)
    await reg.put(measure("lost", "g"))
    watch = reg.watch("", start_revision=1)
    events = await collect(watch, 2)
    seen = events[-1]
    assert await reg.check_resume(seen.revision + 1, event_mark(seen)) is None
    online_copy(backup, db)
    await reg.put(measure("new", "g"))
    await reg.put(measure("newer", "g"))
    assert await reg.revision() > seen.revision
    with pytest.raises(RegistryRewoundError) as refused:
        await reg.check_resume(seen.revision + 1, event_mark(seen))
    assert refused.value.diverged and refused.value.seen == seen.revision
    own = await collect(reg.watch("", start_revision=seen.revision), 1)
    await reg.check_resume(seen.revision + 1, event_mark(own[0]))
    with pytest.raises(RegistryRewoundError):
        await collect(watch, 1)
    await watch.aclose()  # type: ignore[attr-defined]
