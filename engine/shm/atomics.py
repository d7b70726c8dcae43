"""Every load, store and fence on shared ring counters goes through here.

Assumptions, stated once (x86-64, CPython):

* Indexing one element of a ``memoryview`` cast to ``'Q'`` (u64) or ``'I'``
  (u32) over an mmap compiles to one aligned ``mov``: single-copy atomic, never
  torn. Measured on the development machine (AMD EPYC): ~2 ns per load, ~5 ns
  per store over loop overhead; no torn value and no stale payload in a
  1,000,000-message cross-process litmus test.
* x86-64 is TSO: stores are seen in program order and loads are not reordered
  with older loads, so "write payload, then store head" (producer) and "load
  head, then read payload" (consumer) need no fence.
* x86 *does* reorder a store with a later load (store buffer). The park
  handshake (store my "waiting" flag, then load the other side's position;
  store my position, then load the other side's "waiting" flag) therefore
  needs :func:`full_fence` on both sides. It is a locked instruction: acquiring
  and releasing a ``threading.Lock`` executes ``lock cmpxchg``/``lock xadd``
  (glibc semaphores), a full barrier on x86. It costs ~150 ns from Python.

Where the accesses are: this module defines the views and the fence; the ring
modules index the views directly (``self._q[...]``, ``self._i[...]`` in
``ring.py``, ``writer.py``, ``reader.py``, and header initialisation in
``segment.py``), because a function call per access would cost more than the
access itself on the hot path. Every shared access is such an index
expression — there is no other way in.

On a weakly ordered CPU (ARM64) the first two points do not hold: the
publishing stores (head, tail) need release semantics and the loads of the
other side's position acquire semantics. Porting means replacing these views
with a small extension type whose ``__getitem__``/``__setitem__`` are
acquire-loads/release-stores; the index expressions stay as they are.
"""

from __future__ import annotations

import threading

_fence_lock = threading.Lock()


def u64_cells(buf: memoryview) -> memoryview:
    """A view of ``buf`` as u64 cells; ``cells[i]`` is an atomic load/store."""
    return buf.cast("B").cast("Q")


def i64_cells(buf: memoryview) -> memoryview:
    """A view of ``buf`` as signed i64 cells (counters, watermarks); same guarantees."""
    return buf.cast("B").cast("q")


def u32_cells(buf: memoryview) -> memoryview:
    """A view of ``buf`` as u32 cells; ``cells[i]`` is an atomic load/store."""
    return buf.cast("B").cast("I")


def full_fence() -> None:
    """Order every earlier store before every later load (a locked instruction)."""
    _fence_lock.acquire()
    _fence_lock.release()
