"""Open a SQLite registry the moment a go-file appears; print its cluster id.

Usage: ``opener.py DB GO_FILE``

Prints ``ready`` once imports are done, spins until ``GO_FILE`` exists (so
several openers hit a new file within microseconds of each other), opens the
store, and prints ``cluster_id<TAB>revision``.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time

from schemacache.registry.sqlite import SqliteRegistry

GIVE_UP_AFTER = 60.0


async def open_store(db: str) -> None:
    reg = SqliteRegistry(db)
    try:
        print(f"{await reg.cluster_id()}\t{await reg.revision()}", flush=True)
    finally:
        await reg.close()


def main() -> None:
    db, go = sys.argv[1], sys.argv[2]
    print("ready", flush=True)
    deadline = time.monotonic() + GIVE_UP_AFTER
    while not os.path.exists(go):
        if time.monotonic() > deadline:
            sys.exit("no go-file")
    asyncio.run(open_store(db))


if __name__ == "__main__":
    main()
