"""Bad input: every invalid manifest is rejected with a message naming the field; nothing
is written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from schemacache import ValidationError, load_resources, open_registry
from schemacache.apply import apply_resources
from schemacache.manifest import MAX_DOCUMENT_BYTES, parse_manifest

GROUP = """
kind: group
metadata: {name: g}
spec:
  catalog: MEASURE
  resource_opts: {shard_num: 1, segment_interval: {unit: DAY, num: 1}, ttl: {unit: DAY, num: 7}}
"""


def measure_doc(spec: str, meta: str = "{group: g, name: m}") -> str:
    return f"kind: measure\nmetadata: {meta}\nspec:\n{spec}"


TAGS = """  tag_families:
    - name: default
      tags: [{name: id, type: STRING}]
"""
ENTITY = "  entity: {tag_names: [id]}\n"

# (case id, manifest text, text the error must contain (the field path or the reason))
INVALID = [
    ("unknown-kind", "kind: table\nmetadata: {group: g, name: x}\nspec: {}", "'kind'"),
    ("missing-kind", "metadata: {name: g}\nspec: {}", "'kind'"),
    ("not-a-mapping", "- just\n- a list", "expected a mapping"),
    ("scalar-document", "hello", "expected a mapping"),
    ("bad-yaml", "kind: group\nmetadata: {name: [unclosed\n", "invalid YAML"),
    ("bad-json", '{"kind": "group", ', "invalid JSON"),
    ("unknown-envelope-field", GROUP + "status: {}\n", "'status'"),
    ("unknown-metadata-field", GROUP.replace("{name: g}", "{name: g, owner: me}"),
     "'metadata.owner'"),
    ("bad-name", GROUP.replace("{name: g}", "{name: 9lives}"), "'metadata.name'"),
    ("name-too-long", GROUP.replace("{name: g}", "{name: " + "a" * 300 + "}"), "'metadata.name'"),
    ("group-with-group", GROUP.replace("{name: g}", "{name: g, group: x}"), "'metadata.group'"),
    ("missing-group", measure_doc(TAGS + ENTITY, "{name: m}"), "'metadata.group'"),
    ("bad-catalog", GROUP.replace("MEASURE", "TABLE"), "'spec.catalog'"),
    ("zero-shards", GROUP.replace("shard_num: 1", "shard_num: 0"),
     "'spec.resource_opts.shard_num'"),
    ("shards-not-int", GROUP.replace("shard_num: 1", "shard_num: many"),
     "'spec.resource_opts.shard_num'"),
    ("bad-interval-unit", GROUP.replace("unit: DAY, num: 1", "unit: WEEK, num: 1"),
     "'spec.resource_opts.segment_interval.unit'"),
    ("missing-ttl", GROUP.replace(", ttl: {unit: DAY, num: 7}", ""), "'spec.resource_opts.ttl'"),
    ("unknown-spec-field", measure_doc(TAGS + ENTITY + "  colour: blue\n"), "'spec.colour'"),
    ("bad-tag-type", measure_doc(TAGS.replace("STRING", "TEXT") + ENTITY),
     "'spec.tag_families[0].tags[0].type'"),
    ("entity-tag-undeclared", measure_doc(TAGS + "  entity: {tag_names: [id, region]}\n"),
     "'spec.entity.tag_names[1]'"),
    ("duplicate-tag", measure_doc(TAGS.replace("[{name: id, type: STRING}]",
                                               "[{name: id, type: STRING}, {name: id, type: INT}]")
                                  + ENTITY), "'spec.tag_families[0].tags'"),
    ("duplicate-field", measure_doc(TAGS + ENTITY + "  fields: [{name: v, field_type: INT}, "
                                    "{name: v, field_type: FLOAT}]\n"), "'spec.fields'"),
    ("bad-field-type", measure_doc(TAGS + ENTITY + "  fields: [{name: v, field_type: DOUBLE}]\n"),
     "'spec.fields[0].field_type'"),
    ("missing-entity", measure_doc(TAGS), "'spec.entity'"),
    ("tags-not-a-list", measure_doc("  tag_families: default\n" + ENTITY), "'spec.tag_families'"),
    ("bad-interval", measure_doc(TAGS + ENTITY + "  interval: soon\n"), "'spec.interval'"),
    ("bad-index-type", "kind: index_rule\nmetadata: {group: g, name: r}\n"
                       "spec: {tags: [id], type: HASH}", "'spec.type'"),
    ("binding-window", "kind: index_rule_binding\nmetadata: {group: g, name: b}\n"
                       "spec: {rules: [r], subject: {catalog: MEASURE, name: m},\n"
                       "       begin_at: '2025-01-01T00:00:00Z',"
                       " expire_at: '2024-01-01T00:00:00Z'}",
     "'spec.expire_at'"),
    ("topn-negative-counters", "kind: topn_aggregation\nmetadata: {group: g, name: t}\n"
                               "spec: {source_measure: {group: g, name: m}, field_name: v,"
                               " counters_number: -1}", "'spec.counters_number'"),
    ("trace-timestamp-type", "kind: trace\nmetadata: {group: g, name: t}\nspec:\n"
                             "  tags: [{name: tid, type: STRING}, {name: ts, type: INT}, "
                             "{name: sid, type: STRING}]\n  trace_id_tag_name: tid\n"
                             "  timestamp_tag_name: ts\n  span_id_tag_name: sid\n",
     "'spec.timestamp_tag_name'"),
    ("second-document-invalid", GROUP + "---\n" + measure_doc(TAGS), "document 2"),
    ("defined-twice", GROUP + "---\n" + GROUP, "defined twice"),
    ("empty", "", "no document"),
    ("ten-megabytes", GROUP + "  junk: '" + "x" * (10 * 1024 * 1024) + "'\n", "too large"),
]


@pytest.mark.parametrize(("case", "text", "expected"), INVALID, ids=[c[0] for c in INVALID])
async def test_invalid_manifest_is_rejected_naming_the_field(case: str, text: str,
                                                             expected: str) -> None:
    registry = open_registry("memory://")
    with pytest.raises(ValidationError) as err:
        resources = parse_manifest(text)
        await apply_resources(registry, resources)
    assert expected in str(err.value), f"{case}: {err.value}"
    assert isinstance(err.value, ValueError)
    assert await registry.revision() == 0  # nothing written
    await registry.close()


def test_there_are_at_least_twenty_cases() -> None:
    assert len(INVALID) >= 20


async def test_reference_errors_write_nothing() -> None:
    registry = open_registry("memory://")
    # Valid on its own, but the measure's group is missing: the whole apply stops
    # before any write because the group document comes first in dependency order.
    resources = parse_manifest(measure_doc(TAGS + ENTITY, "{group: nope, name: m}"))
    with pytest.raises(ValidationError) as err:
        await apply_resources(registry, resources)
    assert err.value.field == "metadata.group"
    assert await registry.revision() == 0


def test_document_limit_is_one_mebibyte() -> None:
    assert MAX_DOCUMENT_BYTES == 1024 * 1024


def test_json_manifests_and_directories(tmp_path: Path, examples_dir: Path) -> None:
    docs = [{"kind": "group", "metadata": {"name": "j"},
             "spec": {"catalog": "PROPERTY", "resource_opts": {"shard_num": 1}}}]
    (tmp_path / "a.json").write_text(json.dumps(docs))
    assert [r.key for r in load_resources(tmp_path / "a.json")] == ["group/j"]
    assert [r.key for r in parse_manifest(json.dumps(docs[0]))] == ["group/j"]
    examples = load_resources(examples_dir)
    kinds = {r.kind for r in examples}
    assert {"group", "measure", "stream", "index_rule", "index_rule_binding",
            "topn_aggregation"} <= kinds


async def test_examples_apply_in_dependency_order_and_reapply_unchanged(
    examples_dir: Path,
) -> None:
    registry = open_registry("memory://")
    first = await apply_resources(registry, load_resources(examples_dir))
    assert {r.outcome for r in first} == {"created"}
    again = await apply_resources(registry, load_resources(examples_dir))
    assert {r.outcome for r in again} == {"unchanged"}
    assert await registry.revision() == len(first)
