"""A node gives the C heap's free pages back after bulk work (glibc only)."""

from __future__ import annotations

import os
import threading

import pytest

from schemacache import _gc


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(_gc._malloc_trim is None, reason="no glibc malloc_trim here")
def test_memory_freed_on_a_reader_thread_goes_back_to_the_system() -> None:
    held: list[list[str]] = []

    def decode_a_lot() -> None:
        # Strings over pymalloc's 512-byte limit come from the thread's glibc arena.
        # One in twenty stays alive, so the freed ones cannot be trimmed off the top.
        chunk = [("x" * 1500) + str(i) for i in range(40_000)]
        held.append(chunk[::20])

    worker = threading.Thread(target=decode_a_lot)
    worker.start()
    worker.join()
    before = _rss()
    _gc.give_back_free_memory()
    after = _rss()
    assert held and before - after > 10 * 2**20, (before, after)
