"""BanyanDB's own documents: the corpus loads as it is, writing reads back, bad ones are refused.

The corpus (``tests/banyandb_corpus``) is written for this project in BanyanDB's
layout: one protojson message per file, in a folder per kind, every kind, every
message field and enum value of the protos, snake_case and lowerCamelCase names,
enum values by full name, short name and number.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from schemacache import ValidationError, banyandb, banyandb_facts, load_resources, open_registry
from schemacache.apply import apply_resources
from schemacache.manifest import parse_manifest
from schemacache.model import Resource

CORPUS = Path(__file__).parent / "banyandb_corpus"
FILES = sorted(CORPUS.rglob("*.json"))

REJECTED_ZEROS = {
    # BanyanDB refuses these at create time; test_rejected covers them.
    "CATALOG_UNSPECIFIED", "UNIT_UNSPECIFIED", "TAG_TYPE_UNSPECIFIED", "FIELD_TYPE_UNSPECIFIED",
    "COMPRESSION_METHOD_UNSPECIFIED", "TYPE_UNSPECIFIED",
}
UNUSED_MESSAGES = {"QueryOrder"}  # in query.proto's table, used by no schema object
CAMEL = re.compile(r"[a-z][A-Z]")


def _snake(name: str) -> str:
    return re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), name)


def _resolve(type_name: str, table: dict[str, Any]) -> str | None:
    short = type_name.removeprefix("repeated ").rsplit(".", 1)[-1]
    if short in table:
        return short
    found = [name for name in table if name.endswith("." + short)]
    return found[0] if found else None


class Coverage:
    """What a walk over raw documents saw, by the table's message and enum names."""

    def __init__(self) -> None:
        self.fields: set[tuple[str, str]] = set()
        self.values: set[str] = set()
        self.spellings: set[str] = set()

    def message(self, doc: dict[str, Any], message: str) -> None:
        fields = banyandb_facts.MESSAGES[message]
        for key, value in doc.items():
            name = _snake(key)
            self.spellings.add("camel" if CAMEL.search(key) else "snake")
            assert name in fields, f"{message} has no field {key}"
            self.fields.add((message, name))
            for item in value if isinstance(value, list) else [value]:
                self.value(item, fields[name])

    def value(self, item: Any, type_name: str) -> None:
        enum = _resolve(type_name, banyandb_facts.ENUMS)
        if enum is not None:
            values = banyandb_facts.ENUMS[enum]
            if isinstance(item, int):
                self.spellings.add("number")
                self.values.add(values[item])
            else:
                full = [v for v in values if v == item or v.endswith("_" + item)]
                self.spellings.add("full" if item in values else "short")
                self.values.add(full[0])
            return
        nested = _resolve(type_name, banyandb_facts.MESSAGES)
        if nested is not None and isinstance(item, dict):
            self.message(item, nested)


