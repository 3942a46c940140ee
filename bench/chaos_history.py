"""What the chaos harness checks in each node's handler record.

The registry's history is kept as a :class:`Timeline`: every change the
harness's own watch saw, in *epochs*.  Epoch 0 starts with the registry;
restoring an older backup (revision ``base``) starts a new epoch whose
history is the previous one up to ``base`` followed by the writes made after
the restore (their revisions reuse numbers the lost writes had).

The rule checked, per node and per key, over every call the handler recorded
(all process lifetimes of the node, in order; failed calls included, since the
handler received them):

- a call names a version the registry really had (``apply``/``delete`` of a
  ``mod_revision`` some put of that key wrote);
- *never backwards*: an apply's position is its version, a delete's position
  is the revision of the delete that ended that version's life; positions never
  decrease, and after a delete the key only comes back at a version newer than
  that delete (the same version or the same delete may come again: at least
  once; a delete naming an older life than the delete before it goes back
  too -- a retry names the version it named before, never an older one);
- *a restore starts a new revision space*: a key whose last position lies in
  history the restore threw away (above ``base``) starts afresh with its first
  call in the new epoch (what the restored registry holds, its delete when the
  restored registry lacks it, or a write made after the restore);
- at the end, the handler's state (every successful call replayed; a
  handler's effects outlive its process) equals the registry: present keys at
  their ``mod_revision``, deleted keys ending on a delete.

Which epoch a call belongs to is decided by its wall-clock time: calls before
a restore belong to the old epoch; calls after the harness saw every node
converge on the restored registry belong to the new one; in between (the
writer is paused, so no new write exists yet) a version up to ``base`` is the
same in both, and one above it can only be a lost one.
"""

from __future__ import annotations

import bisect
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Epoch:
    """One stretch of registry history between restores.

    :param start: wall-clock time of the restore that began it (0 for the first).
    :param base: revision of the restored backup (0 for the first).
    :param settled: wall-clock time every node was seen converged on it after
        the restore (0 for the first).
    """

    start: float = 0.0
    base: int = 0
    settled: float = 0.0
    puts: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))
    deletes: dict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    revision: int = 0

    def record(self, key: str, revision: int, deleted: bool) -> None:
        """Add one change, in revision order."""
        if deleted:
            self.deletes[key].append(revision)
        else:
            self.puts[key].add(revision)
        self.revision = max(self.revision, revision)

    def ended_by(self, key: str, version: int, upto: int | None = None) -> int | None:
        """Revision of the delete that ended the life holding ``version``; with
        ``upto``, only a delete at or below that revision counts."""
        deletes = self.deletes.get(key, [])
        i = bisect.bisect_right(deletes, version)
        if i < len(deletes) and (upto is None or deletes[i] <= upto):
            return deletes[i]
        return None

    def present(self) -> dict[str, int]:
        """Key → mod_revision of every key alive at the end of this epoch."""
        out: dict[str, int] = {}
        for key, versions in self.puts.items():
            last = max(versions)
            if self.ended_by(key, last) is None:
                out[key] = last
        return out


class Timeline:
    """The registry's history, epoch by epoch (see the module docstring)."""

    def __init__(self) -> None:
        self.epochs: list[Epoch] = [Epoch()]

    @property
    def current(self) -> Epoch:
        return self.epochs[-1]

    def record(self, key: str, revision: int, deleted: bool) -> None:
        self.current.record(key, revision, deleted)

    def restore(self, base: int, at: float) -> None:
        """Start a new epoch: the registry went back to revision ``base`` at time ``at``."""
        old = self.current
        new = Epoch(start=at, base=base, revision=base)
        for key, versions in old.puts.items():
            kept = {v for v in versions if v <= base}
            if kept:
                new.puts[key] = kept
        for key, revisions in old.deletes.items():
            kept_deletes = [d for d in revisions if d <= base]
            if kept_deletes:
                new.deletes[key] = kept_deletes
        self.epochs.append(new)

    def settled(self, at: float) -> None:
        """Every node was seen converged on the current epoch at time ``at``."""
        self.current.settled = at

    def lost_delete(self, key: str, version: int, at: float) -> tuple[int, int] | None:
        """Where a delete handed at ``at`` ends ``version``'s life when the current
        history does not, and that position's epoch: a delete the last restore threw
        away (handed before the node saw the restore), or the restore itself when it
        threw ``version`` away."""
        since = self.epoch_since(at)
        if since == 0:
            return None
        epoch = self.epochs[since]
        if epoch.settled == 0 or at < epoch.settled:
            lost = self.epochs[since - 1].ended_by(key, version)
            if lost is not None and lost > epoch.base:
                return lost, since - 1
        return (epoch.base, since) if version > epoch.base else None

    def epoch_since(self, at: float) -> int:
        """Index of the last epoch begun by wall-clock time ``at``."""
        return max(i for i, epoch in enumerate(self.epochs) if epoch.start <= at)

    def written_upto(self, index: int, at: float) -> int | None:
        """Highest revision epoch ``index`` can have written by wall-clock ``at``, when
        known: between a restore and every node holding it the writer is paused, so
        nothing above the backup's revision exists yet (a delete the new history
        makes later must not be taken for one a node hands in that window)."""
        epoch = self.epochs[index]
        if index > 0 and (epoch.settled == 0 or at < epoch.settled):
            return epoch.base
        return None

    def epoch_of(self, at: float, version: int) -> int:
        """Index of the epoch a call at wall-clock ``at`` handing ``version`` belongs to."""
        index = self.epoch_since(at)
        epoch = self.epochs[index]
        if index > 0 and (epoch.settled == 0 or at < epoch.settled) and version > epoch.base:
            return index - 1  # between restore and convergence: only lost versions are above base
        return index


