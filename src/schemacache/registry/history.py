"""What tells one registry history from another at the same revision.

A backup restored under a registry, then written to, reuses the revision
numbers of the history it threw away: a node that received revision R of the
old history sees a registry at or past R and cannot tell from the number that
R now names another change.  A *change mark* names the change itself: its
type, key and the commit time the registry stamped on the version
(``updated_at``, microseconds).  Two histories agree at R only if their
changes at R carry the same mark.
"""

from __future__ import annotations

from ..model import Event, EventType, Resource

__all__ = ["change_mark", "event_mark", "marked_change"]


def change_mark(kind: EventType | str, key: str, resource: Resource) -> str:
    """The mark of one change: ``kind`` (PUT or DELETE), ``key`` and the version
    ``resource`` (the new one of a PUT, the last one of a DELETE)."""
    stamp = resource.metadata.updated_at
    return f"{EventType(kind).value} {key} {stamp.isoformat() if stamp else '-'}"


def event_mark(event: Event) -> str:
    """The mark of the change ``event`` reports (``""`` when its version carries
    no commit time, as a delete reported without its last version does)."""
    if event.resource.metadata.updated_at is None:
        return ""
    return change_mark(event.type, event.key, event.resource)


def marked_change(mark: str) -> tuple[EventType, str]:
    """The type and key a mark names (its stamp is the last word; a key may not
    hold a space, but the split does not rely on it)."""
    kind, rest = mark.split(" ", 1)
    return EventType(kind), rest.rsplit(" ", 1)[0]
