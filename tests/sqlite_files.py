"""SQLite files for tests: backups taken and restored the way an operator does."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def online_copy(source: str | Path, target: str | Path) -> None:
    """Copy ``source`` into ``target`` with SQLite's online backup API (what
    ``sqlite3 TARGET ".restore SOURCE"`` does): connections open on either file
    stay valid."""
    src = sqlite3.connect(source)
    dst = sqlite3.connect(target)
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()
