"""The facts of BanyanDB's schema protos this project models, as a checked-in table.

apache/skywalking-banyandb at commit 9ebac4516a5d (2026-08-21):
``api/proto/banyandb/common/v1/common.proto``, ``database/v1/schema.proto`` and the parts of
``model/v1/{query,common}.proto`` that top-N criteria use.  ``MESSAGES`` maps each message to
its fields and their proto types; ``ENUMS`` maps each enum to its values in number order (the
value at index ``i`` has number ``i``; the first is the ``UNSPECIFIED`` zero value).

The models of :mod:`schemacache.kinds` and the document conversion of
:mod:`schemacache.banyandb` must cover every entry; ``tests/test_banyandb_facts.py`` fails when
one is missing.
"""

from __future__ import annotations

SOURCE_COMMIT = "9ebac4516a5d"
"""The BanyanDB commit whose protos the table describes."""

MESSAGES: dict[str, dict[str, str]] = {
    "Metadata": {
        "group": "string",
        "name": "string",
        "id": "uint32",
        "create_revision": "int64",
        "mod_revision": "int64",
    },
    "IntervalRule": {
        "unit": "Unit",
        "num": "uint32",
    },
    "LifecycleStage": {
        "name": "string",
        "shard_num": "uint32",
        "segment_interval": "IntervalRule",
        "ttl": "IntervalRule",
        "node_selector": "string",
        "close": "bool",
        "replicas": "uint32",
    },
    "ResourceOpts": {
        "shard_num": "uint32",
        "segment_interval": "IntervalRule",
        "ttl": "IntervalRule",
        "stages": "repeated LifecycleStage",
        "default_stages": "repeated string",
        "replicas": "uint32",
    },
    "SamplerPlugin": {
        "path": "string",
        "symbol": "string",
        "abi_version": "uint32",
        "config": "google.protobuf.Struct",
    },
    "Plugin": {
        "name": "string",
        "sampler": "SamplerPlugin",
    },
    "StageRule": {
        "stage": "string",
        "plugins": "repeated Plugin",
    },
    "TracePipelineConfig": {
        "enabled": "bool",
        "plugins": "repeated Plugin",
        "merge_grace": "google.protobuf.Duration",
        "finalize_grace": "google.protobuf.Duration",
        "stages": "repeated StageRule",
        "schema_names": "repeated string",
        "schema_name_regex": "string",
        "enabled_events": "repeated PipelineEvent",
    },
    "Group": {
        "metadata": "common.v1.Metadata",
        "catalog": "common.v1.Catalog",
        "resource_opts": "ResourceOpts",
        "updated_at": "google.protobuf.Timestamp",
        "created_at": "google.protobuf.Timestamp",
        "pipeline": "TracePipelineConfig",
    },
    "TagFamilySpec": {
        "name": "string",
        "tags": "repeated TagSpec",
    },
    "TagSpec": {
        "name": "string",
        "type": "TagType",
    },
    "Stream": {
        "metadata": "common.v1.Metadata",
        "tag_families": "repeated TagFamilySpec",
        "entity": "Entity",
        "updated_at": "google.protobuf.Timestamp",
        "created_at": "google.protobuf.Timestamp",
    },
    "Entity": {
        "tag_names": "repeated string",
    },
    "ShardingKey": {
        "tag_names": "repeated string",
    },
    "FieldSpec": {
        "name": "string",
        "field_type": "FieldType",
        "encoding_method": "EncodingMethod",
        "compression_method": "CompressionMethod",
    },
    "Measure": {
        "metadata": "common.v1.Metadata",
        "tag_families": "repeated TagFamilySpec",
        "fields": "repeated FieldSpec",
        "entity": "Entity",
        "interval": "string",
        "updated_at": "google.protobuf.Timestamp",
        "index_mode": "bool",
        "sharding_key": "ShardingKey",
        "created_at": "google.protobuf.Timestamp",
    },
    "TopNAggregation": {
        "metadata": "common.v1.Metadata",
        "source_measure": "common.v1.Metadata",
        "field_name": "string",
        "field_value_sort": "model.v1.Sort",
        "group_by_tag_names": "repeated string",
        "criteria": "model.v1.Criteria",
        "counters_number": "int32",
        "lru_size": "int32",
        "updated_at": "google.protobuf.Timestamp",
        "created_at": "google.protobuf.Timestamp",
    },
    "IndexRule": {
        "metadata": "common.v1.Metadata",
        "tags": "repeated string",
        "type": "Type",
        "updated_at": "google.protobuf.Timestamp",
        "analyzer": "string",
        "no_sort": "bool",
        "created_at": "google.protobuf.Timestamp",
    },
    "Subject": {
        "catalog": "common.v1.Catalog",
        "name": "string",
    },
    "IndexRuleBinding": {
        "metadata": "common.v1.Metadata",
        "rules": "repeated string",
        "subject": "Subject",
        "begin_at": "google.protobuf.Timestamp",
        "expire_at": "google.protobuf.Timestamp",
        "updated_at": "google.protobuf.Timestamp",
        "created_at": "google.protobuf.Timestamp",
    },
    "Property": {
        "metadata": "common.v1.Metadata",
        "tags": "repeated TagSpec",
        "updated_at": "google.protobuf.Timestamp",
        "created_at": "google.protobuf.Timestamp",
    },
    "TraceTagSpec": {
        "name": "string",
        "type": "TagType",
    },
    "Trace": {
        "metadata": "common.v1.Metadata",
        "tags": "repeated TraceTagSpec",
        "trace_id_tag_name": "string",
        "timestamp_tag_name": "string",
        "updated_at": "google.protobuf.Timestamp",
        "span_id_tag_name": "string",
        "created_at": "google.protobuf.Timestamp",
    },
    "Condition.MatchOption": {
        "analyzer": "string",
        "operator": "Operator",
    },
    "Condition": {
        "name": "string",
        "op": "BinaryOp",
        "value": "TagValue",
        "match_option": "MatchOption",
    },
    "Criteria": {
        "le": "LogicalExpression",
        "condition": "Condition",
    },
    "LogicalExpression": {
        "op": "LogicalOp",
        "left": "Criteria",
        "right": "Criteria",
    },
    "QueryOrder": {
        "index_rule_name": "string",
        "sort": "Sort",
    },
    "TagValue": {
        "null": "google.protobuf.NullValue",
        "str": "Str",
        "str_array": "StrArray",
        "int": "Int",
        "int_array": "IntArray",
        "binary_data": "bytes",
        "timestamp": "google.protobuf.Timestamp",
    },
    "Str": {
        "value": "string",
    },
    "StrArray": {
        "value": "repeated string",
    },
    "Int": {
        "value": "int64",
    },
    "IntArray": {
        "value": "repeated int64",
    },
}

