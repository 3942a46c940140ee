"""Resources, keys and events: the vocabulary shared by registry and node.

A resource is an envelope ``{kind, metadata, spec}``; its key is
``<kind>/<group>/<name>`` (a group's key is ``group/<name>``).  The registry
owns ``create_revision``, ``mod_revision`` and ``updated_at``: whatever a
writer puts there is replaced on commit.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, TypeVar

import pydantic
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_validator,
)

from .errors import ValidationError
from .kinds import validate_spec
from .validation import from_pydantic

NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.-]{0,254}$"
NAME_RE = re.compile(NAME_PATTERN)
GROUP_KIND = "group"
NODE_KIND = "node"


class Metadata(BaseModel):
    """Identity and version of a resource.

    :param group: the group the resource belongs to (``None`` for a group itself).
    :param name: the resource's name.
    :param create_revision: registry revision that created the key (set by the registry).
    :param mod_revision: registry revision of this version (set by the registry).
    :param updated_at: commit time of this version (set by the registry).
    """

    model_config = ConfigDict(extra="forbid")

    group: str | None = None
    name: str = Field(pattern=NAME_PATTERN)
    create_revision: int = Field(default=0, ge=0)
    mod_revision: int = Field(default=0, ge=0)
    updated_at: datetime | None = None


class Resource(BaseModel):
    """One schema object.

    Construction validates the envelope and, through :mod:`schemacache.kinds`,
    the spec of the kind; the spec is stored normalised (defaults filled in,
    enums upper-case) so that equal schemas compare equal.
    """

    model_config = ConfigDict(extra="forbid")

    kind: str
    metadata: Metadata
    spec: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _validate_kind_and_spec(self) -> Resource:
        self.spec = validate_spec(self.kind, self.metadata, self.spec)
        return self

    @classmethod
    def parse(cls, data: Any) -> Resource:
        """Validate a manifest document; raises :class:`ValidationError` naming the field."""
        if not isinstance(data, dict):
            raise ValidationError(f"expected a mapping, got {type(data).__name__}")
        try:
            return cls.model_validate(data)
        except pydantic.ValidationError as exc:
            raise from_pydantic(exc) from None

    @property
    def key(self) -> str:
        return make_key(self.kind, self.metadata.group, self.metadata.name)

    @property
    def group(self) -> str | None:
        return self.metadata.group

    @property
    def name(self) -> str:
        return self.metadata.name

    @property
    def mod_revision(self) -> int:
        return self.metadata.mod_revision

    @property
    def create_revision(self) -> int:
        return self.metadata.create_revision

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready envelope (``updated_at`` as ISO 8601, ``None`` fields dropped)."""
        return self.model_dump(mode="json", exclude_none=True)

    def to_json(self) -> str:
        return self.model_dump_json(exclude_none=True)

    @classmethod
    def from_stored(cls, data: dict[str, Any]) -> Resource:
        """Rebuild a resource the registry stored, without validating it again.

        Reads of stored resources are the hot path of every listing and watch
        (100,000 resources per repair); the registry validated them on write,
        so this fills the models' fields directly, which is about twice as
        fast as ``model_construct``.
        """
        meta = data["metadata"]
        updated = meta.get("updated_at")
        if isinstance(updated, str):
            updated = datetime.fromisoformat(updated)
        metadata = _bare(Metadata, {
            "group": meta.get("group"),
            "name": meta["name"],
            "create_revision": meta.get("create_revision", 0),
            "mod_revision": meta.get("mod_revision", 0),
            "updated_at": updated,
        })
        return _bare(cls, {"kind": data["kind"], "metadata": metadata,
                           "spec": data.get("spec", {})})

    def with_revisions(
        self, create_revision: int, mod_revision: int, updated_at: datetime | None = None
    ) -> Resource:
        """A copy carrying the registry's revisions (used by registry backends on commit).

        Built without validating again (the fields come from a validated
        resource): a 100,000-resource apply copies every resource once.
        """
        meta = self.metadata
        metadata = _bare(Metadata, {
            "group": meta.group,
            "name": meta.name,
            "create_revision": create_revision,
            "mod_revision": mod_revision,
            "updated_at": updated_at or datetime.now(UTC),
        })
        return _bare(type(self), {"kind": self.kind, "metadata": metadata, "spec": self.spec})

    def same_content(self, other: Resource) -> bool:
        """True when both carry the same kind, identity and spec (revisions ignored)."""
        return (
            self.kind == other.kind
            and self.metadata.group == other.metadata.group
            and self.metadata.name == other.metadata.name
            and self.spec == other.spec
        )


_ModelT = TypeVar("_ModelT", bound=BaseModel)


