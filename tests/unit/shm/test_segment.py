"""Named shared-memory segments: create, attach (and what attach refuses), close, sweep."""

from __future__ import annotations

import _posixshmem
import os
import re
import secrets
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from engine.errors import ConfigError, RingFormatError
from engine.shm import layout, segment
from engine.shm.segment import Segment

CAPACITY = 1024
SHM = Path("/dev/shm")


@pytest.fixture
def seg() -> Iterator[Segment]:
    s = Segment.create(CAPACITY)
    yield s
    s.close()


@pytest.fixture
def raw_name() -> Iterator[str]:
    """A fresh ``rs-`` name; whatever a test creates under it is unlinked afterwards."""
    name = segment.NAME_PREFIX + "test-" + secrets.token_hex(8)
    yield name
    segment.unlink(name)


def make_raw_segment(name: str, size: int, header: bytes = b"") -> None:
    """A shared-memory object of ``size`` bytes that ringstream did not create."""
    fd = _posixshmem.shm_open("/" + name, os.O_CREAT | os.O_EXCL | os.O_RDWR, mode=0o600)
    try:
        os.ftruncate(fd, size)
        if header:
            os.pwrite(fd, header, 0)
    finally:
        os.close(fd)


def ring_header(capacity: int) -> bytes:
    head = bytearray(layout.HEADER_SIZE)
    head[layout.MAGIC_OFF : layout.MAGIC_OFF + 8] = layout.MAGIC.to_bytes(8, "little")
    head[layout.VERSION_OFF : layout.VERSION_OFF + 4] = layout.VERSION.to_bytes(4, "little")
    head[layout.HEADER_SIZE_OFF : layout.HEADER_SIZE_OFF + 4] = layout.HEADER_SIZE.to_bytes(
        4, "little"
    )
    head[layout.CAPACITY_OFF : layout.CAPACITY_OFF + 8] = capacity.to_bytes(8, "little")
    return bytes(head)


def dead_pid() -> int:
    """The pid of a child that has exited and been reaped (or one above the kernel's limit)."""
    with subprocess.Popen([sys.executable, "-c", "pass"]) as child:
        pid = child.pid
    # leaving the block waited for and reaped the child: the pid is free now
    if psutil.pid_exists(pid):  # reused already: take one no kernel hands out (> 2**22)
        pid = 2**22 + 12345
    assert not psutil.pid_exists(pid)
    return pid


# -- create ------------------------------------------------------------------------


def test_segment_create_makes_owner_only_shm_object(seg: Segment) -> None:
    st = os.stat(SHM / seg.name)
    assert stat.S_IMODE(st.st_mode) == 0o600
    assert st.st_uid == os.getuid()
    assert st.st_size == layout.segment_size(CAPACITY)


def test_segment_create_names_are_random_rs_hex() -> None:
    a, b = Segment.create(CAPACITY), Segment.create(CAPACITY)
    try:
        assert re.fullmatch(r"rs-[0-9a-f]{24}", a.name)
        assert re.fullmatch(r"rs-[0-9a-f]{24}", b.name)
        assert a.name != b.name
        assert {a.name, b.name} <= set(segment.list_segments())
    finally:
        a.close()
        b.close()


