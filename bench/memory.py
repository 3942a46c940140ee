"""Memory a node spends per cached resource (``python bench/memory.py``).

Writes ``--resources`` measures (about 300 bytes of JSON each) to a fresh
SQLite registry, then, in a fresh process, starts one node without a handler
on it and reports the growth of the process' resident set from just before
the node starts to once it is ready, divided by the number of resources.  One
process per run, so nothing of the writing phase is counted.  Target: 1.5 KB
per resource.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

DEFAULT_RESOURCES = 10_000
TARGET_BYTES = 1536


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def _seed(db: Path, count: int) -> None:
    from bench.workload import seed
    from schemacache import open_registry

    registry = open_registry(f"sqlite:///{db}")
    try:
        await seed(registry, count)
    finally:
        await registry.close()


async def _measure(db: Path, state_dir: Path, count: int) -> dict[str, float]:
    from schemacache import open_registry
    from schemacache.node import Node

    registry = open_registry(f"sqlite:///{db}")
    gc.collect()
    before = _rss()
    node = Node(registry, name="mem", state_dir=state_dir, repair_interval=0)
    await node.start()
    try:
        await node.ready(timeout=300)
        gc.collect()
        after = _rss()
        size = node.cache.size
    finally:
        await node.stop()
        await registry.close()
    return {"resources": size, "rss_growth_bytes": after - before,
            "bytes_per_resource": (after - before) / max(1, count)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--resources", type=int, default=DEFAULT_RESOURCES)
    p.add_argument("--child", nargs=2, metavar=("DB", "STATE_DIR"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        result = asyncio.run(_measure(Path(args.child[0]), Path(args.child[1]), args.resources))
        print(json.dumps(result))
        return 0
    with tempfile.TemporaryDirectory(prefix="schemacache-mem-") as tmp:
        db = Path(tmp) / "registry.db"
        asyncio.run(_seed(db, args.resources))
        out = subprocess.run(
            [sys.executable, __file__, "--resources", str(args.resources), "--child", str(db),
             str(Path(tmp) / "node")], check=True, capture_output=True, text=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    per = result["bytes_per_resource"]
    verdict = "meets" if per <= TARGET_BYTES else "misses"
    print(f"{result['resources']} resources cached: {per:,.0f} bytes RSS per resource "
          f"({verdict} the {TARGET_BYTES} B target)")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
