"""Write resources into a SQLite registry, one write per revision.

Usage: ``writer.py DB N [--start I] [--mixed] [--interval S] [--times FILE]``

Creates the group (if absent), then makes ``N`` writes: index rules
``r<start+i>`` (with ``--mixed`` every tenth write updates a live rule and
every tenth deletes the oldest one).  With ``--times``, each committed write
appends ``revision<TAB>key<TAB>time_ns`` to FILE (``time_ns`` taken when the
put returned).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import TextIO

from common import group, index_rule

from schemacache import ConflictError
from schemacache.registry.sqlite import SqliteRegistry


async def write(args: argparse.Namespace, times: TextIO | None) -> None:
    reg = SqliteRegistry(args.db)
    try:
        try:
            rev = await reg.put(group(), expected_revision=0)
            if times:
                times.write(f"{rev}\tgroup/g\t{time.time_ns()}\n")
        except ConflictError:
            pass
        live: list[str] = []
        for i in range(args.n):
            if args.mixed and i % 10 == 9 and live:
                name = live[-1]
                key = f"index_rule/g/{name}"
                rev = await reg.put(index_rule(name, tag=f"t{i}"))
            elif args.mixed and i % 10 == 4 and len(live) > 5:
                name = live.pop(0)
                key = f"index_rule/g/{name}"
                rev = await reg.delete(key)
            else:
                name = f"r{args.start + i:06d}"
                key = f"index_rule/g/{name}"
                rev = await reg.put(index_rule(name), expected_revision=0)
                live.append(name)
            if times:
                times.write(f"{rev}\t{key}\t{time.time_ns()}\n")
            if args.interval:
                await asyncio.sleep(args.interval)
    finally:
        await reg.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("db")
    parser.add_argument("n", type=int)
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--mixed", action="store_true")
    parser.add_argument("--interval", type=float, default=0.0)
    parser.add_argument("--times")
    args = parser.parse_args()
    if not args.times:
        asyncio.run(write(args, None))
        return
    # Line-buffered: every recorded revision is on disk before the next write.
    with open(args.times, "a", buffering=1) as times:
        asyncio.run(write(args, times))


if __name__ == "__main__":
    main()