@dataclass
class Call:
    """One record line: ``op`` ∈ apply|delete, ``failed`` for a ``fail`` line."""

    op: str
    key: str
    revision: int
    at: float
    failed: bool = False


_LINE = re.compile(r"^(?:(start) (\d+)|(fail )?(apply|delete) (\S+) (\d+)) (\d+\.\d{6})$")


def read_record(path: Path) -> tuple[list[Call], int]:
    """Every call in a record file (in order) and the number of ``start`` lines.

    Each line is written with one ``write`` and fsynced, so a SIGKILL can at
    worst leave the last line of a process unfinished, with the next process's
    ``start`` line glued to it; such a fragment is skipped.  Anything else
    malformed raises ``ValueError``.
    """
    calls: list[Call] = []
    starts = 0
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    lines = text.split("\n")
    for i, line in enumerate(lines):
        glued = line.find("start ", 1)
        if glued > 0:
            line = line[glued:]
        m = _LINE.match(line)
        if m is None:
            if line and i + 1 < len(lines):
                raise ValueError(f"{path}:{i + 1}: malformed record line {line!r}")
            continue
        if m.group(1):
            starts += 1
        else:
            calls.append(Call(m.group(4), m.group(5), int(m.group(6)), float(m.group(7)),
                              bool(m.group(3))))
    return calls, starts


@dataclass
class _Floor:
    value: int
    strict: bool
    """Set by a delete: only a newer life may follow."""
    epoch: int
    """The epoch whose revision space ``value`` belongs to."""

    def admits(self, position: int, is_apply: bool) -> bool:
        if is_apply and self.strict:
            return position > self.value
        return position >= self.value


@dataclass
class Verdict:
    """What :func:`check_calls` found for one node."""

    calls: int = 0
    rewinds: int = 0
    """Keys that went back once because a restore threw their history away."""
    problems: list[str] = field(default_factory=list)


def check_calls(calls: list[Call], timeline: Timeline, final: dict[str, int]) -> Verdict:
    """Check one node's calls against the registry's history (see the module docstring).

    :param calls: the node's record, every lifetime, in order.
    :param timeline: the registry's history.
    :param final: key → mod_revision of the registry at the end.
    """
    verdict = Verdict(calls=len(calls))
    floors: dict[str, _Floor] = {}
    state: dict[str, int] = {}
    for n, call in enumerate(calls):
        where = f"call {n + 1} ({'failed ' if call.failed else ''}{call.op} {call.key} " \
                f"{call.revision})"
        index = timeline.epoch_of(call.at, call.revision)
        epoch = timeline.epochs[index]
        if call.revision not in epoch.puts.get(call.key, ()):
            verdict.problems.append(f"{where}: no version the registry had (epoch {index})")
            continue
        position = call.revision
        if call.op == "delete":
            ended = epoch.ended_by(call.key, call.revision,
                                   timeline.written_upto(index, call.at))
            found = (ended, index) if ended is not None else timeline.lost_delete(
                call.key, call.revision, call.at)
            if found is None:
                verdict.problems.append(f"{where}: that version was never deleted")
                continue
            position, index = found
        floor = floors.get(call.key)
        if (floor is not None and index > floor.epoch
                and floor.value > timeline.epochs[index].base):
            # A restore threw this key's last position away: a new revision space.
            verdict.rewinds += 1
            floor = None
        if floor is not None and not floor.admits(position, call.op == "apply"):
            kind = "delete at" if floor.strict else "version"
            verdict.problems.append(f"{where}: went back, after {kind} {floor.value}")
        floors[call.key] = _Floor(max(position, floor.value) if floor else position,
                                  call.op == "delete",
                                  max(index, floor.epoch) if floor else index)
        if call.failed:
            continue
        if call.op == "apply":
            state[call.key] = call.revision
        else:
            state.pop(call.key, None)
    if state != final:
        missing = sorted(set(final) - set(state))
        extra = sorted(set(state) - set(final))
        stale = sorted(k for k in final if k in state and state[k] != final[k])
        verdict.problems.append(
            f"handler state differs from the registry: {len(missing)} never applied "
            f"{missing[:3]}, {len(extra)} not ended by a delete {extra[:3]}, {len(stale)} "
            f"at another version {[(k, state[k], final[k]) for k in stale[:3]]}")
    return verdict
