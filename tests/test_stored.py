"""StoredResource: a resource held as its stored JSON text gives back the model
it was made from, field for field, and answers as that model does."""

from __future__ import annotations

import sys
import tracemalloc
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from factories import binding, group, index_rule, measure, topn
from schemacache import Resource
from schemacache.model import NAME_RE
from schemacache.stored import StoredResource

NAMES = st.from_regex(NAME_RE, fullmatch=True).filter(lambda n: len(n) <= 40)


def _stored(resource: Resource, revision: int = 7) -> Resource:
    """``resource`` as a registry hands it out: revisions and commit time set."""
    return resource.with_revisions(3, revision, datetime(2026, 1, 2, 3, 4, 5, 678901, UTC))


def test_round_trip_gives_back_an_equal_model() -> None:
    for resource in (group("g"), measure("g", "m"), index_rule("g", "r"),
                     binding("g", "b", ["r"], "m"), topn("g", "t", "g", "m")):
        original = _stored(resource)
        record = StoredResource.of(original)
        model = record.model()
        assert model == original
        assert model.to_dict() == original.to_dict() and model.to_json() == original.to_json()
        assert model.key == original.key and model.mod_revision == record.mod_revision == 7
        assert model.metadata.updated_at == original.metadata.updated_at
        assert model is not record.model()  # each read builds its own model


def test_a_record_keeps_the_text_it_was_given() -> None:
    original = _stored(measure("g", "m"))
    text = original.to_json()
    record = StoredResource.of(original, text)
    assert record.text is text
    assert StoredResource(text, 7) == record
    assert StoredResource(text, 8) != record
    assert StoredResource.of(_stored(measure("g", "m"), 9)) != record


def test_a_record_is_a_fraction_of_its_model() -> None:
    record = StoredResource.of(_stored(measure("g", "m")))
    held = sys.getsizeof(record) + sys.getsizeof(record.text)
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        model = record.model()
        model_bytes = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert model.key == "measure/g/m"
    # The models share their field-name sets, so the margin is about 1.5x.
    assert held < model_bytes, (held, model_bytes)


@given(NAMES, NAMES, st.integers(min_value=1, max_value=2**53),
       st.lists(NAMES, min_size=1, max_size=4, unique=True))
def test_any_measure_survives_the_round_trip(group_name: str, name: str, revision: int,
                                             fields: list[str]) -> None:
    original = _stored(measure(group_name, name, fields=tuple(fields)), revision)
    model = StoredResource.of(original).model()
    assert model == original and model.to_dict() == original.to_dict()


def test_models_read_back_behave_as_validated_ones_on_assignment_and_copy() -> None:
    """Models built without validation (``Resource.from_stored``) must answer
    ``model_fields_set`` and take assignment and copies as validated ones do,
    without one instance's change reaching another."""
    text = _stored(measure("g", "m")).to_json()
    first, second = (StoredResource(text, 7).model() for _ in range(2))
    validated = Resource.model_validate_json(text)
    assert first.model_fields_set == second.model_fields_set == validated.model_fields_set
    first.spec = {}
    first.metadata.name = "other"
    assert second.spec != {} and second.metadata.name == "m"
    copy = second.model_copy(update={"spec": {"x": 1}})
    assert copy.spec == {"x": 1} and second.spec != {"x": 1}
    assert copy.model_fields_set == second.model_fields_set == validated.model_fields_set
    assert first.model_dump().keys() == validated.model_dump().keys()
