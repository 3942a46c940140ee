"""Watch a SQLite registry and record every event received.

Usage: ``watcher.py DB START COUNT OUT [--timeout S]``

Opens the registry, creates ``OUT.ready`` once connected, then watches from
revision ``START`` and appends ``revision<TAB>key<TAB>type<TAB>time_ns`` to
OUT for each event (``time_ns`` taken when the event was received).  Exits 0
after ``COUNT`` events, 2 on timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from schemacache.registry.sqlite import SqliteRegistry

DEFAULT_TIMEOUT = 120.0


async def record(
    reg: SqliteRegistry, args: argparse.Namespace, out: TextIO, ready: Callable[[], None]
) -> None:
    await reg.revision()  # opens the file (and creates the store if needed)
    ready()
    received = 0
    async for event in reg.watch("", start_revision=args.start):
        out.write(f"{event.revision}\t{event.key}\t{event.type}\t{time.time_ns()}\n")
        received += 1
        if received >= args.count:
            return


async def run(args: argparse.Namespace, out: TextIO) -> int:
    reg = SqliteRegistry(args.db)
    try:
        await asyncio.wait_for(
            record(reg, args, out, Path(args.out + ".ready").touch), args.timeout
        )
    except TimeoutError:
        return 2
    finally:
        await reg.close()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("db")
    parser.add_argument("start", type=int)
    parser.add_argument("count", type=int)
    parser.add_argument("out")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT)
    args = parser.parse_args()
    # Line-buffered: the test reads what arrived even if this process is killed.
    with open(args.out, "a", buffering=1) as out:
        return asyncio.run(run(args, out))


if __name__ == "__main__":
    sys.exit(main())
