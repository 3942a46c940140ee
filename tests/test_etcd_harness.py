"""The etcd test harness: a killed single member keeps every write it answered.

etcd 3.5 answers a write on a single-member cluster while it may still be
writing the entry to its log (etcd-io/etcd#14370, fixed in 3.5.5). A test that
SIGKILLs the member right after a write can then see the registry come back at
an older revision, which the node rightly treats as a rewound registry, while
the test expected an outage that loses nothing. ``EtcdCluster.kill`` settles a
single member first; this test proves that it has to and that it does.

The window is a few microseconds on an idle machine. ``strace`` widens it:
every write etcd makes to its log files is delayed by :data:`LOG_WRITE_DELAY`.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from etcd_server import EtcdCluster
from factories import group
from schemacache import open_registry

LOG_WRITE_DELAY_US = 100_000
"""Microseconds strace holds each write to etcd's log (0.1 s)."""
WRITES = 3
"""Writes answered before each kill."""
ROUNDS = 3
"""Kills without settling, at most, until one loses a write."""
ATTACH_TIMEOUT = 10.0

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def etcd() -> Iterator[EtcdCluster]:
    if shutil.which("strace") is None:
        pytest.skip("strace is not installed (scripts/install-strace.sh installs it)")
    with EtcdCluster() as cluster:
        yield cluster


def _slow_log_writes(etcd: EtcdCluster, log: Path) -> subprocess.Popen[bytes]:
    """Attach strace to the member, delaying each write to its log; wait until attached."""
    wal_files = sorted((etcd.data_dir(0) / "member" / "wal").glob("*.wal"))
    paths = [arg for f in wal_files for arg in ("-P", str(f))]
    writes = "write,writev,pwrite64"
    with open(log, "wb") as err:
        tracer = subprocess.Popen(
            ["strace", "-f", "-o", "/dev/null", *paths, "-e", f"trace={writes}",
             "-e", f"inject={writes}:delay_enter={LOG_WRITE_DELAY_US}", "-p", str(etcd.pid(0))],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
    deadline = time.monotonic() + ATTACH_TIMEOUT
    while b"attached" not in log.read_bytes():
        if tracer.poll() is not None:
            pytest.skip(f"strace cannot attach here: {log.read_text().strip()}")
        if time.monotonic() > deadline:
            tracer.kill()  # leave no tracer behind
            tracer.wait()
            raise AssertionError("strace did not attach in time")
        time.sleep(0.02)
    return tracer


async def _kept_after(kill: Callable[[int], None], etcd: EtcdCluster, prefix: str,
                      log: Path) -> int:
    """Write :data:`WRITES` keys under a slowed log, ``kill`` the member, restart it;
    the number of keys it kept."""
    tracer = _slow_log_writes(etcd, log)
    reg = open_registry(etcd.url(prefix))
    try:
        for i in range(WRITES):
            await reg.put(group(f"g{i}"))
        kill(0)
    finally:
        tracer.kill()
        tracer.wait()
        await reg.close()
    etcd.restart(0)
    reg = open_registry(etcd.url(prefix))
    try:
        items, _ = await reg.list()
    finally:
        await reg.close()
    return len(items)


async def test_a_killed_single_member_keeps_every_write_it_answered(
        etcd: EtcdCluster, tmp_path: Path) -> None:
    log = tmp_path / "strace.log"
    unsettled: list[int] = []
    for r in range(ROUNDS):
        unsettled.append(await _kept_after(etcd.sigkill, etcd, f"raw{r}", log))
        if unsettled[-1] < WRITES:
            break
    assert min(unsettled) < WRITES, (
        f"a SIGKILL right after the answers kept every write ({unsettled}): the log "
        "writes were not slowed, so this test shows nothing")
    assert await _kept_after(etcd.kill, etcd, "settled", log) == WRITES