def _raw(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def test_corpus_loads_as_it_is() -> None:
    resources = load_resources(CORPUS)
    assert len(resources) == len(FILES)
    by_kind = {r.kind for r in resources}
    assert by_kind == set(banyandb.FOLDERS)
    for path, resource in zip(FILES, resources, strict=True):
        raw = _raw(path)
        assert resource.kind == banyandb.kind_from_path(path, CORPUS)
        assert resource.metadata.name == raw["metadata"]["name"]
        # The registry owns revisions and timestamps: a document's are not kept.
        assert resource.metadata.mod_revision == 0 and resource.metadata.updated_at is None


def test_corpus_covers_every_field_and_value() -> None:
    seen = Coverage()
    for path in FILES:
        kind = banyandb.kind_from_path(path, CORPUS)
        assert kind is not None
        seen.message(_raw(path), banyandb.MESSAGES[kind])
    wanted_fields = {(m, f) for m, fields in banyandb_facts.MESSAGES.items()
                     if m not in UNUSED_MESSAGES for f in fields}
    assert wanted_fields - seen.fields == set()
    wanted_values = {v for values in banyandb_facts.ENUMS.values() for v in values} - REJECTED_ZEROS
    assert wanted_values - seen.values == set()
    assert seen.spellings == {"snake", "camel", "full", "short", "number"}


def _by_key(resources: list[Resource]) -> dict[str, Resource]:
    return {r.key: r for r in resources}


def test_spellings_mean_the_same() -> None:
    loaded = _by_key(load_resources(CORPUS))
    numbered = loaded["group/sw_stream"].spec
    assert numbered["catalog"] == "STREAM"
    assert numbered["resource_opts"]["segment_interval"] == {"unit": "HOUR", "num": 24}
    assert numbered["resource_opts"]["ttl"] == {"unit": "DAY", "num": 3}
    camel = loaded["stream/sw_stream/sw_event"].spec
    snake = loaded["stream/sw_stream/sw_log"].spec
    assert camel["tag_families"][0]["tags"] == snake["tag_families"][0]["tags"]
    assert loaded["index_rule/sw_stream/state"].spec["type"] == "SKIPPING"
    assert loaded["index_rule/sw_stream/state"].spec["no_sort"] is True
    intervals = {r.name: r.spec["interval"] for r in loaded.values() if r.kind == "measure"}
    assert intervals["latency_micro"] == "500µs" and intervals["latency_day"] == "7d"
    topn = loaded["topn_aggregation/sw_metric/service_cpm_minute_top"].spec
    assert topn["source_measure"]["id"] == 11 and topn["field_value_sort"] == "DESC"
    bottom = loaded["topn_aggregation/sw_metric/service_cpm_minute_bottom"].spec
    assert bottom["counters_number"] == 100 and bottom["lru_size"] == 0  # proto zero
    assert bottom["criteria"]["condition"]["op"] == "EQ"


def test_written_documents_read_back_the_same() -> None:
    for resource in load_resources(CORPUS):
        doc = banyandb.to_document(resource)
        text = json.dumps(doc)
        keys = "".join(_keys(doc, skip="config"))
        assert not CAMEL.search(keys), "protojson names are snake_case"
        back = banyandb.from_document(json.loads(text), resource.kind)
        assert back.spec == resource.spec, resource.key
        assert back.key == resource.key


def _keys(doc: Any, skip: str) -> list[str]:
    if isinstance(doc, list):
        return [k for item in doc for k in _keys(item, skip)]
    if not isinstance(doc, dict):
        return []
    return [k for key, value in doc.items() if key != skip for k in [key, *_keys(value, skip)]]


def test_writer_follows_protojson() -> None:
    loaded = _by_key(load_resources(CORPUS))
    group = banyandb.to_document(loaded["group/sw_stream"])
    assert group == {
        "metadata": {"name": "sw_stream"},
        "catalog": "CATALOG_STREAM",
        "resource_opts": {"shard_num": 2, "segment_interval": {"unit": "UNIT_HOUR", "num": 24},
                          "ttl": {"unit": "UNIT_DAY", "num": 3}},
    }
    measure = banyandb.to_document(loaded["measure/sw_metric/service_cpm_minute"])
    assert measure["fields"][1] == {"name": "value", "field_type": "FIELD_TYPE_FLOAT",
                                    "compression_method": "COMPRESSION_METHOD_ZSTD"}
    assert "index_mode" not in measure  # false: a zero value is left out
    rule = banyandb.to_document(loaded["index_rule/sw_stream/trace_id"])
    assert rule["metadata"]["id"] == banyandb.object_id(loaded["index_rule/sw_stream/trace_id"])
    topn = banyandb.to_document(loaded["topn_aggregation/sw_metric/service_cpm_minute_top"])
    assert topn["source_measure"]["create_revision"] == "20"  # int64 as a string
    last = topn["criteria"]["le"]["right"]
    while "le" in last:
        last = last["le"]["right"]
    assert last["condition"]["value"] == {"null": None}
    assert last["condition"]["match_option"] == {"operator": "OPERATOR_OR"}


def test_stored_resource_writes_revisions_and_time() -> None:
    resource = load_resources(CORPUS)[0].with_revisions(5, 9)
    doc = banyandb.to_document(resource)
    assert doc["metadata"]["create_revision"] == "5" and doc["metadata"]["mod_revision"] == "9"
    assert doc["updated_at"].endswith("Z")


async def test_corpus_satisfies_referential_integrity() -> None:
    registry = open_registry("memory://")
    try:
        results = await apply_resources(registry, load_resources(CORPUS))
        assert len(results) == len(FILES)
    finally:
        await registry.close()


def _doc(kind: str, **fields: Any) -> dict[str, Any]:
    groups = {"group": None, "measure": "g", "stream": "g", "index_rule": "g",
              "index_rule_binding": "g", "topn_aggregation": "g", "trace": "g", "property": "g"}
    meta = {"name": "x"} if groups[kind] is None else {"group": "g", "name": "x"}
    return {"kind": kind, "metadata": meta, **fields}


TAGS = [{"name": "id", "type": "TAG_TYPE_STRING"}]
FAMILIES = [{"name": "default", "tags": TAGS}]
OPTS = {"shard_num": 1, "segment_interval": {"unit": "UNIT_DAY", "num": 1},
        "ttl": {"unit": "UNIT_DAY", "num": 1}}
FIELD = {"name": "v", "field_type": "FIELD_TYPE_INT",
         "compression_method": "COMPRESSION_METHOD_ZSTD"}
MEASURE = {"tag_families": FAMILIES, "entity": {"tag_names": ["id"]}}
TOPN = {"source_measure": {"group": "g", "name": "m"}, "field_name": "v", "counters_number": 10}


def _topn_criteria(criteria: dict[str, Any]) -> dict[str, Any]:
    return _doc("topn_aggregation", **TOPN, criteria=criteria)


REJECTED = [
    ("catalog-unspecified", _doc("group", catalog=0, resource_opts=OPTS), "catalog"),
    ("catalog-unknown", _doc("group", catalog="CATALOG_LOG", resource_opts=OPTS), "catalog"),
    ("catalog-number-out-of-range", _doc("group", catalog=5, resource_opts=OPTS), "catalog"),
    ("property-group-ttl", _doc("group", catalog="CATALOG_PROPERTY",
                                resource_opts={"shard_num": 1, "ttl": OPTS["ttl"]}),
     "resource_opts.ttl"),
    ("property-group-segment", _doc("group", catalog="CATALOG_PROPERTY", resource_opts={
        "shard_num": 1, "segment_interval": OPTS["segment_interval"]}),
     "resource_opts.segment_interval"),
    ("measure-group-without-ttl", _doc("group", catalog="CATALOG_MEASURE", resource_opts={
        "shard_num": 1, "segment_interval": OPTS["segment_interval"]}), "resource_opts.ttl"),
    ("unit-unspecified", _doc("group", catalog="CATALOG_STREAM", resource_opts={
        **OPTS, "ttl": {"unit": "UNIT_UNSPECIFIED", "num": 1}}), "resource_opts.ttl.unit"),
    ("interval-num-zero", _doc("group", catalog="CATALOG_STREAM", resource_opts={
        **OPTS, "ttl": {"unit": "UNIT_DAY", "num": 0}}), "resource_opts.ttl.num"),
    ("shard-num-zero", _doc("group", catalog="CATALOG_STREAM", resource_opts={
        **OPTS, "shard_num": 0}), "resource_opts.shard_num"),
    ("default-stage-unknown", _doc("group", catalog="CATALOG_STREAM", resource_opts={
        **OPTS, "default_stages": ["warm"]}), "resource_opts.default_stages[0]"),
    ("pipeline-on-measure-group", _doc("group", catalog="CATALOG_MEASURE", resource_opts=OPTS,
                                       pipeline={"enabled": True}), "pipeline"),
    ("pipeline-grace-not-seconds", _doc("group", catalog="CATALOG_TRACE", resource_opts=OPTS,
                                        pipeline={"merge_grace": "1m"}), "pipeline.merge_grace"),
    ("group-metadata-group", {"kind": "group", "metadata": {"group": "g", "name": "x"},
                              "catalog": 1, "resource_opts": OPTS}, "metadata.group"),
    ("uint32-overflow", {"kind": "group", "metadata": {"name": "x", "id": 2**32},
                         "catalog": 1, "resource_opts": OPTS}, "metadata.id"),
    ("unknown-metadata-field", {"kind": "group", "metadata": {"name": "x", "uid": 1},
                                "catalog": 1, "resource_opts": OPTS}, "metadata.uid"),
    ("missing-name", {"kind": "group", "metadata": {}, "catalog": 1, "resource_opts": OPTS},
     "metadata.name"),
    ("bad-updated-at", _doc("group", catalog=1, resource_opts=OPTS, updated_at="yesterday"),
     "updated_at"),
    ("unknown-field", _doc("measure", **MEASURE, tagFamily=[]), "tagFamily"),
    ("unknown-nested-field", _doc("group", catalog=1, resource_opts={**OPTS, "shardNumber": 2}),
     "resource_opts.shardNumber"),
    ("index-mode-with-fields", _doc("measure", **MEASURE, index_mode=True, fields=[FIELD]),
     "fields"),
    ("compression-absent", _doc("measure", **MEASURE, fields=[
        {"name": "v", "field_type": "FIELD_TYPE_INT"}]), "fields[0].compression_method"),
    ("compression-unspecified", _doc("measure", **MEASURE, fields=[
        {**FIELD, "compression_method": 0}]), "fields[0].compression_method"),
    ("field-type-unspecified", _doc("measure", **MEASURE, fields=[
        {**FIELD, "field_type": "FIELD_TYPE_UNSPECIFIED"}]), "fields[0].field_type"),
    ("tag-type-unspecified", _doc("stream", tag_families=[
        {"name": "default", "tags": [{"name": "id", "type": 0}]}], entity={"tag_names": ["id"]}),
     "tag_families[0].tags[0].type"),
    ("entity-tag-undeclared", _doc("stream", tag_families=FAMILIES,
                                   entity={"tag_names": ["nope"]}), "entity.tag_names[0]"),
    ("entity-empty", _doc("stream", tag_families=FAMILIES, entity={"tag_names": []}),
     "entity.tag_names"),
    ("no-tag-families", _doc("stream", entity={"tag_names": ["id"]}), "tag_families"),
    ("interval-years", _doc("measure", **MEASURE, interval="1y"), "interval"),
    ("interval-negative", _doc("measure", **MEASURE, interval="-1h"), "interval"),
    ("interval-no-number", _doc("measure", **MEASURE, interval="h"), "interval"),
    ("interval-no-unit", _doc("measure", **MEASURE, interval="1.5"), "interval"),
    ("index-rule-type-unspecified", _doc("index_rule", tags=["id"], type="TYPE_UNSPECIFIED"),
     "type"),
    ("index-rule-no-tags", _doc("index_rule", tags=[], type=1), "tags"),
    ("binding-catalog-unspecified", _doc("index_rule_binding", rules=["r"], subject={
        "catalog": 0, "name": "s"}), "subject.catalog"),
    ("binding-no-rules", _doc("index_rule_binding", rules=[], subject={
        "catalog": 1, "name": "s"}), "rules"),
    ("topn-counters-absent", _doc("topn_aggregation", source_measure={"group": "g", "name": "m"},
                                  field_name="v"), "counters_number"),
    ("topn-field-name-empty", _doc("topn_aggregation", **{**TOPN, "field_name": ""}),
     "field_name"),
    ("topn-source-without-name", _doc("topn_aggregation", **{**TOPN, "source_measure": {
        "group": "g"}}), "source_measure.name"),
    ("criteria-both-members", _topn_criteria({"le": {}, "condition": {}}), "criteria.condition"),
    ("tag-value-two-members", _topn_criteria({"condition": {"value": {
        "str": {"value": "a"}, "int": {"value": 1}}}}), "criteria.condition.value.int"),
    ("tag-value-binary-not-base64", _topn_criteria({"condition": {"value": {
        "binary_data": "not base64!"}}}), "criteria.condition.value.binary_data"),
    ("trace-timestamp-not-timestamp", _doc("trace", tags=TAGS, trace_id_tag_name="id",
                                           span_id_tag_name="id", timestamp_tag_name="id"),
     "timestamp_tag_name"),
    ("field-twice", _doc("measure", **MEASURE, tagFamilies=FAMILIES), "tag_families"),
    ("nested-field-twice", _doc("group", catalog=1, resource_opts={**OPTS, "shardNum": 2}),
     "resource_opts.shard_num"),
    ("trace-span-tag-undeclared", _doc("trace", tags=TAGS, trace_id_tag_name="id",
                                       span_id_tag_name="sid", timestamp_tag_name="id"),
     "span_id_tag_name"),
    ("trace-without-trace-id", _doc("trace", tags=TAGS, timestamp_tag_name="id"),
     "trace_id_tag_name"),
    ("twice-spelt", _doc("group", catalog=1, resource_opts=OPTS, updated_at="2020-01-01T00:00:00Z",
                         updatedAt="2020-01-01T00:00:00Z"), "updated_at"),
]


@pytest.mark.parametrize(("doc", "field"), [(d, f) for _, d, f in REJECTED],
                         ids=[name for name, _, _ in REJECTED])
def test_rejected_with_the_field_path(doc: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_manifest(json.dumps(doc, indent=1))
    assert info.value.field == field, str(info.value)
    assert info.value.document == 1


def test_kind_from_argument_field_or_folder(tmp_path: Path) -> None:
    body = {"metadata": {"name": "g1"}, "catalog": "CATALOG_STREAM", "resource_opts": OPTS}
    (tmp_path / "a.json").write_text(json.dumps(body))
    with pytest.raises(ValidationError) as info:
        load_resources(tmp_path / "a.json")
    assert info.value.field == "kind" and "--kind" in info.value.reason
    assert load_resources(tmp_path / "a.json", kind="group")[0].key == "group/g1"
    (tmp_path / "groups").mkdir()
    (tmp_path / "groups" / "a.json").write_text(json.dumps(body))
    assert load_resources(tmp_path / "groups")[0].key == "group/g1"
    (tmp_path / "b.json").write_text(json.dumps({**body, "kind": "Group"}))
    assert load_resources(tmp_path / "b.json")[0].key == "group/g1"
    with pytest.raises(ValidationError) as info:
        load_resources(tmp_path / "b.json", kind="stream")
    assert info.value.field == "kind"
    # A file named after a kind, holding a JSON array of documents.
    (tmp_path / "suite").mkdir()
    (tmp_path / "suite" / "group.json").write_text(json.dumps([body, {**body, "metadata": {
        "name": "g2"}}]))
    assert [r.key for r in load_resources(tmp_path / "suite")] == ["group/g1", "group/g2"]
    assert banyandb.kind_from_path(Path("property/ui_menu.json")) == "property"
    assert banyandb.kind_from_path(Path("topNAggregations/x.json")) == "topn_aggregation"
    # A measures/<group>/ folder named after another kind still holds measures.
    nested = tmp_path / "measures" / "streams"
    nested.mkdir(parents=True)
    assert banyandb.kind_from_path(nested / "m.json", tmp_path) == "measure"
    assert banyandb.kind_from_path(nested / "m.json", tmp_path / "measures") == "measure"


def test_manifests_keep_working(examples_dir: Path) -> None:
    resources = load_resources(examples_dir)
    assert resources and all(r.spec for r in resources)
    measure = next(r for r in resources if r.kind == "measure")
    assert measure.spec["fields"][0]["compression_method"] == "ZSTD"
    short = parse_manifest("kind: index_rule\nmetadata: {group: g, name: r}\n"
                           "spec: {tags: [a], type: TYPE_TREE}\n")
    assert short[0].spec["type"] == "TREE"


def test_export_writes_the_layout_whole_or_not_at_all(tmp_path: Path) -> None:
    resources = load_resources(CORPUS)
    target = tmp_path / "out"
    written = banyandb.export(resources, target)
    assert sorted(p.as_posix() for p in written) == sorted(
        p.relative_to(target).as_posix() for p in target.rglob("*.json"))
    assert {p.parts[0] for p in written} == set(banyandb.FOLDERS.values())
    assert _by_key(load_resources(target)).keys() == _by_key(resources).keys()

    # A filled directory is refused and left as it was.
    before = sorted(target.rglob("*"))
    with pytest.raises(FileExistsError):
        banyandb.export(resources, target)
    assert sorted(target.rglob("*")) == before

    # A resource that cannot be written (a kind this process does not know)
    # leaves nothing behind.
    unknown = Resource.from_stored({"kind": "retired_kind", "metadata": {"group": "g", "name": "m"},
                                    "spec": {}})
    with pytest.raises(ValidationError) as info:
        banyandb.export([resources[0], unknown], tmp_path / "partial")
    assert "retired_kind" in info.value.reason
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]

    empty = tmp_path / "empty"
    empty.mkdir()
    assert banyandb.export(resources[:1], empty) == [Path("groups/sw_metric.json")]


def test_null_means_absent_as_in_protojson() -> None:
    doc = _doc("measure", **MEASURE, interval=None, sharding_key=None, fields=None,
               index_mode=None)
    spec = parse_manifest(json.dumps(doc, indent=1))[0].spec
    assert spec["interval"] == "" and spec["fields"] == [] and "sharding_key" not in spec
    doc = _doc("measure", **MEASURE, interval="0")
    assert parse_manifest(json.dumps(doc, indent=1))[0].spec["interval"] == "0"


EXPORT_SCRIPT = """
import sys
from pathlib import Path
from schemacache import banyandb
from schemacache.model import Resource
count = int(sys.argv[2])
resources = [Resource.parse({"kind": "group", "metadata": {"name": f"g{i}"}, "spec": {
    "catalog": "STREAM", "resource_opts": {"shard_num": 1,
    "segment_interval": {"unit": "DAY", "num": 1}, "ttl": {"unit": "DAY", "num": 1}}}})
    for i in range(count)]
print("exporting", flush=True)
banyandb.export(resources, Path(sys.argv[1]))
print("done", flush=True)
"""


@pytest.mark.parametrize("kill_after", [0.0, 0.05, 0.2, 0.5, 1.0])
def test_export_killed_at_any_instant_leaves_all_or_nothing(tmp_path: Path,
                                                           kill_after: float) -> None:
    import signal
    import subprocess
    import sys
    import time

    count = 2000
    target = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-c", EXPORT_SCRIPT, str(target), str(count)],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "exporting"
        time.sleep(kill_after)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    if kill_after == 0.0:
        # Killed as it starts writing (2,000 files take about 0.5 s): nothing there.
        assert not target.exists()
    if target.exists():
        files = list(target.rglob("*.json"))
        assert len(files) == count  # the rename happened: the export is whole
        assert len(load_resources(target)) == count
    # Whatever was left is hidden staging beside it, never under the target's name.
    assert all(p.name.startswith(".out.") for p in tmp_path.iterdir() if p != target)