ONE_OFS: dict[str, list[str]] = {
    "Plugin": ["sampler"],
    "Criteria": ["le", "condition"],
    "TagValue": ["null", "str", "str_array", "int", "int_array", "binary_data", "timestamp"],
}
"""Members of each one-of group: at most one of them is set."""

ENUMS: dict[str, list[str]] = {
    "Catalog": [
        "CATALOG_UNSPECIFIED",
        "CATALOG_STREAM",
        "CATALOG_MEASURE",
        "CATALOG_PROPERTY",
        "CATALOG_TRACE",
    ],
    "IntervalRule.Unit": [
        "UNIT_UNSPECIFIED",
        "UNIT_HOUR",
        "UNIT_DAY",
    ],
    "PipelineEvent": [
        "PIPELINE_EVENT_UNSPECIFIED",
        "PIPELINE_EVENT_MERGE",
        "PIPELINE_EVENT_FINALIZE",
    ],
    "TagType": [
        "TAG_TYPE_UNSPECIFIED",
        "TAG_TYPE_STRING",
        "TAG_TYPE_INT",
        "TAG_TYPE_STRING_ARRAY",
        "TAG_TYPE_INT_ARRAY",
        "TAG_TYPE_DATA_BINARY",
        "TAG_TYPE_TIMESTAMP",
    ],
    "FieldType": [
        "FIELD_TYPE_UNSPECIFIED",
        "FIELD_TYPE_STRING",
        "FIELD_TYPE_INT",
        "FIELD_TYPE_DATA_BINARY",
        "FIELD_TYPE_FLOAT",
    ],
    "EncodingMethod": [
        "ENCODING_METHOD_UNSPECIFIED",
        "ENCODING_METHOD_GORILLA",
    ],
    "CompressionMethod": [
        "COMPRESSION_METHOD_UNSPECIFIED",
        "COMPRESSION_METHOD_ZSTD",
    ],
    "IndexRule.Type": [
        "TYPE_UNSPECIFIED",
        "TYPE_INVERTED",
        "TYPE_SKIPPING",
        "TYPE_TREE",
    ],
    "Condition.BinaryOp": [
        "BINARY_OP_UNSPECIFIED",
        "BINARY_OP_EQ",
        "BINARY_OP_NE",
        "BINARY_OP_LT",
        "BINARY_OP_GT",
        "BINARY_OP_LE",
        "BINARY_OP_GE",
        "BINARY_OP_HAVING",
        "BINARY_OP_NOT_HAVING",
        "BINARY_OP_IN",
        "BINARY_OP_NOT_IN",
        "BINARY_OP_MATCH",
    ],
    "Condition.MatchOption.Operator": [
        "OPERATOR_UNSPECIFIED",
        "OPERATOR_AND",
        "OPERATOR_OR",
    ],
    "LogicalExpression.LogicalOp": [
        "LOGICAL_OP_UNSPECIFIED",
        "LOGICAL_OP_AND",
        "LOGICAL_OP_OR",
    ],
    "Sort": [
        "SORT_UNSPECIFIED",
        "SORT_DESC",
        "SORT_ASC",
    ],
}
