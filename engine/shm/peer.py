"""Is the process on the other side of a ring still there?

``PeerWatch`` follows the pid a segment records for the other side. On Linux
it holds a pidfd (``os.pidfd_open``): it becomes readable the moment the
process terminates — zombie included, which ``kill(pid, 0)`` would still call
alive — and it cannot be fooled by pid reuse. Elsewhere it asks psutil.
A pid of 0 means "not attached yet": never dead.
"""

from __future__ import annotations

import os
import select


class PeerWatch:
    """Liveness of one peer pid; re-targets itself when the recorded pid changes."""

    def __init__(self) -> None:
        self.pid = 0
        self._pidfd: int | None = None
        self._gone = False

    def alive(self, pid: int) -> bool:
        """True unless process ``pid`` (> 0) has terminated."""
        if pid == 0:
            return True
        if pid != self.pid:
            self._retarget(pid)
        if self._gone:
            return False
        if self._pidfd is not None:
            readable, _, _ = select.select([self._pidfd], [], [], 0)
            self._gone = bool(readable)
            return not self._gone
        return _alive_psutil(pid)

    def _retarget(self, pid: int) -> None:
        self.close()
        self.pid = pid
        self._gone = False
        if hasattr(os, "pidfd_open"):
            try:
                self._pidfd = os.pidfd_open(pid)
            except ProcessLookupError:
                self._gone = True
            except OSError:
                self._pidfd = None  # e.g. kernel < 5.3: fall back to psutil

    def close(self) -> None:
        if self._pidfd is not None:
            os.close(self._pidfd)
            self._pidfd = None

    def __del__(self) -> None:  # a side dropped without close() must not leak its pidfd
        self.close()


def _alive_psutil(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
