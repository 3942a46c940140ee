"""Small builders of valid resources for tests and benchmarks."""

from __future__ import annotations

from typing import Any

from schemacache import Resource


def group(name: str, catalog: str = "MEASURE") -> Resource:
    opts: dict[str, Any] = {"shard_num": 1}
    if catalog != "PROPERTY":
        opts |= {"segment_interval": {"unit": "DAY", "num": 1}, "ttl": {"unit": "DAY", "num": 7}}
    return Resource.parse(
        {"kind": "group", "metadata": {"name": name}, "spec": {"catalog": catalog,
                                                              "resource_opts": opts}}
    )


def measure(group_name: str, name: str, fields: tuple[str, ...] = ("value",),
            tags: tuple[str, ...] = ("entity_id",)) -> Resource:
    return Resource.parse({
        "kind": "measure",
        "metadata": {"group": group_name, "name": name},
        "spec": {
            "tag_families": [{"name": "default",
                              "tags": [{"name": t, "type": "STRING"} for t in tags]}],
            "fields": [{"name": f, "field_type": "INT"} for f in fields],
            "entity": {"tag_names": [tags[0]]},
        },
    })


def stream(group_name: str, name: str) -> Resource:
    return Resource.parse({
        "kind": "stream",
        "metadata": {"group": group_name, "name": name},
        "spec": {
            "tag_families": [{"name": "searchable",
                              "tags": [{"name": "trace_id", "type": "STRING"}]}],
            "entity": {"tag_names": ["trace_id"]},
        },
    })


def index_rule(group_name: str, name: str, tag: str = "entity_id") -> Resource:
    return Resource.parse({
        "kind": "index_rule",
        "metadata": {"group": group_name, "name": name},
        "spec": {"tags": [tag], "type": "INVERTED"},
    })


def binding(group_name: str, name: str, rules: list[str], subject: str,
            catalog: str = "MEASURE") -> Resource:
    return Resource.parse({
        "kind": "index_rule_binding",
        "metadata": {"group": group_name, "name": name},
        "spec": {"rules": rules, "subject": {"catalog": catalog, "name": subject}},
    })


def topn(group_name: str, name: str, source_group: str, source: str,
         field: str = "value") -> Resource:
    return Resource.parse({
        "kind": "topn_aggregation",
        "metadata": {"group": group_name, "name": name},
        "spec": {"source_measure": {"group": source_group, "name": source},
                 "field_name": field, "group_by_tag_names": []},
    })
