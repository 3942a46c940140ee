"""The etcd registry's URL: endpoints, prefix, user, TLS files (see :mod:`.etcd_conn`).

``etcd://[USER@]h:p[,h:p…]/prefix`` is plaintext, ``etcds://…?ca=…&cert=…&key=…``
is TLS. A password never sits in the URL: it comes from ``?password_file=PATH``
or the environment variable :data:`PASSWORD_ENV`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import os
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs, unquote

from ..errors import (
    ValidationError,
)

DEFAULT_PREFIX = "schemacache"
"""Key prefix used when the URL names none."""

DEFAULT_PORT = 2379
"""Client port assumed for an endpoint given without one."""

PASSWORD_ENV = "SCHEMACACHE_ETCD_PASSWORD"
"""Environment variable holding the etcd user's password."""

_URL_OPTIONS = ("ca", "cert", "key", "password_file", "server_name")

_TLS_OPTIONS = ("ca", "cert", "key", "server_name")


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
