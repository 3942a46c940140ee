"""Plain YAML documents built straight from the parser's events.

PyYAML's loaders compose a node graph and then construct values from it in
Python, with the machinery anchors, aliases and recursive structures need;
that construction is most of the time a large manifest takes to parse (10,000
measures: about 1.7 s of CPU with libyaml's ``CSafeLoader``).  A manifest
rarely uses any of that, so :func:`build_documents` reads the same parser's
events and builds the dicts, lists and scalars directly — about 2.5 times as
fast — resolving each distinct plain scalar once.

It builds only what it can build exactly as the loader would: anything else
(an anchor, an alias, an explicit tag, a mapping or list used as a key, a
merge key, a tag no manifest needs, nesting deeper than :data:`MAX_DEPTH`)
raises :class:`Unsupported`, and the caller parses the text with the loader
itself.  Scalars are still constructed by the loader's own constructors, so
every rule they enforce (bounded integers, timestamps as text) holds.
"""

from __future__ import annotations

from typing import Any, ClassVar, Protocol

import yaml
from yaml.events import (
    AliasEvent,
    DocumentEndEvent,
    DocumentStartEvent,
    MappingEndEvent,
    MappingStartEvent,
    ScalarEvent,
    SequenceEndEvent,
    SequenceStartEvent,
    StreamEndEvent,
    StreamStartEvent,
)

MAX_DEPTH = 64
"""Nesting (mappings and lists) built here; deeper text goes to the loader,
which reports it (schema documents nest about six deep)."""

MAX_CACHED_SCALARS = 200_000
"""Distinct plain scalars whose value is remembered during one parse."""

STR_TAG = "tag:yaml.org,2002:str"

BUILT_TAGS = frozenset(f"tag:yaml.org,2002:{name}" for name in (
    "str", "int", "float", "bool", "null", "timestamp"))
"""Tags a plain scalar may resolve to here; any other goes to the loader."""


class Unsupported(Exception):
    """The text uses a YAML feature only the full loader builds."""


class EventLoader(Protocol):
    """What :func:`build_documents` needs of a PyYAML loader."""

    yaml_constructors: ClassVar[dict[Any, Any]]

    def get_event(self) -> Any: ...

    def resolve(self, kind: type[yaml.Node], value: str, implicit: tuple[bool, bool]) -> str: ...


_CONTAINER_END = (MappingEndEvent, SequenceEndEvent)
_PASSED = (DocumentStartEvent, DocumentEndEvent, StreamStartEvent)


def build_documents(loader: EventLoader) -> list[Any]:
    """Every document of the loader's text as plain values (``None`` for an
    empty document), as the loader's ``get_data`` would return them.

    :raises Unsupported: when the text needs the loader itself (see module doc).
    :raises yaml.YAMLError: for text that is not YAML.
    """
    get_event = loader.get_event
    plain = _PlainScalars(loader)
    docs: list[Any] = []
    # The container being filled, the pending mapping key, and the enclosing ones.
    stack: list[tuple[Any, Any, bool]] = []
    current: Any = None
    key: Any = None
    in_mapping = False
    have_key = False
    while True:
        event = get_event()
        kind = type(event)
        if kind is ScalarEvent:
            if event.anchor is not None or event.tag is not None:
                raise Unsupported("anchor or tag")
            value = plain(event.value) if event.implicit[0] else event.value
        elif kind is MappingStartEvent or kind is SequenceStartEvent:
            if event.anchor is not None or event.tag is not None:
                raise Unsupported("anchor or tag")
            if in_mapping and not have_key:
                raise Unsupported("complex mapping key")
            if len(stack) >= MAX_DEPTH:
                raise Unsupported("deep nesting")
            stack.append((current, key, in_mapping))
            in_mapping = kind is MappingStartEvent
            current = {} if in_mapping else []
            have_key = False
            continue
        elif kind in _CONTAINER_END:
            value = current
            current, key, in_mapping = stack.pop()
            have_key = in_mapping
        elif kind in _PASSED:
            continue
        elif kind is StreamEndEvent:
            return docs
        elif kind is AliasEvent:
            raise Unsupported("alias")
        else:  # pragma: no cover - every event class of PyYAML is handled above
            raise Unsupported(kind.__name__)
        if not stack:
            docs.append(value)
        elif not in_mapping:
            current.append(value)
        elif have_key:
            current[key] = value
            have_key = False
        else:
            key, have_key = value, True


class _PlainScalars:
    """Plain (unquoted) scalars resolved and constructed as the loader does,
    each distinct text once: a manifest repeats the same few values."""

    def __init__(self, loader: EventLoader):
        self._loader = loader
        self._constructors = loader.yaml_constructors
        self._known: dict[str, Any] = {}

    def __call__(self, text: str) -> Any:
        known = self._known.get(text, self)
        if known is not self:
            return known
        tag = self._loader.resolve(yaml.ScalarNode, text, (True, False))
        if tag == STR_TAG:
            value: Any = text
        elif tag in BUILT_TAGS:
            value = self._constructors[tag](self._loader, yaml.ScalarNode(tag, text))
        else:
            raise Unsupported(tag)  # a merge key (<<) or a value key (=)
        if len(self._known) < MAX_CACHED_SCALARS:
            self._known[text] = value
        return value
