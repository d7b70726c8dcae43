"""Named POSIX shared-memory segments that hold one ring each.

A segment is created by its *owner* (the coordinator, or a test), which alone
unlinks it; producers and consumers *attach* by name. Contract:

* Names are ``rs-`` plus 24 random hex digits (unguessable); the object is
  created with ``O_EXCL`` and mode 0600 (owner-only).
* ``create`` reserves the memory (``posix_fallocate``: a full /dev/shm fails
  here with a clear error instead of a SIGBUS later) and write-touches every
  page, and every mapping (creator's or attacher's) is made with
  ``MAP_POPULATE``: first-touch page faults cost ~30x in copy speed.
* ``attach`` validates magic, format version, header size and capacity and
  raises :class:`RingFormatError` naming what is wrong.
* ``close`` unmaps (deferred while zero-copy views are alive: ``mmap`` refuses
  to close under exported buffers, so the mapping then lives until the last
  view is gone); ``unlink`` removes the name. The owner's ``close`` unlinks.
* An owner's segment is also unlinked when its ``Segment`` is garbage-collected
  or the interpreter exits (``weakref.finalize``).
* Not guaranteed: an owner killed with SIGKILL cannot unlink. Its segments
  keep the owner's pid in the header, and :func:`sweep_stale` (which the
  coordinator runs at start) removes segments whose owner is dead.
"""

from __future__ import annotations

import _posixshmem
import contextlib
import mmap
import os
import secrets
import time
import weakref
from pathlib import Path

import engine.shm.atomics as atomics
import engine.shm.layout as layout
from engine.errors import ConfigError, RingFormatError

NAME_PREFIX = "rs-"
_SHM_DIR = Path("/dev/shm")
_POPULATE = getattr(mmap, "MAP_POPULATE", 0)
_TOUCH_CHUNK = 1 << 20


def check_capacity(capacity: int) -> None:
    """Raise :class:`ConfigError` unless ``capacity`` is a usable ring size."""
    if not isinstance(capacity, int) or capacity & (capacity - 1) or capacity <= 0:
        raise ConfigError(f"ring capacity={capacity!r} is not a power of 2")
    if not layout.MIN_CAPACITY <= capacity <= layout.MAX_CAPACITY:
        raise ConfigError(
            f"ring capacity={capacity} is outside "
            f"[{layout.MIN_CAPACITY}, {layout.MAX_CAPACITY}] bytes"
        )


