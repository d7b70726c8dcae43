"""Parking on a 32-bit word in shared memory (Linux futex, through ctypes).

``wait(addr, expected, timeout_s)`` sleeps while the word at ``addr`` still
holds ``expected`` — the kernel compares and sleeps atomically, so a wake that
bumps the word first is never lost — and returns on a wake, a timeout, a
signal or a spurious wake-up; the caller always re-checks its condition.
``wake(addr)`` wakes every waiter. Both are shared (non-PRIVATE) futexes, so
they work across processes that map the same segment. The syscall is itself
a full barrier on the waker's side.

Where futexes are unavailable (not Linux, an unknown architecture, or a
futex call refused with ENOSYS/EPERM, e.g. by seccomp), both
degrade to a bounded sleep: ``wait`` sleeps for at most 1 ms, so a wake costs at
most that much latency and never a hang. ``AVAILABLE`` says which is in use.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import platform
import sys
import time

_SYS_FUTEX = {"x86_64": 202, "amd64": 202, "aarch64": 98, "arm64": 98}.get(
    platform.machine().lower()
)
_FUTEX_WAIT = 0
_FUTEX_WAKE = 1
_INT_MAX = 2**31 - 1
_FALLBACK_SLEEP_S = 0.001


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


def _load_syscall():  # type: ignore[no-untyped-def]
    if not sys.platform.startswith("linux") or _SYS_FUTEX is None:
        return None
    libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
    fn = libc.syscall
    fn.restype = ctypes.c_long
    fn.argtypes = [
        ctypes.c_long,
        ctypes.c_void_p,
        ctypes.c_int,
        ctypes.c_uint,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_uint,
    ]
    return fn


_syscall = _load_syscall()
AVAILABLE = _syscall is not None


def wait(addr: int, expected: int, timeout_s: float) -> None:
    """Sleep while the u32 at ``addr`` equals ``expected``, at most ``timeout_s``."""
    global _syscall
    if _syscall is None:
        time.sleep(min(timeout_s, _FALLBACK_SLEEP_S))
        return
    sec = int(timeout_s)
    ts = _Timespec(sec, int((timeout_s - sec) * 1e9))
    rc = _syscall(
        _SYS_FUTEX, addr, _FUTEX_WAIT, expected & 0xFFFFFFFF, ctypes.addressof(ts), None, 0
    )
    if rc == -1 and ctypes.get_errno() in (errno.ENOSYS, errno.EPERM):
        # futex refused (e.g. a seccomp filter): degrade to bounded sleeps for good.
        _syscall = None
        time.sleep(min(timeout_s, _FALLBACK_SLEEP_S))


def wake(addr: int) -> None:
    """Wake every process parked on the u32 at ``addr``."""
    if _syscall is not None:
        _syscall(_SYS_FUTEX, addr, _FUTEX_WAKE, _INT_MAX, None, None, 0)