# BaseModel's own slots, set through their descriptors: about a third faster
# than object.__setattr__ by name, and every watched event builds three models.
_set_dict = BaseModel.__dict__["__dict__"].__set__
_set_fields_set = BaseModel.__dict__["__pydantic_fields_set__"].__set__
_set_extra = BaseModel.__dict__["__pydantic_extra__"].__set__
_set_private = BaseModel.__dict__["__pydantic_private__"].__set__
_new_object = object.__new__

# Per model class, the set of all its field names, shared by the instances
# _bare builds: pydantic only ever adds a field name to an instance's set (on
# assignment), which this one already holds, and copies it with the instance.
_every_field: dict[type[BaseModel], set[str]] = {}


def _bare(model: type[_ModelT], values: dict[str, Any]) -> _ModelT:
    """An instance of ``model`` holding ``values`` as they are (trusted data
    only; ``values`` holds every field of ``model``)."""
    obj = _new_object(model)
    _set_dict(obj, values)
    every = _every_field.get(model)
    if every is None:
        every = _every_field[model] = set(model.model_fields)
    _set_fields_set(obj, every)
    _set_extra(obj, None)
    _set_private(obj, None)
    return obj


class EventType(StrEnum):
    PUT = "PUT"
    DELETE = "DELETE"


class Event(BaseModel):
    """A change of one key at one revision.

    :param type: ``PUT`` or ``DELETE``.
    :param key: the key changed.
    :param revision: the registry revision of the change.
    :param resource: the new version (``PUT``) or the last version before the
        delete (``DELETE``).
    """

    model_config = ConfigDict(frozen=True)

    type: EventType
    key: str
    revision: int
    resource: Resource

    _stored_json: str | None = PrivateAttr(default=None)

    @field_validator("resource", mode="wrap")
    @classmethod
    def _keep_resource(cls, value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        # A Resource instance was validated when it was built; letting pydantic
        # take it again re-runs the kind's spec checks (~15 µs, on every event).
        if isinstance(value, Resource):
            return value
        return handler(value)

    @classmethod
    def from_stored(cls, type: EventType, key: str, revision: int, resource: Resource,
                    stored_json: str | None = None) -> Event:
        """An event a registry read back from its own log, without validating it again.

        :param resource: the decoded resource (see :meth:`Resource.from_stored`).
        :param stored_json: the resource's JSON exactly as the registry stored
            it, revisions included (default ``None``: not known).  Kept so that
            a consumer persisting the resource need not encode it again.
        """
        event = _bare(cls, {"type": type, "key": key, "revision": revision,
                            "resource": resource})
        _set_private(event, {"_stored_json": stored_json})
        return event

    @property
    def stored_json(self) -> str | None:
        """The resource's JSON as the registry stored it, or ``None`` when not known."""
        # Read the private slot directly: pydantic's attribute fallback for
        # private names costs more than the rest of taking an event.
        private = self.__pydantic_private__
        return private.get("_stored_json") if private else None

    def __eq__(self, other: object) -> bool:
        # Whether the registry's text came along is not part of the event.
        if not isinstance(other, Event):
            return NotImplemented
        return (self.type == other.type and self.key == other.key
                and self.revision == other.revision and self.resource == other.resource)

    __hash__ = None  # type: ignore[assignment]  # resources are mutable


def make_key(kind: str, group: str | None, name: str) -> str:
    """The registry key of a resource: ``group/<name>`` or ``<kind>/<group>/<name>``."""
    if kind == GROUP_KIND or kind == NODE_KIND:
        return f"{kind}/{name}"
    if not group:
        raise ValidationError(f"a {kind} needs a group", field="metadata.group")
    return f"{kind}/{group}/{name}"


def parse_key(key: str) -> tuple[str, str | None, str]:
    """Split a key into ``(kind, group, name)``; raises :class:`ValidationError` if malformed."""
    parts = key.split("/")
    if len(parts) == 2 and parts[0] in (GROUP_KIND, NODE_KIND):
        kind, group, name = parts[0], None, parts[1]
    elif len(parts) == 3 and parts[0] not in (GROUP_KIND, NODE_KIND):
        kind, group, name = parts
    else:
        raise ValidationError(
            f"malformed key {key!r}: expected group/<name> or <kind>/<group>/<name>", field="key"
        )
    for part in (kind, group, name):
        if part is not None and not NAME_RE.match(part):
            raise ValidationError(f"malformed key {key!r}: bad segment {part!r}", field="key")
    return kind, group, name


def digest(entries: Iterable[tuple[str, int]]) -> str:
    """SHA-256 (hex) over the sorted lines ``key\\tmod_revision\\n`` of a state."""
    h = hashlib.sha256()
    for key, rev in sorted(entries):
        h.update(f"{key}\t{rev}\n".encode())
    return h.hexdigest()


def digest_of(resources: Iterable[Resource]) -> str:
    """The digest of a set of resources (see :func:`digest`)."""
    return digest((r.key, r.metadata.mod_revision) for r in resources)
