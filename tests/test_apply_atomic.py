"""All-or-nothing writes on every backend: multi-document apply and cascade delete.

A failure injected at every position of a manifest (a broken document, or on
SQLite a storage failure while the rows are written) must leave the registry
exactly as it was: same digest, same revision, and no event in the watch.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from factories import binding, group, index_rule, measure, topn
from schemacache import Registry, Resource, ValidationError
from schemacache.apply import apply_resources
from schemacache.errors import SchemaCacheError, TooLargeError
from schemacache.model import digest_of

# etcd's default --max-txn-ops; the session's etcd runs with the defaults.
ETCD_MAX_TXN_OPS = 128


async def seed(registry: Registry) -> None:
    """A group ``base`` with a measure ``m1``: something a bad apply could break."""
    await apply_resources(registry, [group("base"), measure("base", "m1")])


def manifest() -> list[Resource]:
    """Six valid documents touching new and existing groups, every dependency level."""
    return [
        group("fresh"),
        measure("fresh", "x"),
        measure("base", "y"),
        index_rule("base", "r"),
        binding("base", "b", ["r"], "y"),
        topn("fresh", "t", "base", "m1"),
    ]


def dangling_reference() -> Resource:
    return measure("nope", "lost")


def catalog_change() -> Resource:
    return group("base", catalog="STREAM")  # base has members: refused


def missing_rule() -> Resource:
    return binding("base", "b2", ["no_such_rule"], "m1")


def topn_without_field() -> Resource:
    return topn("base", "t2", "base", "m1", field="absent")


FAILURES: dict[str, Callable[[], Resource]] = {
    "dangling reference": dangling_reference,
    "catalog change": catalog_change,
    "missing rule": missing_rule,
    "top-N field": topn_without_field,
}


async def state(registry: Registry) -> tuple[str, int]:
    items, revision = await registry.list()
    return digest_of(items), revision


@pytest.mark.parametrize("failure", sorted(FAILURES))
async def test_a_broken_document_at_any_position_writes_nothing(
    registry: Registry, failure: str
) -> None:
    await seed(registry)
    before = await state(registry)
    docs = manifest()
    for position in range(len(docs) + 1):
        broken = [*docs[:position], FAILURES[failure](), *docs[position:]]
        with pytest.raises(ValidationError) as exc:
            await apply_resources(registry, broken)
        assert exc.value.document == position + 1, (failure, position, exc.value)
        assert await state(registry) == before, (failure, position)
    # The same manifest without the broken document goes through at once.
    results = await apply_resources(registry, docs)
    assert {r.outcome for r in results} == {"created"}


async def test_a_duplicate_key_at_any_position_writes_nothing(registry: Registry) -> None:
    await seed(registry)
    before = await state(registry)
    docs = manifest()
    for position in range(1, len(docs) + 1):
        with pytest.raises(ValidationError) as exc:
            await apply_resources(registry, [*docs[:position], docs[0], *docs[position:]])
        assert exc.value.document == position + 1
        assert "defined twice" in str(exc.value)
        assert await state(registry) == before


async def test_new_group_and_catalog_change_writes_neither(registry: Registry) -> None:
    """The case of the issue: [a new group, a catalog change of an existing group]."""
    await seed(registry)
    before = await state(registry)
    with pytest.raises(ValidationError) as exc:
        await apply_resources(registry, [group("brand_new"), catalog_change()])
    assert exc.value.document == 2 and exc.value.field == "spec.catalog"
    assert await state(registry) == before


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_a_storage_failure_at_any_write_rolls_the_apply_back(
    registry: Registry, tmp_path: Path
) -> None:
    """SQLite: a trigger makes the row of the i-th written resource fail; the
    transaction is rolled back and the next apply works."""
    await seed(registry)
    before = await state(registry)
    docs = manifest()
    path = tmp_path / "registry.db"
    for resource in docs:
        with sqlite3.connect(path) as conn:
            # Keys are plain names and slashes: safe to quote inline (a
            # trigger cannot take parameters).
            conn.execute(
                f"CREATE TRIGGER injected BEFORE INSERT ON resources WHEN NEW.key = "
                f"'{resource.key}' BEGIN SELECT RAISE(ABORT, 'injected failure'); END")
        try:
            with pytest.raises(SchemaCacheError, match="injected failure"):
                await apply_resources(registry, docs)
            assert await state(registry) == before, resource.key
        finally:
            with sqlite3.connect(path) as conn:
                conn.execute("DROP TRIGGER injected")
    assert len(await apply_resources(registry, docs)) == len(docs)
    assert (await state(registry))[1] == before[1] + len(docs)


async def test_cascade_delete_is_one_transaction(registry: Registry) -> None:
    await seed(registry)
    await apply_resources(registry, manifest())
    _, before = await registry.list()
    events = registry.watch("", start_revision=before + 1)
    last = await registry.delete("group/base", cascade=True)
    items, _ = await registry.list()
    # base's members and every top-N ranking one of its measures are gone.
    assert sorted(r.key for r in items) == ["group/fresh", "measure/fresh/x"]
    expected = {"group/base", "measure/base/m1", "measure/base/y", "index_rule/base/r",
                "index_rule_binding/base/b", "topn_aggregation/fresh/t"}
    seen = []
    async for event in events:
        seen.append(event)
        if len(seen) == len(expected):
            break
    await events.aclose()  # type: ignore[attr-defined]
    assert {e.key for e in seen} == expected
    assert seen[-1].key == "group/base" and seen[-1].revision == last  # dependents first


@pytest.mark.parametrize("backend", ["etcd"])
async def test_etcd_apply_boundary_is_one_transaction(registry: Registry) -> None:
    """On etcd an apply is one transaction: up to --max-txn-ops it goes through,
    one more document is refused whole (nothing written)."""
    await apply_resources(registry, [group("big")])
    before = await state(registry)
    # Each measure is one put and one compare, plus one compare for the group.
    fits = [measure("big", f"m{i}") for i in range(ETCD_MAX_TXN_OPS - 1)]
    too_many = [*fits, measure("big", "one_more")]
    with pytest.raises(TooLargeError, match="max-txn-ops"):
        await apply_resources(registry, too_many)
    assert await state(registry) == before
    results = await apply_resources(registry, fits)
    assert {r.revision for r in results} == {before[1] + 1}  # one etcd revision
    # A cascade over more keys than one transaction takes is refused whole too.
    await apply_resources(registry, [measure("big", "one_more")])
    full = await state(registry)
    with pytest.raises(TooLargeError):
        await registry.delete("group/big", cascade=True)
    assert await state(registry) == full


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_a_storage_failure_at_any_delete_rolls_the_cascade_back(
    registry: Registry, tmp_path: Path
) -> None:
    """SQLite: the i-th delete of a cascade fails; nothing of the cascade remains."""
    await seed(registry)
    await apply_resources(registry, manifest())
    before = await state(registry)
    doomed = ["measure/base/m1", "measure/base/y", "index_rule/base/r",
              "index_rule_binding/base/b", "topn_aggregation/fresh/t", "group/base"]
    path = tmp_path / "registry.db"
    for key in doomed:
        with sqlite3.connect(path) as conn:
            conn.execute(
                f"CREATE TRIGGER injected BEFORE DELETE ON resources WHEN OLD.key = '{key}' "
                "BEGIN SELECT RAISE(ABORT, 'injected failure'); END")
        try:
            with pytest.raises(SchemaCacheError, match="injected failure"):
                await registry.delete("group/base", cascade=True)
            assert await state(registry) == before, key
        finally:
            with sqlite3.connect(path) as conn:
                conn.execute("DROP TRIGGER injected")
    await registry.delete("group/base", cascade=True)
    items, _ = await registry.list()
    assert sorted(r.key for r in items) == ["group/fresh", "measure/fresh/x"]