def test_segment_create_writes_a_valid_header(seg: Segment) -> None:
    assert seg.owner
    assert seg.capacity == CAPACITY
    assert seg.q[layout.Q_MAGIC] == layout.MAGIC
    assert seg.i[layout.I_VERSION] == layout.VERSION
    assert seg.i[layout.I_HEADER_SIZE] == layout.HEADER_SIZE
    assert seg.q[layout.Q_CAPACITY] == CAPACITY
    assert seg.q[layout.Q_OWNER_PID] == os.getpid()
    assert seg.q[layout.Q_CREATED_NS] > 0
    assert segment.owner_pid(seg.name) == os.getpid()
    for off in (layout.HEAD_OFF, layout.TAIL_OFF, layout.PRODUCER_PID_OFF, layout.CONSUMER_PID_OFF):
        assert seg.q[off // 8] == 0


def test_segment_create_zeroes_data_and_slack(seg: Segment) -> None:
    data = seg.data()
    assert len(data) == CAPACITY + layout.SLACK_SIZE
    assert bytes(data) == bytes(CAPACITY + layout.SLACK_SIZE)


def test_segment_create_with_taken_name_raises_and_keeps_the_existing_one(seg: Segment) -> None:
    with pytest.raises(FileExistsError):
        Segment.create(CAPACITY, name=seg.name)
    assert (SHM / seg.name).exists()
    assert seg.q[layout.Q_MAGIC] == layout.MAGIC


@pytest.mark.parametrize("capacity", [1000, 3 * 1024, 1025, -1024, 0])
def test_segment_create_with_non_power_of_two_capacity_raises_config_error_naming_it(
    capacity: int,
) -> None:
    with pytest.raises(ConfigError, match=rf"capacity={capacity}\b.*power of 2"):
        Segment.create(capacity)


@pytest.mark.parametrize("capacity", [1, 8, 512, 1 << 41])
def test_segment_create_with_capacity_out_of_range_raises_config_error_naming_it(
    capacity: int,
) -> None:
    with pytest.raises(ConfigError, match=rf"capacity={capacity} is outside"):
        Segment.create(capacity)


def test_segment_create_with_non_integer_capacity_raises_config_error() -> None:
    with pytest.raises(ConfigError, match=r"capacity=1024\.0"):
        Segment.create(1024.0)  # type: ignore[arg-type]


def test_segment_config_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        segment.check_capacity(1000)


def test_segment_check_capacity_accepts_bounds() -> None:
    segment.check_capacity(layout.MIN_CAPACITY)
    segment.check_capacity(layout.MAX_CAPACITY)


# -- attach ------------------------------------------------------------------------


def test_segment_attach_maps_the_same_memory(seg: Segment) -> None:
    other = Segment.attach(seg.name, CAPACITY)
    try:
        assert not other.owner
        assert other.capacity == CAPACITY
        seg.data()[10:14] = b"ring"
        assert bytes(other.data()[10:14]) == b"ring"
        other.q[layout.Q_HEAD] = 4242
        assert seg.q[layout.Q_HEAD] == 4242
    finally:
        other.close()


def test_segment_attach_with_wrong_magic_raises_format_error(seg: Segment) -> None:
    seg.q[layout.Q_MAGIC] = 0x1234
    with pytest.raises(RingFormatError, match=r"magic 0x0000000000001234.*not a ringstream ring"):
        Segment.attach(seg.name)


def test_segment_attach_with_wrong_version_raises_format_error(seg: Segment) -> None:
    seg.i[layout.I_VERSION] = layout.VERSION + 1
    with pytest.raises(RingFormatError, match=rf"format version {layout.VERSION + 1}\b"):
        Segment.attach(seg.name)


def test_segment_attach_with_wrong_header_size_raises_format_error(seg: Segment) -> None:
    seg.i[layout.I_HEADER_SIZE] = 8192
    with pytest.raises(RingFormatError, match=r"header size 8192"):
        Segment.attach(seg.name)


def test_segment_attach_with_other_expected_capacity_raises_format_error(seg: Segment) -> None:
    with pytest.raises(RingFormatError, match=rf"capacity {CAPACITY}, expected {2 * CAPACITY}"):
        Segment.attach(seg.name, capacity=2 * CAPACITY)


def test_segment_attach_with_capacity_inconsistent_with_size_raises_format_error(
    seg: Segment,
) -> None:
    seg.q[layout.Q_CAPACITY] = 2 * CAPACITY
    with pytest.raises(RingFormatError, match=rf"declares capacity {2 * CAPACITY}, inconsistent"):
        Segment.attach(seg.name)


def test_segment_attach_with_non_power_of_two_capacity_raises_format_error(seg: Segment) -> None:
    seg.q[layout.Q_CAPACITY] = CAPACITY + 8
    with pytest.raises(RingFormatError, match=rf"declares capacity {CAPACITY + 8}"):
        Segment.attach(seg.name)


def test_segment_attach_of_segment_smaller_than_header_raises_format_error(raw_name: str) -> None:
    make_raw_segment(raw_name, 100)
    with pytest.raises(RingFormatError, match=r"is 100 bytes, smaller than a ring header"):
        Segment.attach(raw_name)
    assert (SHM / raw_name).exists()  # attach never unlinks what it did not create


def test_segment_attach_of_empty_segment_raises_format_error(raw_name: str) -> None:
    make_raw_segment(raw_name, 0)
    with pytest.raises(RingFormatError, match=r"is 0 bytes"):
        Segment.attach(raw_name)


def test_segment_attach_of_zeroed_segment_raises_format_error_for_magic(raw_name: str) -> None:
    make_raw_segment(raw_name, layout.segment_size(CAPACITY))
    with pytest.raises(RingFormatError, match=r"magic"):
        Segment.attach(raw_name)


def test_segment_attach_of_segment_without_slack_raises_format_error(raw_name: str) -> None:
    size = layout.HEADER_SIZE + CAPACITY  # a valid header, but no slack page
    make_raw_segment(raw_name, size, ring_header(CAPACITY))
    with pytest.raises(RingFormatError, match=rf"inconsistent with its size {size}"):
        Segment.attach(raw_name)


def test_segment_attach_of_missing_name_raises_format_error_naming_it() -> None:
    name = "rs-missing-" + secrets.token_hex(8)
    with pytest.raises(RingFormatError, match=rf"no shared-memory segment named '{name}'"):
        Segment.attach(name)


def test_segment_failed_attach_leaves_no_open_descriptor(seg: Segment) -> None:
    seg.q[layout.Q_MAGIC] = 0
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(5):
        with pytest.raises(RingFormatError):
            Segment.attach(seg.name)
    assert len(os.listdir("/proc/self/fd")) == before


# -- close / unlink ------------------------------------------------------------------


def test_segment_owner_close_unlinks() -> None:
    s = Segment.create(CAPACITY)
    assert (SHM / s.name).exists()
    s.close()
    assert s.closed
    assert not (SHM / s.name).exists()
    assert s.name not in segment.list_segments()


def test_segment_attacher_close_does_not_unlink(seg: Segment) -> None:
    other = Segment.attach(seg.name)
    other.close()
    assert other.closed
    assert (SHM / seg.name).exists()
    assert seg.q[layout.Q_MAGIC] == layout.MAGIC  # the owner's mapping is untouched


def test_segment_close_twice_is_harmless() -> None:
    s = Segment.create(CAPACITY)
    other = Segment.attach(s.name)
    other.close()
    other.close()
    s.close()
    s.close()
    assert not (SHM / s.name).exists()


def test_segment_close_with_a_live_view_defers_unmap_but_unlinks() -> None:
    s = Segment.create(CAPACITY)
    view = s.data()[:16]
    s.close()
    assert not (SHM / s.name).exists()
    view[0:4] = b"safe"  # the mapping lives as long as the view
    assert bytes(view[0:4]) == b"safe"
    view.release()


def test_segment_unlink_of_missing_name_returns_false() -> None:
    assert segment.unlink("rs-missing-" + secrets.token_hex(8)) is False


def test_segment_owner_pid_of_non_ring_is_none(raw_name: str) -> None:
    make_raw_segment(raw_name, layout.HEADER_SIZE)
    assert segment.owner_pid(raw_name) is None
    assert segment.owner_pid("rs-missing-" + secrets.token_hex(8)) is None


# -- sweep_stale ---------------------------------------------------------------------


def test_segment_sweep_stale_removes_segment_whose_owner_is_dead() -> None:
    stale, live = Segment.create(CAPACITY), Segment.create(CAPACITY)
    try:
        stale.q[layout.Q_OWNER_PID] = dead_pid()
        removed = segment.sweep_stale()
        assert stale.name in removed
        assert live.name not in removed
        assert not (SHM / stale.name).exists()
        assert (SHM / live.name).exists()
    finally:
        stale.close()  # its name is gone already: close must not mind
        live.close()


def test_segment_sweep_stale_leaves_segment_that_is_not_a_ring(raw_name: str) -> None:
    make_raw_segment(raw_name, layout.HEADER_SIZE)
    assert raw_name not in segment.sweep_stale()
    assert (SHM / raw_name).exists()


def test_segment_owner_dropped_without_close_is_unlinked_when_collected() -> None:
    import gc

    seg = Segment.create(1 << 12)
    name = seg.name
    del seg
    gc.collect()
    assert name not in segment.list_segments()
