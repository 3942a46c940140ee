"""What a secured etcd costs a registry call (``python bench/etcd_tls.py``).

Two real etcd members started side by side: one plaintext, one with TLS only,
``--client-cert-auth``, authentication on and JWT auth tokens living
``--token-ttl`` seconds.  The same registry calls (a ``put`` then a ``get`` of
the key it wrote, ``--calls`` times) run through ``etcd://`` against the first
(the baseline) and through ``etcds://`` as an RBAC user whose role covers only
its prefix against the second, alternating, in the same run.  Reported: p50 and
p99 of one put+get round trip on each, their ratio, and p50 of the first
round trip after the token expired (it authenticates again) against the others.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
ROUNDS = 3
"""Alternating rounds per endpoint (the medians of the rounds are reported)."""


async def round_trips(url: str, calls: int) -> list[float]:
    """Seconds of each put+get on a fresh registry at ``url``."""
    from schemacache import Resource, open_registry

    registry = open_registry(url)
    opts = {"shard_num": 1, "segment_interval": {"unit": "DAY", "num": 1},
            "ttl": {"unit": "DAY", "num": 7}}
    try:
        await registry.put(Resource.parse({"kind": "group", "metadata": {"name": "warm"},
                                           "spec": {"catalog": "MEASURE",
                                                    "resource_opts": opts}}))
        took = []
        for i in range(calls):
            group = Resource.parse({"kind": "group", "metadata": {"name": f"g{i}"},
                                    "spec": {"catalog": "MEASURE", "resource_opts": opts}})
            start = time.perf_counter()
            await registry.put(group)
            await registry.get(group.key)
            took.append(time.perf_counter() - start)
        return took
    finally:
        await registry.close()


async def after_expiry(url: str, samples: int, ttl: float) -> list[float]:
    """Seconds of the first put+get after the registry's token expired (those that
    re-authenticated; etcd checks a JWT's expiry in whole seconds)."""
    from schemacache import Resource, open_registry

    registry = open_registry(url)
    opts = {"shard_num": 1, "segment_interval": {"unit": "DAY", "num": 1},
            "ttl": {"unit": "DAY", "num": 7}}
    took = []
    try:
        for i in range(samples):
            group = Resource.parse({"kind": "group", "metadata": {"name": f"e{i}"},
                                    "spec": {"catalog": "MEASURE", "resource_opts": opts}})
            await registry.put(group)
            await asyncio.sleep(ttl + 1)  # the token dies of old age, by design
            renewals = registry._client.renewals  # type: ignore[attr-defined]
            start = time.perf_counter()
            await registry.put(group)
            await registry.get(group.key)
            elapsed = time.perf_counter() - start
            if registry._client.renewals > renewals:  # type: ignore[attr-defined]
                took.append(elapsed)  # only round trips that did re-authenticate
        return took
    finally:
        await registry.close()


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=400, help="put+get per round (400)")
    parser.add_argument("--token-ttl", type=int, default=2, help="JWT lifetime, s (2)")
    parser.add_argument("--expiries", type=int, default=5,
                        help="round trips measured right after a token expired (5)")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "tests"))
    sys.path.insert(0, str(REPO / "src"))
    from etcd_server import EtcdCluster, EtcdTls, jwt_token_args
    from pki import Pki

    with tempfile.TemporaryDirectory() as tmp:
        pki: Any = Pki(Path(tmp))
        server, client = pki.issue("server", ips=["127.0.0.1"]), pki.issue("client")
        keys = pki.jwt_keys()
        tls = EtcdTls(ca=pki.ca, cert=server.cert, key=server.key, client_cert=client.cert,
                      client_key=client.key, client_cert_auth=True)
        with EtcdCluster() as plain, EtcdCluster(
                tls=tls, extra_args=jwt_token_args(keys.cert, keys.key, args.token_ttl)) as sec:
            sec.enable_auth(uuid.uuid4().hex)
            base: list[list[float]] = []
            secured: list[list[float]] = []
            for _ in range(ROUNDS):
                base.append(asyncio.run(round_trips(
                    plain.url(f"b{uuid.uuid4().hex[:8]}"), args.calls)))
                secured.append(asyncio.run(round_trips(
                    sec.rbac_url(f"s{uuid.uuid4().hex[:8]}"), args.calls)))
            expired = asyncio.run(after_expiry(sec.rbac_url(f"e{uuid.uuid4().hex[:8]}"),
                                               args.expiries, args.token_ttl))

    def ms(rounds: list[list[float]], q: float) -> float:
        return statistics.median(percentile(r, q) for r in rounds) * 1e3

    print(f"{ROUNDS} rounds of {args.calls} put+get round trips each, alternating:")
    print(f"  etcd://  (baseline)                  p50 {ms(base, .5):6.2f} ms  "
          f"p99 {ms(base, .99):6.2f} ms")
    print(f"  etcds:// (TLS, client cert, RBAC)    p50 {ms(secured, .5):6.2f} ms  "
          f"p99 {ms(secured, .99):6.2f} ms")
    print(f"  ratio secured/baseline               p50 {ms(secured, .5) / ms(base, .5):6.2f}"
          f"     p99 {ms(secured, .99) / ms(base, .99):6.2f}")
    print(f"  first round trip after a token expired (re-authenticates), "
          f"{len(expired)} of {args.expiries} samples: "
          f"p50 {statistics.median(expired) * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
