"""Run an ASGI app with uvicorn inside the current event loop.

Both HTTP servers (the registry API and a node's admin server) need the same
thing: bind ``host:port`` (port 0 = any free port), learn the real port, serve
in the background and stop cleanly.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import socket
import ssl
from typing import Any

import uvicorn

from ..errors import SchemaCacheError

STARTUP_TIMEOUT = 10.0
"""Seconds to wait for uvicorn to start serving."""


def parse_listen(listen: str) -> tuple[str, int]:
    """Split ``host:port`` (``[::1]:8080`` for IPv6) into host and port."""
    host, sep, port = listen.rpartition(":")
    if not sep or not (port.isascii() and port.isdigit()) or len(port) > 5:
        raise ValueError(f"bad listen address {listen!r}: expected host:port")
    return host.strip("[]") or "127.0.0.1", int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class UnprotectedListenError(SchemaCacheError):
    """An HTTP server was asked to listen beyond loopback without a token.

    :param host: the non-loopback host.
    :param what: which server (``registry API``, ``node admin API``).
    """

    def __init__(self, host: str, what: str):
        self.host = host
        super().__init__(f"refusing to serve the {what} on non-loopback address {host} "
                         "without a token (pass --token or --token-file)")


def refuse_unprotected(listen: str, token: str | None, what: str) -> None:
    """Raise :class:`UnprotectedListenError` if ``listen`` is not loopback and
    there is no token; :class:`ValueError` if ``listen`` is malformed."""
    host, _ = parse_listen(listen)
    if not is_loopback(host) and not token:
        raise UnprotectedListenError(host, what)


class ListenError(SchemaCacheError):
    """The HTTP server could not bind its address.

    :param url: the address asked for.
    :param cause: the operating system's error.
    """

    def __init__(self, url: str, cause: OSError):
        self.url = url
        reason = cause.strerror or str(cause)
        hint = (" (is another server running there? choose another with --listen)"
                if cause.errno == errno.EADDRINUSE else "")
        where = url.removeprefix("http://").removeprefix("https://")
        super().__init__(f"cannot listen on {where}: {reason}{hint}")


class TlsConfigError(SchemaCacheError):
    """The HTTP server's certificate or key cannot be used."""


def check_tls_files(cert: str, key: str) -> None:
    """Load a certificate and its key the way the server will, to fail early and clearly.

    :raises TlsConfigError: naming the files and the reason.
    """
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "strerror", None) or getattr(exc, "reason", None) or str(exc)
        raise TlsConfigError(f"cannot use TLS certificate {cert} with key {key}: "
                             f"{reason}") from None


class UvicornServer:
    """An ASGI app served in the background of the running loop.

    :param app: the ASGI application.
    :param listen: ``host:port`` to bind (default ``127.0.0.1:0``, any free port).
    :param log_level: uvicorn's log level (default ``warning``).
    :param tls_cert: serve HTTPS with this PEM certificate (chain) file (with ``tls_key``;
        default ``None``: plain HTTP).
    :param tls_key: the certificate's PEM private key file.
    """

    def __init__(self, app: Any, listen: str = "127.0.0.1:0", log_level: str = "warning",
                 tls_cert: str | None = None, tls_key: str | None = None):
        if bool(tls_cert) != bool(tls_key):
            raise TlsConfigError("HTTPS needs both a certificate and its key "
                                 "(--tls-cert and --tls-key)")
        if tls_cert and tls_key:
            check_tls_files(tls_cert, tls_key)
        self.app = app
        self.host, self.port = parse_listen(listen)
        self._log_level = log_level
        self._tls = (tls_cert, tls_key) if tls_cert and tls_key else None
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._socket: socket.socket | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'https' if self._tls else 'http'}://{host}:{self.port}"

    async def start(self) -> str:
        """Bind, start serving and return the base URL."""
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets whose proto
        # says TCP, and without it each answer on a kept-alive connection waits
        # ~40 ms for the client's delayed ACK.
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as exc:
            sock.close()
            raise ListenError(self.url, exc) from exc
        self.port = sock.getsockname()[1]
        self._socket = sock
        cert, key = self._tls or (None, None)
        config = uvicorn.Config(self.app, log_level=self._log_level, lifespan="off",
                                access_log=False, ssl_certfile=cert, ssl_keyfile=key)
        self._server = uvicorn.Server(config)
        # A server inside a larger program must leave signals to that program
        # (uvicorn would otherwise take SIGINT/SIGTERM over while it serves).
        self._server.capture_signals = contextlib.nullcontext  # type: ignore[method-assign,assignment]
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        deadline = asyncio.get_running_loop().time() + STARTUP_TIMEOUT
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise RuntimeError("HTTP server stopped during start-up")
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"HTTP server on {self.url} did not start")
            await asyncio.sleep(0.01)
        return self.url

    async def stop(self) -> None:
        """Stop serving and wait for the server task to end."""
        if self._server is not None:
            self._server.should_exit = True
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                try:
                    await asyncio.wait_for(self._task, timeout=5.0)
                except TimeoutError:
                    self._task.cancel()
                    await asyncio.gather(self._task, return_exceptions=True)
        if self._socket is not None:
            self._socket.close()
        self._server = self._task = self._socket = None
