"""YAML documents built from the parser's events (``schemacache._yaml_events``)
are exactly what the full loader builds: same values, same errors, and the
full loader takes over for every feature the builder leaves to it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from schemacache import documents
from schemacache._yaml_events import MAX_DEPTH, Unsupported, build_documents
from schemacache.errors import ValidationError

EXAMPLES = Path(__file__).resolve().parent.parent / "src" / "schemacache" / "examples"

# Scalars whose plain spelling YAML resolves to something other than a string,
# or that need quoting, or that the manifest loader treats specially.
TRICKY = ["yes", "No", "ON", "off", "null", "~", "", "1e3", "0x1f", "0o17", "0b101", "1_000",
          "+12", "-0", ".inf", "-.Inf", ".nan", "2024-01-02", "2024-01-02 03:04:05.5+02:00",
          "2024-13-45", "<<", "=", "a: b", "- x", "#c", "'q'", '"d"', "|", ">", "@x", "`",
          "&anchor", "*alias", "!tag", "%x", "?", "12:30:00", "1:20", "0.5", "-3", "x" * 40,
          "é", "\u2028", "tab\there", "line\nbreak", "9" * 25, "-" + "9" * 25]

scalars = st.one_of(
    st.sampled_from(TRICKY), st.text(max_size=12), st.booleans(), st.none(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=True))
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(TRICKY), st.text(max_size=6)), inner,
                        max_size=4)),
    max_leaves=25)


def loader_only(text: str) -> Any:
    """What :func:`documents.parse_documents` answers with the full loader alone."""
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(documents, "_built_from_events", lambda text, screen: None)
            return documents.parse_documents(text)
    except ValidationError as exc:
        return ("refused", str(exc))


def either(text: str) -> Any:
    try:
        return documents.parse_documents(text)
    except ValidationError as exc:
        return ("refused", str(exc))


def built(text: str) -> list[Any]:
    """The builder's documents (``Unsupported`` propagates)."""
    loader = documents._ManifestLoader(text, documents._Screen())
    try:
        return build_documents(loader)
    finally:
        loader.dispose()


def loaded(text: str) -> list[Any]:
    """The full loader's documents, ``None`` for empty ones included."""
    loader = documents._ManifestLoader(text, documents._Screen())
    try:
        return list(documents._load_all(loader))
    finally:
        loader.dispose()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(docs=st.lists(values, min_size=1, max_size=3), flow=st.sampled_from([None, True, False]),
       unicode=st.booleans())
def test_built_documents_equal_the_loaders(docs: list[Any], flow: bool | None,
                                           unicode: bool) -> None:
    text = yaml.safe_dump_all(docs, default_flow_style=flow, allow_unicode=unicode)
    try:
        fast = built(text)
    except Unsupported:
        return  # left to the loader, which the next test compares
    assert json.dumps(fast, default=repr) == json.dumps(loaded(text), default=repr)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.text(alphabet="ab1: -{}[],'\"\n&*!<>|#?~.\\", max_size=60))
@example(text="a: &x 1\nb: *x\n")
@example(text="<<: {a: 1}\nb: 2\n")
@example(text="a: !!binary aGk=\n")
@example(text="? [a]\n: b\n")
@example(text="a: 2024-13-45\n")
@example(text="a: [1, 2\n")
@example(text="a: 1\na: 2\n")
@example(text="--- 3\n--- [x]\n")
@example(text="a: " + "9" * 5000 + "\n")
def test_any_text_gets_the_loaders_answer(text: str) -> None:
    """Documents or error message: identical with and without the builder."""
    assert json.dumps(either(text), default=repr) == json.dumps(loader_only(text), default=repr)


@pytest.mark.parametrize("text", [
    "a: &x {b: 1}\nc: *x\n",              # anchor and alias
    "base: &b {x: 1}\nd: {<<: *b, y: 2}\n",  # merge key
    "a: !!str 1\n",                      # explicit tag
    "a: !custom x\n",                    # unknown tag
    "? {k: v}\n: x\n",                   # mapping as a key
    "a: =\n",                            # value key
])
def test_features_left_to_the_loader(text: str) -> None:
    with pytest.raises(Unsupported):
        built(text)
    assert json.dumps(either(text), default=repr) == json.dumps(loader_only(text), default=repr)


def test_deep_nesting_is_left_to_the_loader() -> None:
    deeper = "a: " + "[" * MAX_DEPTH + "]" * MAX_DEPTH + "\n"
    with pytest.raises(Unsupported):
        built(deeper)
    assert either(deeper) == loader_only(deeper)
    shallow = "a: " + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1) + "\n"
    assert built(shallow) == loaded(shallow)
    bomb = "a: " + "[" * 5000 + "]" * 5000 + "\n"
    assert either(bomb) == loader_only(bomb)
    assert either(bomb)[0] == "refused"


def test_hostile_scalars_keep_their_rules() -> None:
    """Bounded integers, timestamps as text and non-finite numbers: the
    loader's own constructors run, so the screening names the field."""
    with pytest.raises(ValidationError, match=r"spec\.n.*out of range|out of range.*spec\.n"):
        documents.parse_documents("kind: g\nspec: {n: " + "9" * 5000 + "}\n")
    with pytest.raises(ValidationError, match="finite"):
        documents.parse_documents("kind: g\nspec: {n: .inf}\n")
    assert built("t: 2024-01-02 03:04:05\n") == [{"t": "2024-01-02T03:04:05"}]


def test_examples_and_exported_manifests_take_the_builder() -> None:
    """The manifests users write (and ``get -o yaml`` prints) never need the
    slow loader: the speed of a large apply depends on it."""
    texts = [p.read_text() for p in sorted(EXAMPLES.glob("*.yaml"))]
    texts.append(yaml.safe_dump_all([d for t in texts for d in yaml.safe_load_all(t)],
                                    sort_keys=False))
    for text in texts:
        assert built(text) == loaded(text)
