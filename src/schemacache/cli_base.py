"""What every ``schemacache`` command shares: the app, its consoles, common options,
exit codes and error handling."""

from __future__ import annotations

import asyncio
import functools
import sys
from collections.abc import Callable, Coroutine, Iterable
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from . import __version__
from .client import ClientError
from .errors import SchemaCacheError, ValidationError
from .node import config as node_config

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_TIMEOUT = 3

DEFAULT_LISTEN = "127.0.0.1:8080"
"""Where ``serve`` and ``up`` bind the registry API."""

DEFAULT_WAIT_TIMEOUT = 60.0
"""Seconds ``apply --wait`` waits for the nodes."""

WAIT_POLL_INTERVAL = 0.2
"""Seconds between two ``GET /v1/cluster`` polls of ``apply --wait``."""

app = typer.Typer(
    name="schemacache",
    help="Self-healing, versioned schema caches: registry API, nodes and client.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
STATUS_WIDTH = 160
"""Columns of the output when it is not a terminal (rich would assume 80)."""

out = Console(highlight=False, soft_wrap=True,
              width=None if sys.stdout.isatty() else STATUS_WIDTH)
err = Console(stderr=True, highlight=False, soft_wrap=True)


def print_lines(lines: Iterable[str]) -> None:
    """Write plain lines (no markup) to standard output in one write: a large
    apply prints a line per resource, and rich takes ~70 µs a line."""
    text = "".join(f"{line}\n" for line in lines)
    if text:
        out.file.write(text)
        out.file.flush()


def _print_version(value: bool) -> None:
    if value:
        out.print(f"schemacache {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[bool, typer.Option(
        "--version", "-V", callback=_print_version, is_eager=True,
        help="Print the version and exit.")] = False,
) -> None:
    """Self-healing, versioned schema caches: registry API, nodes and client."""


_T = TypeVar("_T")

ServerOpt = Annotated[str, typer.Option("--server", envvar="SCHEMACACHE_SERVER",
                                        help="registry API base URL")]
TokenOpt = Annotated[str | None, typer.Option("--token", envvar="SCHEMACACHE_TOKEN",
                                              help="bearer token for writes")]
CacertOpt = Annotated[str | None, typer.Option(
    "--cacert", envvar="SCHEMACACHE_CACERT",
    help="CA certificate (PEM) that verifies https:// servers")]
TlsCertOpt = Annotated[str | None, typer.Option(
    "--tls-cert", help="serve HTTPS with this certificate (PEM; with --tls-key)")]
TlsKeyOpt = Annotated[str | None, typer.Option(
    "--tls-key", help="private key (PEM) of --tls-cert")]


NodeTokenOpt = Annotated[str | None, typer.Option(
    "--node-token", envvar=node_config.NODE_TOKEN_ENV,
    help="bearer token of the nodes' admin APIs")]


class Output(StrEnum):
    table = "table"
    yaml = "yaml"
    json = "json"
    banyandb = "banyandb"


class BriefOutput(StrEnum):
    table = "table"
    json = "json"


BriefOutputOpt = Annotated[BriefOutput, typer.Option("--output", "-o", help="output format")]


def fail(message: str, code: int = EXIT_ERROR) -> typer.Exit:
    """Print ``error: message`` on stderr; return the exit to raise."""
    err.print(f"[red]error:[/red] {message}", markup=True)
    return typer.Exit(code)


def run(coro: Coroutine[Any, Any, _T]) -> _T:
    """Run a coroutine; turn the errors a user can act on into one line and exit 1."""
    try:
        return asyncio.run(coro)
    except ClientError as exc:
        raise fail(exc.render()) from None
    except ValidationError as exc:
        raise fail(f"invalid: {exc}") from None
    except SchemaCacheError as exc:
        raise fail(str(exc)) from None
    except OSError as exc:
        raise fail(str(exc)) from None


def command(fn: Callable[..., None]) -> Callable[..., None]:
    """Keep a traceback off the terminal for any error a command did not expect."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except KeyboardInterrupt:
            raise typer.Exit(130) from None
        except Exception as exc:  # the last line of defence
            raise fail(f"{type(exc).__name__}: {exc}") from None

    return wrapper


def resolve_token(token: str | None, token_file: Path | None) -> str | None:
    """The token of ``--token`` or ``--token-file`` (exit 2 on a bad combination or file)."""
    if token and token_file:
        raise fail("use --token or --token-file, not both", EXIT_USAGE)
    if token_file is not None:
        try:
            token = token_file.read_text().strip()
        except OSError as exc:
            raise fail(f"cannot read token file: {exc}", EXIT_USAGE) from None
        if not token:
            raise fail(f"token file {token_file} is empty", EXIT_USAGE)
    return token or None


def check_listen(listen: str, token: str | None, what: str) -> None:
    from .api.http import UnprotectedListenError, refuse_unprotected

    try:
        refuse_unprotected(listen, token, what)
    except (ValueError, UnprotectedListenError) as exc:
        raise fail(str(exc), EXIT_USAGE) from None
