"""Event intake: a watch event changes desired state and queues its key; a
progress mark moves the received revision.

This is the node's hottest path (one call per watch event, tens of thousands a
second while catching up): each step is one call into the part that owns it,
with nothing built per event but the desired version.
"""

from __future__ import annotations

from ..model import NODE_KIND, Event, EventType
from .desired import Desired
from .gate import DependencyGate
from .meters import ReconcileMeters
from .nodestate import NodeState
from .progress import Progress
from .queue import PRIO_LIVE
from .schedule import Scheduler


class Intake:
    """Takes the watch's events and progress marks.

    :param state: desired state and the received revision.
    :param progress: unsettled keys.
    :param meters: event counters.
    :param scheduler: the bookkeeping of a changed key.
    :param gate: wakes the keys waiting for a key that converged.
    """

    def __init__(self, *, state: NodeState, progress: Progress, meters: ReconcileMeters,
                 scheduler: Scheduler, gate: DependencyGate):
        self.state = state
        self.desired = state.desired
        self.progress = progress
        self._meters = meters
        self._forget_stale = scheduler.forget_stale
        self._converged = scheduler.converged
        self._wake_waiters = gate.wake_waiters

    def on_event(self, event: Event) -> None:
        """Take one watch event: update desired state and enqueue the key."""
        key = event.key
        revision = event.revision
        resource = event.resource
        kind = resource.kind
        self._meters.event(kind, event.type)
        if kind != NODE_KIND:
            cur = self.desired.get(key)
            if cur is None or cur.revision < revision:
                d = Desired.of(revision, event.type == EventType.DELETE, resource, True,
                               event.stored_json)
                self.state.set_desired(key, d)
                self._desired_changed(key, d, PRIO_LIVE)
        state = self.state
        state.receive(revision, event)
        self.progress.notify(state.received_revision)

    def on_progress(self, revision: int) -> None:
        """Take a watch progress mark: nothing under the schema changed after
        the events received so far, up to ``revision``."""
        if self.state.receive(revision):
            self.progress.notify()

    def _desired_changed(self, key: str, d: Desired, prio: int) -> None:
        self._forget_stale(key, d)
        if self.state.is_settled(key, d):
            self._converged(key)
            self._wake_waiters(key)
        else:
            self.progress.mark_unsettled(key, d.revision)
            self.state.admit(key, prio)
