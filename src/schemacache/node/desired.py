"""What a node knows of a key's newest version: :class:`Desired`, and which
version a delete names."""

from __future__ import annotations

from dataclasses import dataclass

from ..model import Resource
from ..stored import StoredResource


@dataclass(slots=True)
class Desired:
    """The newest version of a key the node knows of.

    :param revision: the version's revision (the delete revision for a tombstone).
    :param deleted: a tombstone: the key is deleted at ``revision``.
    :param stored: the version (for a tombstone, the last version known).
    :param live: received from the watch (its propagation delay is measured).
    :param model: the version as a model, while it is on its way to the handler
        (default ``None``: built from ``stored`` when needed); dropped once the
        version is settled, so a settled key costs only its record.
    :param batch: the state commit that makes it durable (default 0: read
        from disk), set by :meth:`NodeState.set_desired`.
    """

    revision: int
    deleted: bool
    stored: StoredResource
    live: bool = False
    model: Resource | None = None
    batch: int = 0

    @classmethod
    def of(cls, revision: int, deleted: bool, resource: Resource, live: bool = False,
           text: str | None = None) -> Desired:
        """The desired version ``resource`` (``text``: its stored JSON, if at hand)."""
        return cls(revision, deleted, StoredResource.of(resource, text), live, resource)

    @property
    def resource(self) -> Resource:
        """The version as a model (built from ``stored`` if not at hand, and kept
        until :meth:`NodeState.release_model`)."""
        if self.model is None:
            self.model = self.stored.model()
        return self.model

    def resource_of(self, stored: StoredResource) -> Resource:
        """``stored`` as a model: :attr:`resource` when it is this version."""
        return self.resource if stored is self.stored else stored.model()


def delete_version(tombstone: StoredResource, applied: StoredResource) -> StoredResource:
    """The version a delete names: the newest the handler may hold.

    The tombstone carries the registry's last version, possibly newer than the
    applied one (handed, then lost to a crash before it settled); a start-up
    replay hands that one, so every retry must too -- never an older one.  A
    tombstone whose last version was compacted away (revision 0) names the
    applied version.
    """
    return tombstone if tombstone.mod_revision >= applied.mod_revision else applied
