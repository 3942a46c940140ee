"""The node's durable state, buffered: writes gather in memory and a
background flusher commits them to the state file (:mod:`.state_db`) in
batches, so the cost of a transaction is shared by many events.  Buffered
writes to one key collapse to the newest.  The received revision is written in
the same transaction as the desired state it covers, so a restart never skips
an event.

The desired table is also the node's write-ahead record: a handler is handed
no version before its desired row is durable, so after a crash the durable
desired version is never older than anything the handler was handed.  Rows are
numbered by the commit that takes them (:meth:`StateStore.put_desired` answers
the number, :attr:`StateStore.durable_batch` is the last one committed), so
telling whether a row is durable costs one comparison, not a table of keys.
A handler call waiting for its row cuts the timer short
(:meth:`StateStore.request_commit`): the flusher then commits at once, the next
commit starting as soon as the previous one ended and taking everything
pending (group commit).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable

from ..model import Event
from ..registry.history import event_mark
from ..stored import StoredResource
from .failures import FailureRecord
from .state_db import STATE_FILE, AppliedRow, Batch, DesiredRow, LoadedState, StateError, StateFile

__all__ = ["FLUSH_BATCH", "FLUSH_INTERVAL", "MAX_PENDING_WRITES", "STATE_FILE", "LoadedState",
           "StateError", "StateStore"]

log = logging.getLogger(__name__)

FLUSH_INTERVAL = 0.025
"""Seconds between commits while writes are pending.  Handler calls never wait
for a commit, so this bounds only how much progress a crash can lose (it is
re-received and re-applied after the restart); at live rates a shorter interval
means one transaction and one thread hop per event, which five nodes on two
cores pay for in propagation delay."""
FLUSH_RETRY_DELAY = 1.0
"""Seconds between commit attempts while the state file cannot be written."""
FLUSH_BATCH = 5000
"""Pending writes that trigger a commit before :data:`FLUSH_INTERVAL` ran out."""
MAX_PENDING_WRITES = 50_000
"""Pending writes beyond which producers wait for the flusher (backpressure)."""


class StateStore:
    """Durable per-node state in ``state_dir/state.db``, written behind: writes
    are buffered and committed in batches by a background flusher.

    :param state_dir: directory of the state file (created if missing).
    :param flush_interval: seconds between batched commits (default
        :data:`FLUSH_INTERVAL`).
    :param flush_batch: pending writes that trigger an early commit (default
        :data:`FLUSH_BATCH`).
    """

    def __init__(self, state_dir: str | os.PathLike[str], *,
                 flush_interval: float = FLUSH_INTERVAL, flush_batch: int = FLUSH_BATCH):
        self.file = StateFile(state_dir)
        """The SQLite file itself."""
        self.dir = self.file.dir
        self.path = self.file.path
        self._flush_interval = flush_interval
        self._flush_batch = flush_batch
        self._desired: dict[str, DesiredRow] = {}
        self._applied: dict[str, AppliedRow] = {}
        self._failures: dict[str, FailureRecord | None] = {}
        self._meta: dict[str, str] = {}
        # The received revision and the change there, written at the next
        # commit (None: unchanged since the last one).
        self._received_revision: int | None = None
        self._received_event: Event | None = None
        self._batch = 1  # the number of the commit that takes the writes made now
        self.durable_batch = 0
        """Every write made while :meth:`put_desired` answered this number or a
        lower one is committed (0: only what was on disk at open)."""
        self.on_desired_committed: Callable[[], None] | None = None
        """Called (on the event loop) after a commit that wrote desired rows."""
        self._urgent = asyncio.Event()
        self._wake = asyncio.Event()
        # Whether _wake / _urgent were set since the flusher last cleared them:
        # an attribute read, where asking the events costs a call per write.
        self._woken = False
        self._commit_asked = False
        self._flushed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._error: BaseException | None = None
        self.commits = 0

    # --- open / close -------------------------------------------------------

    async def open(self) -> LoadedState:
        """Open (or create) the state file and load it; a corrupt or foreign
        file is moved aside and an empty state returned."""
        loaded = await asyncio.to_thread(self.file.open)
        self._task = asyncio.create_task(self._flush_loop(), name="state-flusher")
        return loaded

    async def close(self) -> None:
        """Commit everything pending and close the file."""
        if self._task is not None:
            self._closing = True
            self._wake.set()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        try:
            if self._pending():
                await asyncio.to_thread(self._commit_batch, self._take())
        except Exception as exc:
            log.error("node state: the last commit to %s failed (%s); the node will catch up "
                      "from its last durable revision", self.path, exc)
        finally:
            await asyncio.to_thread(self.file.close)

    # --- buffered writes ----------------------------------------------------

    def put_desired(self, key: str, revision: int, deleted: bool, stored: StoredResource,
                    live: bool = False) -> int:
        """Record the desired version of ``key``; the number of the commit that
        will carry it (durable once :attr:`durable_batch` reaches it).

        :param live: it came from the watch (not from a listing; default ``False``).
        """
        self._desired[key] = (revision, deleted, stored, live)
        if not self._woken:
            self._poke()
        return self._batch

    def delete_desired(self, key: str) -> None:
        self._desired[key] = None
        self._poke()

    def put_applied(self, key: str, revision: int, stored: StoredResource) -> None:
        self._applied[key] = (revision, stored)
        self._poke()

    def delete_applied(self, key: str) -> None:
        self._applied[key] = None
        self._poke()

    def put_failure(self, record: FailureRecord) -> None:
        self._failures[record.key] = FailureRecord(**record.__dict__)
        self._poke()

    def delete_failure(self, key: str) -> None:
        self._failures[key] = None
        self._poke()

    def request_commit(self) -> None:
        """A handler call waits for a commit: commit what is pending now."""
        if not self._commit_asked:
            self._commit_asked = True
            self._urgent.set()
        if not self._woken:
            self._poke()

    @property
    def failing(self) -> str | None:
        """The error of the last commit if it failed (``None`` while commits succeed)."""
        if self._error is None:
            return None
        return f"{type(self._error).__name__}: {self._error}"

    def set_received_revision(self, revision: int, event: Event | None = None) -> None:
        """Record the received revision and the change received there (``None``:
        not known, e.g. a listing's revision), whose change mark is recorded
        with it (worked out at commit time, off the event path)."""
        self._received_revision = revision
        self._received_event = event
        if not self._woken:
            self._poke()

    def set_cluster_id(self, cluster_id: str) -> None:
        self._meta["cluster_id"] = cluster_id
        self._poke()

    def set_rewound(self, summary: str | None) -> None:
        """Record a registry rewind in progress (``None``: the node converged after it)."""
        self._meta["rewound"] = summary or ""
        self._poke()

    def _pending(self) -> int:
        return (len(self._desired) + len(self._applied) + len(self._failures) + len(self._meta)
                + (self._received_revision is not None))

    def _poke(self) -> None:
        # The flusher lets writes gather for flush_interval after waking up.
        self._woken = True
        self._wake.set()

    @property
    def pending(self) -> int:
        """Writes not yet committed."""
        return self._pending()

    async def wait_writable(self) -> None:
        """Wait while more than :data:`MAX_PENDING_WRITES` writes are pending."""
        while self._pending() > MAX_PENDING_WRITES and self._task is not None:
            self._flushed.clear()
            self._wake.set()
            await self._flushed.wait()

    async def flush(self) -> None:
        """Commit everything written so far."""
        while self._pending() and self._task is not None and not self._task.done():
            self._flushed.clear()
            self._wake.set()
            await self._flushed.wait()
        if self._error is not None:
            raise self._error

    # --- flusher ------------------------------------------------------------

    def _take(self) -> Batch:
        if self._received_revision is not None:
            event = self._received_event
            self._meta["received_revision"] = str(self._received_revision)
            self._meta["received_mark"] = "" if event is None else event_mark(event)
            self._received_revision = self._received_event = None
        batch = (self._desired, self._applied, self._failures, self._meta)
        self._desired, self._applied, self._failures, self._meta = {}, {}, {}, {}
        # Writes made from now on go in the next commit (a failed commit's
        # writes are re-queued into it, so their lower number stays covered).
        self._batch += 1
        return batch

    async def _flush_loop(self) -> None:
        while True:
            await self._wake.wait()
            if (not self._closing and not self._urgent.is_set()
                    and self._pending() < self._flush_batch):
                # Let more writes gather so one transaction carries many of them;
                # a handler call waiting for a commit cuts the wait short.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._flush_interval):
                        await self._urgent.wait()
            self._wake.clear()
            self._urgent.clear()
            self._woken = self._commit_asked = False
            if self._pending():
                batch = self._take()
                try:
                    await asyncio.to_thread(self._commit_batch, batch)
                except Exception as exc:  # keep the node serving from memory
                    if self._error is None:
                        log.exception("node state: commit to %s failed; retrying every "
                                      "%.0fs", self.path, FLUSH_RETRY_DELAY)
                    self._error = exc
                    self._requeue(batch)
                    await asyncio.sleep(FLUSH_RETRY_DELAY)
                else:
                    if self._error is not None:
                        log.info("node state: commits to %s succeed again", self.path)
                    self._error = None
                    self._committed(batch[0])
            self._flushed.set()
            if self._closing:
                return
            if self._pending():
                self._wake.set()

    def _committed(self, desired: dict[str, DesiredRow]) -> None:
        # The flusher is the only committer: everything taken up to the last
        # _take() is on disk now.
        self.durable_batch = self._batch - 1
        if desired and self.on_desired_committed is not None:
            self.on_desired_committed()

    def _requeue(self, batch: Batch) -> None:
        # Newer writes made during the failed commit win over the re-queued ones.
        desired, applied, failures, meta = batch
        self._desired = desired | self._desired
        self._applied = applied | self._applied
        self._failures = failures | self._failures
        self._meta = meta | self._meta

    def _commit_batch(self, batch: Batch) -> None:
        """Write ``batch`` in one transaction (runs in a thread)."""
        self.file.commit(*batch)
        self.commits += 1
