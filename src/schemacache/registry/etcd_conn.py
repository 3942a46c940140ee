"""How the etcd registry reaches etcd: URL, gRPC channel, TLS, authentication.

``etcd://[USER@]h:p[,h:p…]/prefix`` talks plaintext gRPC;
``etcds://[USER@]h:p[,h:p…]/prefix?ca=PATH&cert=PATH&key=PATH`` talks TLS, ``ca``
verifying the members' certificates (default: the system's roots) and
``cert``/``key`` presenting a client certificate (for ``--client-cert-auth``
clusters).  A user's password never sits in the URL: it comes from
``?password_file=PATH`` or the environment variable :data:`PASSWORD_ENV`.
:attr:`EtcdAccess.url` shows the user but never the password.

Every endpoint is one gRPC target (``ipv4:h1:p1,h2:p2,…``), so the channel fails
over between members; TLS verifies each member's certificate against one name,
``?server_name=`` or the first endpoint's host.  With a user, the connection
authenticates once and sends the token as ``token`` metadata on every call; etcd
tokens expire (simple tokens after ``--auth-token-ttl`` idle seconds, JWTs after
their TTL), and :meth:`EtcdConnection.renew_token` gets a new one when a call
says its token is no longer valid.  Certificate files and the password file
are read again on every (re)connection, so rotating them needs no restart.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import grpc
from aetcd import rpc

from ..errors import (
    RegistryAuthError,
    RegistryPermissionError,
    RegistryTlsError,
    RegistryUnavailableError,
    SchemaCacheError,
    ValidationError,
)
from .etcd_url import DEFAULT_PORT as DEFAULT_PORT
from .etcd_url import DEFAULT_PREFIX as DEFAULT_PREFIX
from .etcd_url import PASSWORD_ENV as PASSWORD_ENV
from .etcd_url import EtcdAccess as EtcdAccess
from .etcd_url import grpc_target as grpc_target
from .etcd_url import parse_etcd_url as parse_etcd_url
from .etcd_url import split_endpoint as split_endpoint

log = logging.getLogger(__name__)

PROBE_TIMEOUT = 2.0
"""Seconds the call that finds out why a member cannot be reached may take."""

# What etcd answers when a call's token is missing, expired or from before the
# last change of the auth store: authenticate again and repeat the call.
_STALE_TOKEN_MARKERS = ("invalid auth token", "user name is empty",
                        "revision of auth store is old")


def _read_pem(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ValidationError(f"cannot read the etcd {what} file {path}: "
                              f"{exc.strerror or exc}", field="registry") from None


class EtcdConnection:
    """One gRPC channel to an etcd cluster, with the stubs the registry uses and
    the auth token sent with every call.

    :param access: where etcd is and how to get in.
    :param timeout: seconds an authentication may take.
    :param options: gRPC channel options.
    """

    def __init__(self, access: EtcdAccess, timeout: float, options: dict[str, Any]) -> None:
        self.access = access
        self._timeout = timeout
        self._options = dict(options)
        self.channel: Any = None
        self.kvstub: Any = None
        self.leasestub: Any = None
        self.watchstub: Any = None
        self._authstub: Any = None
        self.metadata: tuple[tuple[str, str], ...] = ()
        self.renewals = 0
        """How many times an expired or rejected token was replaced."""
        self._auth_lock = asyncio.Lock()

    async def open(self) -> None:
        """Build the channel and, with a user, authenticate."""
        try:
            target = await grpc_target(self.access.endpoints)
        except OSError as exc:  # a member's name does not resolve (yet)
            raise RegistryUnavailableError(f"etcd {self.access.url}: {exc}") from exc
        if self.access.tls:
            self.channel = grpc.aio.secure_channel(target, self._credentials(),
                                                   options=self._tls_options())
        else:
            self.channel = grpc.aio.insecure_channel(target, options=list(self._options.items()))
        self.kvstub = rpc.KVStub(self.channel)
        self.leasestub = rpc.LeaseStub(self.channel)
        self.watchstub = rpc.WatchStub(self.channel)
        self._authstub = rpc.AuthStub(self.channel)
        try:
            await self._authenticate()
        except BaseException:
            await self.close()
            raise

    def _credentials(self) -> grpc.ChannelCredentials:
        a = self.access
        root = _read_pem(a.ca, "CA certificate (ca=)") if a.ca else None
        key = _read_pem(a.key, "client key (key=)") if a.key else None
        chain = _read_pem(a.cert, "client certificate (cert=)") if a.cert else None
        return grpc.ssl_channel_credentials(root, key, chain)

    def _tls_options(self) -> list[tuple[str, Any]]:
        # With several members in one target there is no single host name for
        # gRPC to check; every member's certificate must carry this one.
        name = self.access.server_name or self.access.endpoints[0][0]
        return [*self._options.items(), ("grpc.ssl_target_name_override", name)]

    async def _authenticate(self) -> None:
        user = self.access.user
        if user is None:
            return
        request = rpc.AuthenticateRequest(name=user, password=self.access.read_password() or "")
        try:
            reply = await self._authstub.Authenticate(request, timeout=self._timeout,
                                                      wait_for_ready=True)
        except grpc.aio.AioRpcError as exc:
            details = exc.details() or ""
            if "authentication is not enabled" in details:
                log.warning("etcd %s has authentication off; connecting without a token",
                            self.access.url)
                self.metadata = ()
                return
            if "authentication failed" in details:
                raise RegistryAuthError(
                    f"etcd {self.access.url}: authentication failed for user {user!r}: "
                    "wrong password or unknown user") from None
            raise await self.explain(exc) from None
        self.metadata = (("token", reply.token),)

    def token_rejected(self, exc: grpc.aio.AioRpcError | str) -> bool:
        """Whether an error says the call's token (or its absence) is the problem."""
        details = exc if isinstance(exc, str) else exc.details() or ""
        return self.access.user is not None and any(m in details for m in _STALE_TOKEN_MARKERS)

    async def renew_token(self, used: tuple[tuple[str, str], ...]) -> None:
        """Authenticate again, unless another call already did since ``used`` was sent.

        :param used: the metadata the rejected call carried.
        """
        async with self._auth_lock:
            if self.metadata == used:
                await self._authenticate()
                self.renewals += 1
                log.debug("etcd %s: auth token renewed", self.access.url)

    async def explain(self, exc: grpc.aio.AioRpcError) -> SchemaCacheError:
        """The schemacache error for a failed call, naming the cause in words.

        A call that waited for a connection only learns "deadline exceeded";
        a call that does not wait learns why the channel cannot connect (a
        TLS handshake failure, a refused connection), so one is made to ask.
        """
        code, details = exc.code(), exc.details() or ""
        url = self.access.url
        if code == grpc.StatusCode.PERMISSION_DENIED:
            return self.permission_error(details)
        if code in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE):
            if "failed to connect" not in details:
                details = await self._probe() or details
            name = self.access.server_name or self.access.endpoints[0][0]
            text = describe_connect_failure(details, name)
            error = RegistryTlsError if text.startswith("TLS") else RegistryUnavailableError
            return error(f"etcd {url}: {text}")
        return SchemaCacheError(f"etcd {url}: {code.name}: {details}")

    def permission_error(self, details: str, operation: str = "") -> RegistryPermissionError:
        """The error for an operation etcd's RBAC refused, naming what is missing.

        :param details: etcd's message.
        :param operation: what was attempted (default: not said).
        """
        who = f"user {self.access.user!r}" if self.access.user else (
            "the client certificate's user" if self.access.cert else "an anonymous client")
        what = f" to {operation}" if operation else ""
        return RegistryPermissionError(
            f"etcd {self.access.url}: permission denied{what}: {who} needs a role with "
            f"readwrite on /{self.access.prefix}/ (etcd: {details.split('desc = ')[-1]})")

    async def _probe(self) -> str | None:
        """Why the channel cannot connect, from a call that does not wait for it."""
        if self.channel is None:
            return None
        try:
            await self.kvstub.Range(rpc.RangeRequest(key=b"\0", count_only=True),
                                    timeout=PROBE_TIMEOUT, metadata=self.metadata)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNAVAILABLE:
                return str(exc.details())
        except Exception:  # the probe is only a hint
            return None
        return None

    async def close(self) -> None:
        channel, self.channel = self.channel, None
        if channel is not None:
            await channel.close()


