"""Schema resources the benchmarks write: groups of catalog MEASURE and measures.

Resources are built from one validated template and copied with a new name,
so that building 100,000 of them costs far less than writing them.
"""

from __future__ import annotations

from collections.abc import Iterator

from schemacache import Registry, Resource

MEASURES_PER_GROUP = 1000
"""Measures put in one group before the next group is used."""
GROUP_PREFIX = "bg"
"""Name prefix of the benchmark groups."""


def group(name: str) -> Resource:
    """A group of catalog MEASURE named ``name``."""
    return Resource.parse({
        "kind": "group",
        "metadata": {"name": name},
        "spec": {"catalog": "MEASURE",
                 "resource_opts": {"shard_num": 1,
                                   "segment_interval": {"unit": "DAY", "num": 1},
                                   "ttl": {"unit": "DAY", "num": 7}}},
    })


def _measure_template(group_name: str) -> Resource:
    return Resource.parse({
        "kind": "measure",
        "metadata": {"group": group_name, "name": "template"},
        "spec": {
            "tag_families": [{"name": "default",
                              "tags": [{"name": "entity_id", "type": "STRING"},
                                       {"name": "service", "type": "STRING"}]}],
            "fields": [{"name": "value", "field_type": "INT"}],
            "entity": {"tag_names": ["entity_id"]},
        },
    })


def renamed(template: Resource, name: str, group_name: str | None = None) -> Resource:
    """A copy of ``template`` named ``name`` (in ``group_name`` if given)."""
    meta: dict[str, object] = {"name": name}
    if group_name is not None:
        meta["group"] = group_name
    return template.model_copy(update={"metadata": template.metadata.model_copy(update=meta)})


def group_name(index: int) -> str:
    return f"{GROUP_PREFIX}{index}"


def groups_for(count: int) -> list[Resource]:
    """The groups ``count`` measures need (see :data:`MEASURES_PER_GROUP`)."""
    return [group(group_name(i)) for i in range(max(1, -(-count // MEASURES_PER_GROUP)))]


def measures(count: int, prefix: str = "m", start: int = 0) -> Iterator[Resource]:
    """``count`` distinct measures named ``<prefix><i>``, spread over the groups of
    :func:`groups_for`.

    :param prefix: name prefix (default ``"m"``).
    :param start: index of the first measure (default 0).
    """
    template = _measure_template(group_name(0))
    for i in range(start, start + count):
        yield renamed(template, f"{prefix}{i}", group_name(i // MEASURES_PER_GROUP))


async def write_all(registry: Registry, resources: Iterator[Resource] | list[Resource]) -> int:
    """Put every resource in order; returns the revision of the last write (0 if none)."""
    last = 0
    for r in resources:
        last = await registry.put(r)
    return last


async def seed(registry: Registry, count: int, prefix: str = "m") -> int:
    """Write the groups and ``count`` measures; returns the last revision."""
    last = await write_all(registry, groups_for(count))
    return max(last, await write_all(registry, measures(count, prefix)))
