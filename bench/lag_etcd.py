"""Lag a converged node reports on a shared etcd (``python bench/lag_etcd.py``).

A real etcd member; a node with the schema applied; then another application
writes ``--writes`` keys in the same etcd while ``--visitors`` nodes register
and leave.  Every 10 ms the node's lag is sampled as the node reports it
(``status()["lag"]``) and, as baselines measured in the same run, as the
former formula gave it (the registry's probed revision minus the applied
revision), with and without the progress marks moving the applied revision.
Also measured: how long after the last foreign write the node's
``applied_revision`` reaches the cluster's revision through etcd's progress
notifications (``--progress-interval``, etcd's
``--experimental-watch-progress-notify-interval``).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SAMPLE_INTERVAL = 0.01
"""Seconds between two lag samples."""
CATCH_UP_TIMEOUT = 60.0
"""Seconds the node gets to reach the cluster's revision after the writes."""


async def measure(url: str, other_url: str, writes: int, visitors: int) -> dict[str, float]:
    from schemacache import Node, Resource, open_registry

    def group(name: str) -> Resource:
        opts = {"shard_num": 1, "segment_interval": {"unit": "DAY", "num": 1},
                "ttl": {"unit": "DAY", "num": 7}}
        return Resource.parse({"kind": "group", "metadata": {"name": name},
                               "spec": {"catalog": "MEASURE", "resource_opts": opts}})

    registry, other = open_registry(url), open_registry(other_url)
    await registry.put(group("g"))
    with tempfile.TemporaryDirectory() as state:
        async with Node(open_registry(url), name="bench", state_dir=state,
                        admin_url="http://127.0.0.1:9/", monitor_interval=0.05) as node:
            await node.ready(30)
            reported: list[int] = []
            probed: list[int] = []
            unmarked: list[int] = []
            # No schema key changes during the run: without progress marks the
            # applied revision would stay here.
            schema_applied = node.applied_revision
            done = asyncio.Event()

            async def sample() -> None:
                while not done.is_set():
                    reported.append(int(node.status()["lag"]))
                    revision = await registry.revision()
                    probed.append(max(0, revision - node.applied_revision))
                    unmarked.append(max(0, revision - schema_applied))
                    await asyncio.sleep(SAMPLE_INTERVAL)

            sampler = asyncio.create_task(sample())
            every = max(1, writes // max(1, visitors))
            for i in range(writes):
                await other.put(group(f"x{i}"))
                if i % every == 0:
                    lease = await registry.register_node(f"visitor-{i}", "http://127.0.0.1:9/")
                    await lease.revoke()
            last_write = time.perf_counter()
            head = await registry.revision()
            while node.applied_revision < head:
                if time.perf_counter() - last_write > CATCH_UP_TIMEOUT:
                    raise SystemExit(f"applied revision stuck at {node.applied_revision} < {head}")
                await asyncio.sleep(0.005)
            catch_up = time.perf_counter() - last_write
            done.set()
            await sampler
        await node.registry.close()
    await registry.close()
    await other.close()
    return {"samples": len(reported), "max_lag_reported": max(reported),
            "max_lag_probe_baseline": max(probed), "max_lag_unmarked_baseline": max(unmarked),
            "catch_up_seconds": catch_up}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=1100, help="foreign writes (1100)")
    parser.add_argument("--visitors", type=int, default=20, help="nodes joining/leaving (20)")
    parser.add_argument("--progress-interval", default="1s",
                        help="etcd's progress notification interval (1s)")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "tests"))
    sys.path.insert(0, str(REPO / "src"))
    from etcd_server import EtcdCluster

    flag = f"--experimental-watch-progress-notify-interval={args.progress_interval}"
    with EtcdCluster(extra_args=(flag,)) as etcd:
        tag = uuid.uuid4().hex[:8]
        result = asyncio.run(measure(etcd.url(f"lag{tag}"), etcd.url(f"other-app{tag}"),
                                     args.writes, args.visitors))
    print(f"{args.writes} foreign writes, {args.visitors} nodes joining and leaving, "
          f"progress interval {args.progress_interval}, {result['samples']} samples:")
    print(f"  max lag reported by the node:           {result['max_lag_reported']}")
    print(f"  baseline, probed revision - applied:     {result['max_lag_probe_baseline']}")
    print(f"  baseline, same without progress marks:  {result['max_lag_unmarked_baseline']}")
    print(f"  applied_revision reached the cluster's revision "
          f"{result['catch_up_seconds']:.2f} s after the last write")


if __name__ == "__main__":
    main()
