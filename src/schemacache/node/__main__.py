"""``python -m schemacache.node``: the same command line as ``schemacache node``."""

from __future__ import annotations

import sys
from collections.abc import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``schemacache node`` with ``argv`` (default: this process's arguments)."""
    from ..cli import app

    args = list(sys.argv[1:] if argv is None else argv)
    try:
        app(["node", *args], prog_name="python -m schemacache")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