class Segment:
    """One mapped shared-memory segment with a ring header."""

    def __init__(self, name: str, fd: int, mm: mmap.mmap, owner: bool) -> None:
        self.name = name
        self.owner = owner
        self._fd = fd
        self._mmap = mm
        self.buf = memoryview(mm)
        self.q = atomics.u64_cells(self.buf[: layout.HEADER_SIZE])
        self.i = atomics.u32_cells(self.buf[: layout.HEADER_SIZE])
        self.capacity = int(self.q[layout.Q_CAPACITY])
        self._closed = False
        # An owner that is dropped without close() (or exits) still unlinks its name.
        self._finalizer = weakref.finalize(self, unlink, name) if owner else None

    # -- lifecycle -----------------------------------------------------------
    @classmethod
    def create(cls, capacity: int, name: str | None = None) -> Segment:
        """Create, reserve, pre-fault and initialise a segment for ``capacity`` bytes."""
        check_capacity(capacity)
        name = name or NAME_PREFIX + secrets.token_hex(12)
        size = layout.segment_size(capacity)
        fd = _posixshmem.shm_open("/" + name, os.O_CREAT | os.O_EXCL | os.O_RDWR, mode=0o600)
        mm = None
        try:
            os.ftruncate(fd, size)
            if hasattr(os, "posix_fallocate"):
                try:
                    os.posix_fallocate(fd, 0, size)
                except OSError as exc:
                    raise RingFormatError(
                        f"cannot reserve {size} bytes of shared memory for ring {name}: "
                        f"{exc.strerror} (is /dev/shm large enough?)"
                    ) from exc
            mm = mmap.mmap(fd, size, flags=mmap.MAP_SHARED | _POPULATE)
            zeros = bytes(min(_TOUCH_CHUNK, size))
            for off in range(0, size, len(zeros)):  # write-touch: allocate and map every page
                n = min(len(zeros), size - off)
                mm[off : off + n] = zeros[:n]
            header = memoryview(mm)[: layout.HEADER_SIZE]
            q, i = atomics.u64_cells(header), atomics.u32_cells(header)
            i[layout.I_VERSION] = layout.VERSION
            i[layout.I_HEADER_SIZE] = layout.HEADER_SIZE
            q[layout.Q_CAPACITY] = capacity
            q[layout.Q_OWNER_PID] = os.getpid()
            q[layout.Q_CREATED_NS] = time.time_ns()
            q[layout.Q_MAGIC] = layout.MAGIC  # last: a half-initialised segment has no magic
            q.release()
            i.release()
            header.release()
        except BaseException:  # including KeyboardInterrupt while pre-faulting a big ring
            if mm is not None:
                with contextlib.suppress(BufferError):
                    mm.close()
            os.close(fd)
            with contextlib.suppress(OSError):
                _posixshmem.shm_unlink("/" + name)
            raise
        return cls(name, fd, mm, owner=True)

    @classmethod
    def attach(cls, name: str, capacity: int | None = None) -> Segment:
        """Map an existing segment, validating its header (and ``capacity`` if given)."""
        try:
            fd = _posixshmem.shm_open("/" + name, os.O_RDWR, mode=0o600)
        except FileNotFoundError:
            raise RingFormatError(f"no shared-memory segment named {name!r}") from None
        try:
            size = os.fstat(fd).st_size
            if size < layout.HEADER_SIZE:
                raise RingFormatError(
                    f"segment {name!r} is {size} bytes, smaller than a ring header "
                    f"({layout.HEADER_SIZE} bytes)"
                )
            mm = mmap.mmap(fd, size, flags=mmap.MAP_SHARED | _POPULATE)
        except BaseException:
            os.close(fd)
            raise
        seg = cls(name, fd, mm, owner=False)
        try:
            seg._validate(size, capacity)
        except BaseException:
            seg.close()
            raise
        return seg

    def _validate(self, size: int, expected_capacity: int | None) -> None:
        magic = int(self.q[layout.Q_MAGIC])
        if magic != layout.MAGIC:
            raise RingFormatError(
                f"segment {self.name!r} has magic {magic:#018x}, expected {layout.MAGIC:#018x}: "
                "not a ringstream ring (or not initialised yet)"
            )
        version = int(self.i[layout.I_VERSION])
        if version != layout.VERSION:
            raise RingFormatError(
                f"segment {self.name!r} has format version {version}; "
                f"this build reads version {layout.VERSION}"
            )
        header = int(self.i[layout.I_HEADER_SIZE])
        if header != layout.HEADER_SIZE:
            raise RingFormatError(
                f"segment {self.name!r} has header size {header}, expected {layout.HEADER_SIZE}"
            )
        cap = self.capacity
        if cap <= 0 or cap & (cap - 1) or layout.segment_size(cap) != size:
            raise RingFormatError(
                f"segment {self.name!r} declares capacity {cap}, inconsistent with its size {size}"
            )
        if expected_capacity is not None and cap != expected_capacity:
            raise RingFormatError(
                f"segment {self.name!r} has capacity {cap}, expected {expected_capacity}"
            )

    def data(self) -> memoryview:
        """The data area plus the slack page, as bytes."""
        return self.buf[layout.HEADER_SIZE :]

    def address(self, offset: int) -> int:
        """Virtual address of byte ``offset`` of this mapping (for futex calls)."""
        import ctypes

        anchor = ctypes.c_char.from_buffer(self._mmap)
        try:
            return ctypes.addressof(anchor) + offset
        finally:
            del anchor

    def close(self) -> None:
        """Unmap (deferred while views are alive); the owner also unlinks. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for view in (self.q, self.i, self.buf):
            with contextlib.suppress(BufferError):
                view.release()
        with contextlib.suppress(BufferError):
            self._mmap.close()  # refused while zero-copy batches are alive: GC unmaps later
        os.close(self._fd)
        if self._finalizer is not None:
            self._finalizer()

    def unlink(self) -> None:
        """Remove the segment's name; mappings stay valid until unmapped. Idempotent."""
        unlink(self.name)

    @property
    def closed(self) -> bool:
        return self._closed


def unlink(name: str) -> bool:
    """Remove segment ``name``; False if it did not exist."""
    try:
        _posixshmem.shm_unlink("/" + name)
    except FileNotFoundError:
        return False
    return True


def list_segments() -> list[str]:
    """Names of the ringstream segments in /dev/shm (Linux), readable or not."""
    if not _SHM_DIR.is_dir():
        return []
    return sorted(p.name for p in _SHM_DIR.iterdir() if p.name.startswith(NAME_PREFIX))


def owner_pid(name: str) -> int | None:
    """Owner pid recorded in segment ``name``'s header, or None if unreadable."""
    try:
        with open(_SHM_DIR / name, "rb") as f:
            head = f.read(layout.HEADER_SIZE)
    except OSError:
        return None
    if len(head) < layout.HEADER_SIZE:
        return None
    if int.from_bytes(head[0:8], "little") != layout.MAGIC:
        return None
    return int.from_bytes(head[layout.OWNER_PID_OFF : layout.OWNER_PID_OFF + 8], "little")


def sweep_stale() -> list[str]:
    """Unlink segments of this user whose owner process is gone; return their names."""
    import psutil

    removed = []
    uid = os.getuid()
    for name in list_segments():
        path = _SHM_DIR / name
        try:
            if path.stat().st_uid != uid:
                continue
        except OSError:
            continue
        pid = owner_pid(name)
        if pid is None:
            continue
        try:
            alive = psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        except psutil.Error:
            alive = False
        if not alive and unlink(name):
            removed.append(name)
    return removed
