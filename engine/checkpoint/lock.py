"""One live run per checkpoint directory: an exclusive lock on ``<dir>/LOCK``.

``DirectoryLock(dir).acquire()`` takes a non-blocking ``flock`` on ``LOCK`` (created
owner-only, never through a symlink) and writes this process's pid into it. A
second run on the same directory is refused at once with
``CheckpointLockedError`` naming the pid that holds it. The kernel drops the
lock when the holder exits, however it exits (kill -9 included), so a stale
``LOCK`` file never blocks a new run. The lock is not inherited by children
(the file descriptor is close-on-exec). Not guaranteed on network file systems
whose ``flock`` is local to one machine.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from engine.errors import CheckpointLockedError

NAME = "LOCK"


class DirectoryLock:
    def __init__(self, directory: Path) -> None:
        self.path = Path(directory) / NAME
        self._fd: int | None = None

    def acquire(self) -> None:
        """Hold the lock, or raise ``CheckpointLockedError`` naming the holder's pid."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip() or "unknown"
            os.close(fd)
            raise CheckpointLockedError(
                f"checkpoint.dir: {self.path.parent} is in use by a running pipeline (pid "
                f"{holder}); stop that run first, or give this one another checkpoint.dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        """Let the lock go (idempotent); the file stays, empty."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, 0)
            os.close(self._fd)
            self._fd = None
