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
import ipaddress
import logging
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote

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

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "schemacache"
"""Key prefix used when the URL names none."""
DEFAULT_PORT = 2379
"""Client port assumed for an endpoint given without one."""
PASSWORD_ENV = "SCHEMACACHE_ETCD_PASSWORD"
"""Environment variable holding the etcd user's password."""
PROBE_TIMEOUT = 2.0
"""Seconds the call that finds out why a member cannot be reached may take."""

_URL_OPTIONS = ("ca", "cert", "key", "password_file", "server_name")
_TLS_OPTIONS = ("ca", "cert", "key", "server_name")
# What etcd answers when a call's token is missing, expired or from before the
# last change of the auth store: authenticate again and repeat the call.
_STALE_TOKEN_MARKERS = ("invalid auth token", "user name is empty",
                        "revision of auth store is old")


@dataclass(frozen=True)
class EtcdAccess:
    """Where an etcd registry lives and how to get in.

    :param endpoints: ``(host, port)`` of every member.
    :param prefix: key prefix of the registry (default :data:`DEFAULT_PREFIX`).
    :param tls: talk TLS (``etcds://``).
    :param ca: CA certificate file verifying the members (default: system roots).
    :param cert: client certificate file (with ``key``).
    :param key: the client certificate's private key file.
    :param server_name: name the members' certificates must carry (default: the
        first endpoint's host).
    :param user: etcd user to authenticate as (default: none).
    :param password: the user's password (never shown).
    :param password_file: file the password is read from on each authentication.
    """

    endpoints: tuple[tuple[str, int], ...]
    prefix: str = DEFAULT_PREFIX
    tls: bool = False
    ca: str | None = None
    cert: str | None = None
    key: str | None = None
    server_name: str | None = None
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    password_file: str | None = None

    @property
    def url(self) -> str:
        """The registry URL without secrets, for logs, status and errors."""
        scheme = "etcds" if self.tls else "etcd"
        who = f"{self.user}@" if self.user else ""
        hosts = ",".join(f"[{h}]:{p}" if ":" in h else f"{h}:{p}" for h, p in self.endpoints)
        return f"{scheme}://{who}{hosts}/{self.prefix}"

    def read_password(self) -> str | None:
        """The password: the file's first line, else :attr:`password`."""
        if self.password_file is None:
            return self.password
        try:
            return Path(self.password_file).read_text().splitlines()[0].strip()
        except IndexError:
            raise ValidationError(f"etcd password file {self.password_file} is empty",
                                  field="registry") from None
        except OSError as exc:
            raise ValidationError(f"cannot read etcd password file {self.password_file}: "
                                  f"{exc.strerror or exc}", field="registry") from None


def parse_etcd_url(url: str, environ: dict[str, str] | None = None) -> EtcdAccess:
    """Read an ``etcd://`` or ``etcds://`` URL (see the module docstring).

    :param url: the registry URL.
    :param environ: where :data:`PASSWORD_ENV` is looked up (default ``os.environ``).
    :raises ValidationError: the URL is malformed; the message never repeats a password.
    """
    env = os.environ if environ is None else environ
    scheme, _, rest = url.partition("://")
    tls = scheme.lower() == "etcds"
    netloc, _, path_query = rest.partition("/")
    if "?" in netloc:
        netloc, _, query_text = netloc.partition("?")
        path = ""
    else:
        path, _, query_text = path_query.partition("?")
    user: str | None = None
    if "@" in netloc:
        userinfo, _, netloc = netloc.rpartition("@")
        if ":" in userinfo:
            raise ValidationError(
                f"etcd URL {scheme}://{unquote(userinfo.split(':')[0])}:***@{netloc}/…: "
                f"a password never goes in the URL; set {PASSWORD_ENV} or ?password_file=PATH",
                field="registry")
        user = unquote(userinfo) or None
    endpoints = tuple(split_endpoint(e) for e in netloc.split(",") if e.strip())
    shown = f"{scheme}://{user + '@' if user else ''}{netloc}/{path}"
    if not endpoints:
        raise ValidationError(f"bad etcd URL {shown!r}: no endpoints", field="registry")
    query = {k: v[-1] for k, v in parse_qs(query_text, keep_blank_values=True).items()}
    unknown = sorted(set(query) - set(_URL_OPTIONS))
    if unknown:
        raise ValidationError(f"etcd URL {shown!r}: unknown option {', '.join(unknown)} "
                              f"(known: {', '.join(_URL_OPTIONS)})", field="registry")
    if not tls and any(query.get(k) for k in _TLS_OPTIONS):
        raise ValidationError(f"etcd URL {shown!r}: ca/cert/key/server_name need TLS: "
                              "use etcds://", field="registry")
    if bool(query.get("cert")) != bool(query.get("key")):
        raise ValidationError(f"etcd URL {shown!r}: a client certificate needs both "
                              "cert= and key=", field="registry")
    password_file = query.get("password_file") or None
    password = None if password_file else env.get(PASSWORD_ENV) or None
    if user is None and password_file:
        raise ValidationError(f"etcd URL {shown!r}: password_file= needs a user "
                              "(etcds://USER@host:port/prefix)", field="registry")
    if user is not None and password is None and password_file is None:
        raise ValidationError(f"etcd user {user!r} needs a password: set {PASSWORD_ENV} or "
                              "add ?password_file=PATH to the URL", field="registry")
    return EtcdAccess(
        endpoints=endpoints, prefix=path.strip("/") or DEFAULT_PREFIX, tls=tls,
        ca=query.get("ca") or None, cert=query.get("cert") or None,
        key=query.get("key") or None, server_name=query.get("server_name") or None,
        user=user, password=password if user else None, password_file=password_file,
    )


def split_endpoint(endpoint: str) -> tuple[str, int]:
    """``host[:port]`` (``[v6]:port`` too) as ``(host, port)``."""
    endpoint = endpoint.strip().removeprefix("http://").removeprefix("https://")
    host, sep, port = endpoint.rpartition(":")
    if not sep or "]" in port:
        return endpoint.strip("[]"), DEFAULT_PORT
    try:
        return host.strip("[]"), int(port)
    except ValueError:
        raise ValidationError(f"bad etcd endpoint {endpoint!r}", field="registry") from None


def _is_ip(host: str, version: int) -> bool:
    try:
        return ipaddress.ip_address(host).version == version
    except ValueError:
        return False


async def grpc_target(endpoints: Iterable[tuple[str, int]]) -> str:
    """One gRPC target naming every member, so the channel fails over between them."""
    eps = list(endpoints)
    if len(eps) == 1 and not _is_ip(eps[0][0], 4) and not _is_ip(eps[0][0], 6):
        return f"{eps[0][0]}:{eps[0][1]}"  # one name: let gRPC's DNS resolver handle it
    resolved: list[tuple[str, int]] = []
    loop = asyncio.get_running_loop()
    for host, port in eps:
        if _is_ip(host, 4) or _is_ip(host, 6):
            resolved.append((host, port))
            continue
        infos = await loop.getaddrinfo(host, port, family=socket.AF_INET,
                                       type=socket.SOCK_STREAM)
        resolved.extend((str(info[4][0]), port) for info in infos[:1])
    if all(_is_ip(h, 4) for h, _ in resolved):
        return "ipv4:" + ",".join(f"{h}:{p}" for h, p in resolved)
    if all(_is_ip(h, 6) for h, _ in resolved):
        return "ipv6:" + ",".join(f"[{h}]:{p}" for h, p in resolved)
    raise ValidationError("etcd endpoints mix IPv4 and IPv6 addresses", field="registry")


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