# Substrings of gRPC's connection errors, and what they mean to a user.
_CONNECT_FAILURES = (
    ("Hostname Verification", "TLS: the server's certificate does not name {name} "
                              "(set ?server_name= to a name it carries)"),
    ("certificate has expired", "TLS: the server's certificate has expired"),
    ("CERTIFICATE_EXPIRED", "TLS: the server rejected the client certificate: it has expired"),
    ("BAD_CERTIFICATE", "TLS: the server rejected the client certificate (missing, or not "
                        "signed by a CA the server trusts: check cert=/key=)"),
    ("UNKNOWN_CA", "TLS: the server rejected the client certificate (not signed by a CA the "
                   "server trusts)"),
    ("CERTIFICATE_VERIFY_FAILED", "TLS: the server's certificate is not trusted by ca= "
                                  "({reason})"),
    ("certificate signature failure", "TLS: the server's certificate is not signed by the "
                                      "CA given as ca="),
    ("Handshake read failed", "TLS handshake failed: the server closed the connection "
                              "(a plaintext port? use etcd://)"),
    ("WRONG_VERSION_NUMBER", "TLS handshake failed: the server does not speak TLS "
                             "(a plaintext port? use etcd://)"),
    ("Socket closed", "the server closed the connection during set-up (a TLS port? "
                      "use etcds://)"),
    ("Connection refused", "connection refused (is etcd running there?)"),
)


def describe_connect_failure(details: str, name: str = "") -> str:
    """One line naming why a channel could not connect, from gRPC's error text."""
    for marker, meaning in _CONNECT_FAILURES:
        if marker in details:
            reason = details.rsplit(":", 2)[-2].strip() if details.count(":") >= 2 else details
            return meaning.format(name=name or "the host in the URL", reason=reason)
    return f"unavailable ({details})"
