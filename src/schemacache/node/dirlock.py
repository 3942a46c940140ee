"""One node per state directory: an advisory lock held while the node runs.

Two nodes writing one ``state.db`` would each take the other's applied
versions for their own handler's, so the second one is refused at start-up.
The lock is ``flock`` on ``state_dir/lock``: the kernel drops it when the
holder exits, however it exits, so a SIGKILLed node never leaves a stale lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from ..errors import SchemaCacheError

LOCK_FILE = "lock"
"""Name of the lock file inside the state directory."""


class StateDirInUseError(SchemaCacheError):
    """Another running node holds the state directory.

    :param directory: the state directory.
    :param holder: what the holder wrote into the lock file (its pid), if anything.
    """

    def __init__(self, directory: Path, holder: str):
        self.directory = directory
        self.holder = holder
        who = f"process {holder}" if holder else "another process"
        super().__init__(f"state directory {directory} is in use by {who}: "
                         "each node needs a state directory of its own")


class DirLock:
    """The exclusive lock of one directory.

    :param directory: the directory to lock (it must exist).
    """

    def __init__(self, directory: Path):
        self.directory = directory
        self.path = directory / LOCK_FILE
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock at once or raise :class:`StateDirInUseError`."""
        if self._fd is not None:
            return
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip()
            os.close(fd)
            raise StateDirInUseError(self.directory, holder) from None
        except BaseException:
            os.close(fd)
            raise
        # The pid is for the error message of whoever comes second only.
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Give the lock up (the file stays: removing it would let two
        processes lock two different files of the same name)."""
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)
