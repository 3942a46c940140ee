"""A resource as stored: its JSON text, not a model.

A :class:`~schemacache.model.Resource` model of a 300-byte measure costs
about 3 KB of Python objects (nested dicts and lists, two models, their field
sets); its JSON text costs the text.  A node holds every resource of the schema
for its lifetime, so it keeps the text -- exactly what the registry stored and
what the node's state file holds -- and builds the model only when something
asks for one: a handler call, a cache read.  Desired and applied state share
one record per version, so a version is held once however many maps name it.
Registries hand out listings in this form (:meth:`Registry.list_stored`), so a
full sync never holds the whole schema as models at once.
"""

from __future__ import annotations

from typing import Any

import pydantic_core

from .model import Resource


def decode(text: str | bytes) -> Any:
    """The JSON value of ``text`` (a resource's stored form).

    pydantic-core's parser is about twice as fast as ``json.loads`` on
    resources, and caching the repeated strings (field names, kinds) saves
    memory too.
    """
    return pydantic_core.from_json(text, cache_strings="keys")


class StoredResource:
    """One version of a resource, held as its stored JSON text.

    :param text: the resource's JSON as :meth:`Resource.to_json` writes it
        (revisions included).
    :param mod_revision: the version's ``metadata.mod_revision`` (kept beside
        the text: digests and ordering need it without decoding).
    """

    __slots__ = ("mod_revision", "text")

    def __init__(self, text: str, mod_revision: int):
        self.text = text
        self.mod_revision = mod_revision

    @classmethod
    def of(cls, resource: Resource, text: str | None = None) -> StoredResource:
        """The record of ``resource``.

        :param text: its JSON as the registry stored it, if at hand (default
            ``None``: encoded here).  It must be the JSON of ``resource``.
        """
        return cls(resource.to_json() if text is None else text, resource.metadata.mod_revision)

    def model(self) -> Resource:
        """A new :class:`Resource` built from the text (not validated again: it
        was validated before it was stored)."""
        return Resource.from_stored(decode(self.text))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StoredResource):
            return NotImplemented
        return self.mod_revision == other.mod_revision and self.text == other.text

    __hash__ = None  # type: ignore[assignment]  # compared by content, never a key

    def __repr__(self) -> str:
        return f"StoredResource(mod_revision={self.mod_revision}, text={self.text[:60]!r}...)"
