"""Properties of BanyanDB documents over generated objects (hypothesis).

- every spelling protojson accepts (snake_case or lowerCamelCase names, enum
  values by full name, short name or number) reads to the same resource;
- a resource written as a document reads back to the same spec.
"""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic.alias_generators import to_camel

from schemacache import banyandb, banyandb_facts, kinds

NAMES = st.from_regex(r"[a-z][a-z0-9_]{0,8}", fullmatch=True)
PREFIXES = {spec.proto_name: spec.prefix for spec in kinds.PROTO_ENUMS.values()}
SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def _enum(enum_name: str, allowed: list[str] | None = None) -> st.SearchStrategy[int]:
    """A value of an enum, as its number (the document strategies spell it)."""
    values = banyandb_facts.ENUMS[enum_name]
    numbers = [i for i, v in enumerate(values) if allowed is None or v in allowed]
    return st.sampled_from(numbers)


def _tag_value() -> st.SearchStrategy[dict[str, Any]]:
    ints = st.integers(min_value=-(2**63), max_value=2**63 - 1)
    return st.one_of(
        st.just({"null": None}),
        st.builds(lambda v: {"str": {"value": v}}, st.text(max_size=5)),
        st.builds(lambda v: {"str_array": {"value": v}}, st.lists(st.text(max_size=3), max_size=3)),
        st.builds(lambda v: {"int": {"value": v}}, ints),
        st.builds(lambda v: {"int_array": {"value": v}}, st.lists(ints, max_size=3)),
        st.builds(lambda v: {"binary_data": v}, st.sampled_from(["", "AA==", "AAEC/w=="])),
        st.just({"timestamp": "2026-08-21T10:15:30Z"}),
    )


def _condition() -> st.SearchStrategy[dict[str, Any]]:
    return st.builds(
        lambda name, op, value, operator: {"condition": {
            "name": name, "op": ("enum", "Condition.BinaryOp", op), "value": value,
            "match_option": {"analyzer": "", "operator": (
                "enum", "Condition.MatchOption.Operator", operator)}}},
        NAMES, _enum("Condition.BinaryOp"), _tag_value(), _enum("Condition.MatchOption.Operator"))


CRITERIA = st.recursive(
    _condition(),
    lambda inner: st.builds(
        lambda op, left, right: {"le": {"op": ("enum", "LogicalExpression.LogicalOp", op),
                                        "left": left, "right": right}},
        _enum("LogicalExpression.LogicalOp"), inner, inner),
    max_leaves=6,
)


@st.composite
def measures(draw: st.DrawFn) -> dict[str, Any]:
    tag_types = [v for v in banyandb_facts.ENUMS["TagType"] if not v.endswith("UNSPECIFIED")]
    tags = draw(st.lists(NAMES, min_size=1, max_size=4, unique=True))
    fields = [f for f in draw(st.lists(NAMES, max_size=3, unique=True)) if f not in tags]
    return {
        "metadata": {"group": "g", "name": draw(NAMES)},
        "tag_families": [{"name": "default", "tags": [
            {"name": t, "type": ("enum", "TagType", draw(_enum("TagType", tag_types)))}
            for t in tags]}],
        "fields": [{
            "name": f,
            "field_type": ("enum", "FieldType", draw(_enum("FieldType", [
                v for v in banyandb_facts.ENUMS["FieldType"] if not v.endswith("UNSPECIFIED")]))),
            "encoding_method": ("enum", "EncodingMethod", draw(_enum("EncodingMethod"))),
            "compression_method": ("enum", "CompressionMethod", 1),
        } for f in fields],
        "entity": {"tag_names": [tags[0]]},
        "interval": draw(st.sampled_from(["", "1m", "1h30m", "1.5h", "500µs", "7d", "0"])),
    }


@st.composite
def topns(draw: st.DrawFn) -> dict[str, Any]:
    return {
        "metadata": {"group": "g", "name": draw(NAMES)},
        "source_measure": {"group": "g", "name": draw(NAMES),
                           "create_revision": draw(st.integers(0, 2**63 - 1))},
        "field_name": draw(NAMES),
        "field_value_sort": ("enum", "Sort", draw(_enum("Sort"))),
        "criteria": draw(CRITERIA),
        "counters_number": draw(st.integers(1, 2**31 - 1)),
        "lru_size": draw(st.integers(0, 100)),
    }


def _spell(doc: Any, style: dict[str, Any]) -> Any:
    """The document with enum values and field names spelt in one style."""
    if isinstance(doc, tuple) and doc[0] == "enum":
        _, enum_name, number = doc
        value = banyandb_facts.ENUMS[enum_name][number]
        if style["enum"] == "number":
            return number
        if style["enum"] == "short":
            return value[len(PREFIXES[enum_name]):]
        return value
    if isinstance(doc, list):
        return [_spell(item, style) for item in doc]
    if isinstance(doc, dict):
        return {(to_camel(k) if style["camel"] else k): _spell(v, style) for k, v in doc.items()}
    return doc


STYLES = [{"enum": e, "camel": c} for e in ("full", "short", "number") for c in (False, True)]


def _check_spellings_and_round_trip(doc: dict[str, Any], kind: str) -> None:
    read = [banyandb.from_document(json.loads(json.dumps(_spell(doc, style))), kind)
            for style in STYLES]
    first = read[0]
    for other in read[1:]:
        assert other.spec == first.spec and other.key == first.key
    written = json.loads(json.dumps(banyandb.to_document(first)))
    assert banyandb.from_document(written, kind).spec == first.spec


@SETTINGS
@given(measures())
def test_measure_spellings_and_round_trip(doc: dict[str, Any]) -> None:
    _check_spellings_and_round_trip(doc, "measure")


@SETTINGS
@given(topns())
def test_topn_spellings_and_round_trip(doc: dict[str, Any]) -> None:
    _check_spellings_and_round_trip(doc, "topn_aggregation")
