"""Pausing the cyclic garbage collector around bulk decoding.

Decoding a large listing or state file allocates millions of small
containers and creates no reference cycles; with the collector on, its
repeated passes over the growing heap cost several times the decoding itself
(100,000 resources: ~5.7 s instead of ~1.5 s).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import gc
import threading
from collections.abc import Callable, Iterator

_lock = threading.Lock()
_pausers = 0
_was_enabled = False


@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Keep the cyclic garbage collector off inside the block.

    The collector is process-wide: nested and concurrent users (any thread)
    share one pause, and the last one out restores the previous state.
    """
    global _pausers, _was_enabled
    with _lock:
        if _pausers == 0:
            _was_enabled = gc.isenabled()
            gc.disable()
        _pausers += 1
    try:
        yield
    finally:
        with _lock:
            _pausers -= 1
            if _pausers == 0 and _was_enabled:
                gc.enable()


def _find_malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError, TypeError):
        return None  # not glibc (musl, macOS): nothing to give back this way
    return trim


_malloc_trim = _find_malloc_trim()

COLLECT_AFTER_THAWING = 100_000
"""How many more objects than the last collection left the heap must hold
when a node stops for the next :func:`collect_thawed` to collect (a full
collection walks the whole heap: worth it for a stopped node's large cache,
not for every small node a test suite stops)."""

_thawed = False
"""Whether a :func:`thaw` since the last :func:`collect_thawed` found the
heap :data:`COLLECT_AFTER_THAWING` objects larger."""
_heap_after_collection = 0
"""Objects the collector tracked after the last collection made here."""


def give_back_free_memory() -> None:
    """Return the C heap's free pages to the operating system (glibc's
    ``malloc_trim``; nothing elsewhere).

    A sync decodes the schema on reader threads; glibc keeps the memory those
    threads freed in their arenas, where it counted as the node's resident
    memory for good (about 75 bytes per cached resource at 10,000 measures).
    """
    if _malloc_trim is not None:
        _malloc_trim(0)


def freeze_long_lived() -> None:
    """Move every object alive now out of the collector's sight (``gc.freeze``).

    A node holds its whole schema (100,000 resources: millions of small
    objects) for its lifetime.  Left in the collected generations, each full
    collection walks all of them again, which doubled restart time in
    measurements; frozen, they are still freed by reference counting when
    replaced, they are only no longer scanned for cycles (they have none).
    """
    collect_thawed()  # rather than freeze a stopped node's objects again for good
    gc.freeze()
    give_back_free_memory()


def collect_thawed() -> None:
    """Collect once if a stopped node gave a large cache back (see :func:`thaw`)
    since the last collection made here: a node starting calls it before it
    loads anything, so that a stopped node dropped meanwhile is freed while
    the heap is small."""
    global _thawed, _heap_after_collection
    if _thawed:
        _thawed = False
        gc.collect()
        _heap_after_collection = len(gc.get_objects())


def thaw() -> None:
    """Give every frozen object back to the collector (``gc.unfreeze``).

    Frozen objects are never collected, and a node's parts reference each
    other: a stopped node dropped by its owner would keep its whole cache in
    memory for good.  Process-wide, like the freeze: the caches of nodes still
    running in this process are scanned again until their next freeze, which
    collects first once the heap grew enough since the last collection (see
    :data:`COLLECT_AFTER_THAWING`).
    """
    global _thawed
    gc.unfreeze()
    # Frozen or not: a node stopped before its last catch-up was frozen
    # leaves that catch-up's objects in the generations.
    if len(gc.get_objects()) - _heap_after_collection >= COLLECT_AFTER_THAWING:
        _thawed = True


BURST_MAX_SECONDS = 10.0
"""Longest time a :class:`BurstPause` keeps the collector off."""


class BurstPause:
    """Keeps the collector off over a burst of work (a node catching up with a
    backlog of events), then collects once and freezes what survived.

    During a catch-up nearly every object allocated (desired and applied
    state) stays alive; the collector's passes over the growing young heap
    cost about a quarter of the node's time.  One full collection at the end
    walks each object once, and freezing the survivors keeps later passes
    from walking them again (nothing collectable is frozen: the collection
    runs first).  The owner ends the pause within ``max_seconds`` so that
    garbage cycles made meanwhile cannot pile up for long.

    :param max_seconds: longest pause the owner allows (default
        :data:`BURST_MAX_SECONDS`).
    """

    def __init__(self, max_seconds: float = BURST_MAX_SECONDS) -> None:
        self.max_seconds = max_seconds
        self._pause: contextlib.ExitStack | None = None

    @property
    def active(self) -> bool:
        return self._pause is not None

    def start(self) -> None:
        """Turn the collector off (nothing if already paused by this object)."""
        if self._pause is None:
            self._pause = contextlib.ExitStack()
            self._pause.enter_context(gc_paused())

    def end(self, *, settle: bool = True) -> None:
        """Give the collector back; with ``settle`` (default) collect at once and
        freeze the survivors (see :func:`freeze_long_lived`)."""
        pause, self._pause = self._pause, None
        if pause is None:
            return
        pause.close()
        if settle and gc.isenabled():
            gc.collect()
            freeze_long_lived()
