"""Resources shared by the SQLite registry tests and their subprocesses."""

from __future__ import annotations

from typing import Any

from schemacache import Resource

GROUP = "g"


def group(name: str = GROUP, catalog: str = "MEASURE") -> Resource:
    """A group of ``catalog`` with one-day segments kept for a week."""
    return Resource.parse({
        "kind": "group",
        "metadata": {"name": name},
        "spec": {
            "catalog": catalog,
            "resource_opts": {
                "shard_num": 1,
                "segment_interval": {"unit": "DAY", "num": 1},
                "ttl": {"unit": "DAY", "num": 7},
            },
        },
    })


def index_rule(name: str, tag: str = "service_id", group_name: str = GROUP) -> Resource:
    """An inverted index rule on ``tag`` in ``group_name``."""
    return Resource.parse({
        "kind": "index_rule",
        "metadata": {"group": group_name, "name": name},
        "spec": {"tags": [tag], "type": "INVERTED"},
    })


def measure(name: str, group_name: str = GROUP, extra_tag: str = "entity_id") -> Resource:
    """A measure with one tag family, an entity and one field."""
    spec: dict[str, Any] = {
        "tag_families": [{
            "name": "default",
            "tags": [{"name": "service_id", "type": "STRING"},
                     {"name": extra_tag, "type": "STRING"}],
        }],
        "fields": [{"name": "value", "field_type": "INT"}],
        "entity": {"tag_names": ["service_id"]},
        "interval": "1m",
    }
    return Resource.parse({
        "kind": "measure", "metadata": {"group": group_name, "name": name}, "spec": spec,
    })


def binding(name: str, rules: list[str], subject: str, group_name: str = GROUP) -> Resource:
    """An index rule binding of ``rules`` to the measure ``subject``."""
    return Resource.parse({
        "kind": "index_rule_binding",
        "metadata": {"group": group_name, "name": name},
        "spec": {"rules": rules, "subject": {"catalog": "MEASURE", "name": subject}},
    })


def topn(name: str, source: str, group_name: str = GROUP) -> Resource:
    """A top-N aggregation over the ``value`` field of measure ``source``."""
    return Resource.parse({
        "kind": "topn_aggregation",
        "metadata": {"group": group_name, "name": name},
        "spec": {"source_measure": {"group": group_name, "name": source},
                 "field_name": "value"},
    })
