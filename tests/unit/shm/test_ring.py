"""One ring, writer and reader in this process: framing, wrap, claims, roles, closing."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import psutil
import pytest

from engine.errors import (
    CorruptFrameError,
    FrameTooLargeError,
    PeerClosedError,
    RingClosedError,
    RingError,
    RingRoleError,
)
from engine.shm import Frame, FrameKind, Ring, RingReader, RingWriter, layout
from engine.shm.layout import frame_size

CAPACITY = 1024
DATA = FrameKind.DATA
I64_MIN, I64_MAX = -(2**63), 2**63 - 1


def payload(seq: int, n: int) -> bytes:
    """``n`` bytes that differ per frame, so a torn or misplaced frame shows."""
    return bytes((seq * 31 + i * 7) & 0xFF for i in range(n))


def payload_len_for(size: int) -> int:
    """The payload length that makes a frame of exactly ``size`` bytes (size 8-aligned)."""
    assert size % 8 == 0 and size >= layout.FRAME_HEADER_SIZE
    return size - layout.FRAME_HEADER_SIZE


def advance_to(writer: RingWriter, reader: RingReader, index: int) -> None:
    """Write, read and release filler frames until both positions are at ``index`` (mod cap).

    Index 8 is unreachable: no frame ends there (a frame starting at 0 is >= 16 bytes).
    """
    assert index % 8 == 0 and index % CAPACITY != 8
    for _ in range(100):
        head = writer.ring.stats()["head"]
        at = head % CAPACITY
        gap = (index - at) % CAPACITY
        if gap == 0:
            assert writer.ring.stats()["tail"] == head
            return
        if gap < layout.FRAME_HEADER_SIZE:  # too small for a frame: go round once more
            gap += CAPACITY
        room = CAPACITY - at  # bytes before the end of the data area
        size = max(min(gap, room, CAPACITY // 2), layout.FRAME_HEADER_SIZE)
        if 0 < gap - size < layout.FRAME_HEADER_SIZE and size >= 2 * layout.FRAME_HEADER_SIZE:
            size -= layout.FRAME_HEADER_SIZE  # never leave a gap no frame can close
        assert writer.offer(DATA, bytes(payload_len_for(size)))
        reader.release(reader.poll())
    raise AssertionError(f"advance_to({index}) did not converge")


def poll_n(reader: RingReader, n: int) -> list[Frame]:
    """The next ``n`` frames, which must all be there already."""
    frames = []
    for _ in range(n):
        f = reader.poll()
        assert f is not None
        frames.append(f)
    return frames


def dead_pid() -> int:
    with subprocess.Popen([sys.executable, "-c", "pass"]) as child:
        pid = child.pid
    if psutil.pid_exists(pid):
        pid = 2**22 + 12345
    assert not psutil.pid_exists(pid)
    return pid


# -- basics ----------------------------------------------------------------------------


def test_ring_create_starts_empty(ring: Ring) -> None:
    stats = ring.stats()
    assert stats["capacity"] == CAPACITY
    assert (stats["head"], stats["tail"], stats["occupancy"]) == (0, 0, 0)
    assert stats["owner_pid"] == os.getpid()
    assert (stats["producer_pid"], stats["consumer_pid"]) == (0, 0)


def test_ring_writer_and_reader_record_their_pid(writer: RingWriter, reader: RingReader) -> None:
    stats = writer.ring.stats()
    assert stats["producer_pid"] == stats["consumer_pid"] == os.getpid()
    assert stats["producer_heartbeat_ns"] > 0 and stats["consumer_heartbeat_ns"] > 0


def test_reader_poll_on_empty_ring_returns_none(reader: RingReader) -> None:
    assert reader.poll() is None


def test_writer_offer_is_read_back_with_kind_value_flags_and_payload(
    ring: Ring, writer: RingWriter, reader: RingReader
) -> None:
    assert writer.offer(DATA, b"hello", value=-42, flags=0xBEEF)
    f = reader.poll()
    assert f is not None
    assert (f.kind, f.value, f.flags, bytes(f.payload)) == (DATA, -42, 0xBEEF, b"hello")
    assert (f.position, f.end) == (0, frame_size(5))
    assert "DATA" in repr(f)
    assert reader.poll() is None
    assert ring.stats()["head"] == frame_size(5)


def test_writer_offer_accepts_bytearray_and_byte_memoryview(
    writer: RingWriter, reader: RingReader
) -> None:
    assert writer.offer(DATA, bytearray(b"abc"))
    assert writer.offer(DATA, memoryview(b"\x01\x02\x03\x04"))
    assert writer.put(DATA, memoryview(bytearray(b"put")), timeout=0)
    got = poll_n(reader, 3)
    assert [bytes(f.payload) for f in got] == [b"abc", b"\x01\x02\x03\x04", b"put"]


def test_writer_offer_of_multi_byte_memoryview_writes_all_its_bytes(
    writer: RingWriter, reader: RingReader
) -> None:
    words = memoryview(bytearray(b"\x01\x00\x00\x00\x02\x00\x00\x00")).cast("I")
    assert len(words) == 2 and words.nbytes == 8
    assert writer.offer(DATA, words)
    f = reader.poll()
    assert f is not None and bytes(f.payload) == words.tobytes()


def test_writer_offer_of_empty_payload_is_a_header_only_frame(
    ring: Ring, writer: RingWriter, reader: RingReader
) -> None:
    assert writer.offer(DATA)
    f = reader.poll()
    assert f is not None and bytes(f.payload) == b""
    assert ring.stats()["head"] == layout.FRAME_HEADER_SIZE


def test_reader_frames_come_out_in_the_order_written(
    writer: RingWriter, reader: RingReader
) -> None:
    for seq in range(10):
        assert writer.offer(DATA, payload(seq, seq * 3), value=seq)
    for seq in range(10):
        f = reader.poll()
        assert f is not None
        assert (f.value, bytes(f.payload)) == (seq, payload(seq, seq * 3))


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        (FrameKind.WATERMARK, 1_700_000_000_000),
        (FrameKind.WATERMARK, -1),
        (FrameKind.WATERMARK, I64_MIN),
        (FrameKind.WATERMARK, I64_MAX),
        (FrameKind.BARRIER, 1),
        (FrameKind.BARRIER, I64_MAX),
        (FrameKind.EOS, 0),
    ],
)
def test_writer_control_frame_value_round_trips(
    writer: RingWriter, reader: RingReader, kind: FrameKind, value: int
) -> None:
    if kind == FrameKind.WATERMARK:
        assert writer.write_watermark(value)
    elif kind == FrameKind.BARRIER:
        assert writer.write_barrier(value)
    else:
        assert writer.write_eos()
    f = reader.poll()
    assert f is not None
    assert (f.kind, f.value, len(f.payload)) == (kind, value, 0)


# -- full ring -------------------------------------------------------------------------


def test_writer_rejects_write_when_full(ring: Ring, writer: RingWriter, reader: RingReader) -> None:
    for seq in range(4):  # 4 x 256 bytes fill the ring exactly
        assert writer.offer(DATA, payload(seq, payload_len_for(256)), value=seq)
    before = ring.stats()
    assert before["occupancy"] == CAPACITY

    assert writer.offer(DATA, b"x") is False
    assert writer.try_claim(0) is None
    assert ring.stats() == before  # nothing written, no position moved

    f = reader.poll()
    assert f is not None and f.value == 0
    assert writer.offer(DATA, b"x", value=99) is False  # read but not released: still full
    reader.release(f)
    assert writer.offer(DATA, b"x", value=99)  # the released 256 bytes take it now
    values = []
    while (g := reader.poll()) is not None:
        values.append(g.value)
    assert values == [1, 2, 3, 99]


def test_writer_rejects_frame_one_alignment_unit_bigger_than_free_space(
    ring: Ring, writer: RingWriter, reader: RingReader
) -> None:
    advance_to(writer, reader, CAPACITY // 2)
    assert writer.offer(DATA, bytes(payload_len_for(CAPACITY // 2)))  # to the end of the data
    assert writer.offer(DATA, bytes(payload_len_for(CAPACITY // 2 - 32)))  # from index 0
    assert ring.stats()["occupancy"] == CAPACITY - 32  # 32 free bytes, contiguous
    assert writer.offer(DATA, bytes(payload_len_for(32) + 1)) is False  # needs 40
    assert ring.stats()["occupancy"] == CAPACITY - 32
    assert writer.offer(DATA, bytes(payload_len_for(32)))  # exactly 32: fills the ring
    assert ring.stats()["occupancy"] == CAPACITY


def test_writer_frame_of_whole_capacity_fits_empty_ring(
    ring: Ring, writer: RingWriter, reader: RingReader
) -> None:
    assert writer.max_payload == CAPACITY - layout.FRAME_HEADER_SIZE
    data = payload(1, writer.max_payload)
    assert writer.offer(DATA, data)
    assert ring.stats()["occupancy"] == CAPACITY
    f = reader.poll()
    assert f is not None and bytes(f.payload) == data
    reader.release(f)
    assert writer.offer(DATA, data)  # and again, at index 0 of the next lap
    g = reader.poll()
    assert g is not None and bytes(g.payload) == data and g.position == CAPACITY


def test_writer_put_with_timeout_on_full_ring_returns_false(
    ring: Ring, writer: RingWriter, reader: RingReader
) -> None:
    assert writer.offer(DATA, bytes(writer.max_payload))
    before = ring.stats()["head"]
    start = time.monotonic()
    assert writer.put(DATA, b"late", timeout=0.05) is False
    assert time.monotonic() - start >= 0.045
    assert ring.stats()["head"] == before


def test_writer_claim_with_timeout_on_full_ring_returns_none(
    writer: RingWriter, reader: RingReader
) -> None:
    assert writer.offer(DATA, bytes(writer.max_payload))
    assert writer.claim(8, timeout=0.02) is None
    assert writer.offer(DATA, b"") is False  # no claim left outstanding by the timeout


def test_reader_read_with_timeout_on_empty_ring_returns_none(reader: RingReader) -> None:
    start = time.monotonic()
    assert reader.read(timeout=0.05) is None
    assert time.monotonic() - start >= 0.045


def test_reader_read_with_frame_ready_returns_it_without_waiting(
    writer: RingWriter, reader: RingReader
) -> None:
    assert writer.offer(DATA, b"now")
    f = reader.read(timeout=0)
    assert f is not None and bytes(f.payload) == b"now"


# -- wrap ------------------------------------------------------------------------------


def test_writer_inserts_padding_on_wrap(ring: Ring, writer: RingWriter, reader: RingReader) -> None:
    advance_to(writer, reader, CAPACITY - 64)
    lap_start = ring.stats()["head"]
    data = payload(7, 100)  # a 120-byte frame: does not fit in the last 64 bytes
    assert writer.offer(DATA, data, value=7)
    assert ring.stats()["head"] == lap_start + 64 + frame_size(100)

    f = reader.poll()
    assert f is not None
    assert (f.value, bytes(f.payload)) == (7, data)
    assert f.position == lap_start + 64  # index 0 of the next lap: past the pad
    assert f.position % CAPACITY == 0
    reader.release(f)
    assert ring.stats()["tail"] == ring.stats()["head"] == f.end


def test_writer_pads_when_exactly_eight_bytes_remain(
    ring: Ring, writer: RingWriter, reader: RingReader
) -> None:
    advance_to(writer, reader, CAPACITY - 8)
    lap_start = ring.stats()["head"]
    assert writer.offer(DATA, b"wrapped", value=8)
    data = ring.segment.data()
    length, kind, _ = layout.PAD_HEADER.unpack_from(data, CAPACITY - 8)
    assert kind == FrameKind.PAD
    assert bytes(data[CAPACITY : CAPACITY + 64]) == bytes(64)  # the slack page is untouched

    f = reader.poll()
    assert f is not None
    assert (f.value, bytes(f.payload), f.position) == (8, b"wrapped", lap_start + 8)
    assert reader.poll() is None
    reader.release(f)
    assert ring.stats()["tail"] == lap_start + 8 + frame_size(7)


def test_writer_frame_ending_exactly_at_end_of_data_needs_no_pad(
    ring: Ring, writer: RingWriter, reader: RingReader
) -> None:
    advance_to(writer, reader, CAPACITY - 64)
    lap_start = ring.stats()["head"]
    assert writer.offer(DATA, payload(3, payload_len_for(64)), value=3)
    assert writer.offer(DATA, b"next", value=4)
    first, second = reader.poll(), reader.poll()
    assert first is not None and second is not None
    assert (first.position, first.end) == (lap_start, lap_start + 64)
    assert second.position == lap_start + 64  # immediately, no pad between
    assert bytes(first.payload) == payload(3, payload_len_for(64))


def test_writer_never_writes_into_the_slack_page(
    ring: Ring, writer: RingWriter, reader: RingReader
) -> None:
    for seq in range(200):
        n = (seq * 37) % 300
        assert writer.offer(DATA, b"\xff" * n, value=seq)
        f = reader.poll()
        assert f is not None and f.value == seq and bytes(f.payload) == b"\xff" * n
        reader.release(f)
    assert bytes(ring.segment.data()[CAPACITY:]) == bytes(layout.SLACK_SIZE)


def test_writer_when_pad_fits_but_frame_does_not_publishes_only_the_pad(
    ring: Ring, writer: RingWriter, reader: RingReader
) -> None:
    advance_to(writer, reader, CAPACITY - 64)
    lap_start = ring.stats()["head"]
    big = payload(5, writer.max_payload)  # needs the whole ring: only after the pad is read
    assert writer.offer(DATA, big) is False
    assert ring.stats()["head"] == lap_start + 64  # the pad alone was published
    assert reader.poll() is None  # the reader skips the pad and gives it back
    assert ring.stats()["tail"] == lap_start + 64
    assert writer.offer(DATA, big, value=5)
    f = reader.poll()
    assert f is not None and bytes(f.payload) == big and f.position == lap_start + 64


def test_reader_release_of_frame_before_unread_pad_keeps_the_pad(
    ring: Ring, writer: RingWriter, reader: RingReader
) -> None:
    advance_to(writer, reader, CAPACITY - 128)
    assert writer.offer(DATA, bytes(payload_len_for(64)), value=1)
    assert writer.offer(DATA, bytes(60), value=2)  # 80 bytes: pads the last 64 first
    first = reader.poll()
    assert first is not None and first.value == 1
    reader.release(first)
    assert ring.stats()["tail"] == first.end  # the pad itself is not read yet
    second = reader.poll()
    assert second is not None and second.value == 2
    assert second.position == first.end + 64
    reader.release(second)
    assert ring.stats()["tail"] == second.end


def test_reader_release_of_last_frame_before_a_consumed_pad_gives_the_pad_back(
    ring: Ring, writer: RingWriter, reader: RingReader
) -> None:
    advance_to(writer, reader, CAPACITY // 2)
    assert writer.offer(DATA, bytes(payload_len_for(96)), value=1)  # ends at index 608
    held = reader.poll()
    assert held is not None
    big = bytes(payload_len_for(704))  # does not fit in the 416 bytes left: wraps
    assert writer.offer(DATA, big) is False  # the pad went out; the frame did not fit
    assert reader.poll() is None  # the reader steps over the pad while holding `held`
    reader.release(held)  # every frame the reader received is released now
    stats = ring.stats()
    assert stats["tail"] == stats["head"], stats  # fails: tail stays at the pad's start
    assert writer.offer(DATA, big)


# -- claim / commit / abort -----------------------------------------------------------


def test_reader_does_not_read_a_frame_part_way_through_writing(
    ring: Ring, writer: RingWriter, reader: RingReader
) -> None:
    claim = writer.try_claim(64, value=11)
    assert claim is not None and len(claim.buf) == 64
    claim.buf[:32] = payload(11, 32)
    assert reader.poll() is None
    assert ring.stats()["head"] == 0
    claim.buf[32:] = payload(12, 32)
    assert reader.poll() is None
    writer.commit(claim)
    f = reader.poll()
    assert f is not None
    assert (f.value, bytes(f.payload)) == (11, payload(11, 32) + payload(12, 32))


def test_writer_abort_publishes_nothing_and_space_is_reused(
    ring: Ring, writer: RingWriter, reader: RingReader
) -> None:
    claim = writer.try_claim(writer.max_payload)
    assert claim is not None
    claim.buf[:5] = b"never"
    writer.abort(claim)
    assert reader.poll() is None
    assert ring.stats()["head"] == 0
    assert writer.offer(DATA, payload(1, writer.max_payload), value=1)  # the whole ring again
    f = reader.poll()
    assert f is not None and f.value == 1 and f.position == 0
    assert bytes(f.payload) == payload(1, writer.max_payload)


def test_writer_abort_of_a_claim_that_is_not_outstanding_is_ignored(writer: RingWriter) -> None:
    claim = writer.try_claim(8)
    assert claim is not None
    writer.commit(claim)
    writer.abort(claim)  # already committed: nothing happens
    assert writer.offer(DATA, b"fine")


def test_writer_claim_buffer_is_released_by_commit(writer: RingWriter) -> None:
    claim = writer.try_claim(8)
    assert claim is not None
    writer.commit(claim)
    with pytest.raises(ValueError):
        claim.buf[0] = 1


def test_writer_commit_with_shorter_length_publishes_only_that_length(
    ring: Ring, writer: RingWriter, reader: RingReader
) -> None:
    claim = writer.try_claim(200)
    assert claim is not None
    claim.buf[:] = payload(1, 200)
    writer.commit(claim, 3)
    assert ring.stats()["head"] == frame_size(3)
    assert writer.offer(DATA, b"next", value=2)
    f, g = reader.poll(), reader.poll()
    assert f is not None and g is not None
    assert bytes(f.payload) == payload(1, 200)[:3]
    assert g.position == f.end == frame_size(3)
    assert bytes(g.payload) == b"next"


def test_writer_commit_with_zero_length_publishes_empty_frame(
    writer: RingWriter, reader: RingReader
) -> None:
    claim = writer.try_claim(100)
    assert claim is not None
    writer.commit(claim, 0)
    f = reader.poll()
    assert f is not None and len(f.payload) == 0 and f.end == layout.FRAME_HEADER_SIZE


@pytest.mark.parametrize("length", [-1, 101])
def test_writer_commit_with_length_outside_claim_raises_ring_error(
    writer: RingWriter, reader: RingReader, length: int
) -> None:
    claim = writer.try_claim(100)
    assert claim is not None
    with pytest.raises(RingError, match=rf"commit length={length} outside the claimed 0\.\.100"):
        writer.commit(claim, length)
    writer.commit(claim)  # the claim is still outstanding and can be committed properly
    f = reader.poll()
    assert f is not None and len(f.payload) == 100


def test_writer_second_outstanding_claim_raises_ring_error(writer: RingWriter) -> None:
    claim = writer.try_claim(8)
    assert claim is not None
    with pytest.raises(RingError, match="already outstanding"):
        writer.try_claim(8)
    with pytest.raises(RingError, match="already outstanding"):
        writer.offer(DATA, b"x")
    writer.abort(claim)
    assert writer.offer(DATA, b"x")


def test_writer_commit_of_a_claim_that_is_not_outstanding_raises_ring_error(
    writer: RingWriter,
) -> None:
    claim = writer.try_claim(8)
    assert claim is not None
    writer.commit(claim)
    with pytest.raises(RingError, match="not the outstanding one"):
        writer.commit(claim)


def test_writer_frame_larger_than_ring_raises_frame_too_large_naming_both_sizes(
    ring: Ring, writer: RingWriter
) -> None:
    too_big = writer.max_payload + 1
    with pytest.raises(FrameTooLargeError) as info:
        writer.try_claim(too_big)
    message = str(info.value)
    assert f"{frame_size(too_big)} bytes" in message
    assert f"payload {too_big} bytes" in message
    assert f"capacity {CAPACITY} bytes" in message
    with pytest.raises(FrameTooLargeError):
        writer.offer(DATA, bytes(too_big))
    with pytest.raises(FrameTooLargeError):
        writer.put(DATA, bytes(too_big), timeout=0)
    assert ring.stats()["head"] == 0
    assert writer.offer(DATA, b"ok")  # no claim left behind


def test_writer_frame_too_large_error_is_a_value_error(writer: RingWriter) -> None:
    with pytest.raises(ValueError):
        writer.try_claim(CAPACITY)


def test_writer_close_aborts_an_outstanding_claim(ring: Ring, reader: RingReader) -> None:
    w = ring.writer()
    claim = w.try_claim(16)
    assert claim is not None
    w.close()
    assert w.closed
    assert reader.poll() is None
    assert ring.stats()["head"] == 0


# -- corrupt frames --------------------------------------------------------------------


def test_reader_frame_with_unknown_kind_raises_corrupt_frame(
    ring: Ring, writer: RingWriter, reader: RingReader
) -> None:
    assert writer.offer(DATA, b"victim")
    tail_index = ring.stats()["tail"] % CAPACITY
    ring.segment.data()[tail_index + 4 : tail_index + 6] = (99).to_bytes(2, "little")
    with pytest.raises(CorruptFrameError, match=r"position 0 \(kind=99"):
        reader.poll()
    with pytest.raises(CorruptFrameError):  # and it stays corrupt: the reader did not advance
        reader.read(timeout=0)


def test_reader_frame_with_length_past_head_raises_corrupt_frame(
    ring: Ring, writer: RingWriter, reader: RingReader
) -> None:
    assert writer.offer(DATA, b"victim")
    ring.segment.data()[0:4] = (500).to_bytes(4, "little")
    with pytest.raises(CorruptFrameError, match=r"length=500"):
        reader.poll()


def test_reader_frame_with_length_past_end_of_data_raises_corrupt_frame(
    ring: Ring, writer: RingWriter, reader: RingReader
) -> None:
    assert writer.offer(DATA, bytes(writer.max_payload))  # head = capacity
    ring.segment.data()[0:4] = (CAPACITY).to_bytes(4, "little")
    with pytest.raises(CorruptFrameError, match=rf"length={CAPACITY}"):
        reader.poll()


# -- release ---------------------------------------------------------------------------


def test_reader_release_of_frame_releases_only_up_to_that_frame(
    ring: Ring, writer: RingWriter, reader: RingReader
) -> None:
    for seq in range(3):
        assert writer.offer(DATA, payload(seq, 40), value=seq)
    frames = poll_n(reader, 3)
    assert ring.stats()["tail"] == 0  # reading alone releases nothing
    reader.release(frames[0])
    assert ring.stats()["tail"] == frames[0].end
    reader.release(frames[0])  # again: no change
    assert ring.stats()["tail"] == frames[0].end
    reader.release(frames[1])
    assert ring.stats()["tail"] == frames[1].end
    assert bytes(frames[2].payload) == payload(2, 40)


def test_reader_release_of_earlier_frame_never_moves_tail_back(
    ring: Ring, writer: RingWriter, reader: RingReader
) -> None:
    assert writer.offer(DATA, b"a")
    assert writer.offer(DATA, b"b")
    first, second = poll_n(reader, 2)
    reader.release(second)
    reader.release(first)
    assert ring.stats()["tail"] == second.end


def test_reader_release_without_frame_releases_everything_read(
    ring: Ring, writer: RingWriter, reader: RingReader
) -> None:
    for seq in range(3):
        assert writer.offer(DATA, payload(seq, 10), value=seq)
    _, last = poll_n(reader, 2)
    reader.release()
    assert ring.stats()["tail"] == last.end
    assert ring.stats()["head"] > last.end  # the unread one stays


def test_reader_held_frame_is_not_overwritten_by_the_writer(
    writer: RingWriter, reader: RingReader
) -> None:
    assert writer.offer(DATA, payload(1, 400), value=1)
    held = reader.poll()
    assert held is not None
    while writer.offer(DATA, payload(2, 100), value=2):
        pass
    assert bytes(held.payload) == payload(1, 400)


# -- header bytes each side touches -----------------------------------------------------


def changed_lines(before: bytes, after: bytes) -> set[int]:
    return {i // layout.LINE for i in range(len(before)) if before[i] != after[i]}


def test_writer_stores_only_into_producer_lines_after_attaching(
    ring: Ring, writer: RingWriter
) -> None:
    header = ring.segment.buf[: layout.HEADER_SIZE]
    before = bytes(header)
    for seq in range(40):
        writer.offer(DATA, payload(seq, 50))
    writer.close()
    producer_line = layout.HEAD_OFF // layout.LINE
    data_wake_line = layout.DATA_SEQ_OFF // layout.LINE
    assert changed_lines(before, bytes(header)) <= {producer_line, data_wake_line}
    header.release()


def test_reader_stores_only_into_consumer_lines_after_attaching(
    ring: Ring, writer: RingWriter, reader: RingReader
) -> None:
    for seq in range(10):
        writer.offer(DATA, payload(seq, 50))
    header = ring.segment.buf[: layout.HEADER_SIZE]
    before = bytes(header)
    while (f := reader.poll()) is not None:
        reader.release(f)
    reader.read(timeout=0.001)
    reader.close()
    consumer_line = layout.TAIL_OFF // layout.LINE
    space_wake_line = layout.SPACE_SEQ_OFF // layout.LINE
    assert changed_lines(before, bytes(header)) <= {consumer_line, space_wake_line}
    header.release()


# -- roles -----------------------------------------------------------------------------


def test_ring_second_open_writer_in_same_process_is_refused(ring: Ring, writer: RingWriter) -> None:
    with pytest.raises(RingRoleError, match="already has an open producer in this process"):
        ring.writer()
    writer.close()
    again = ring.writer()  # once the first one is closed, the role is free again
    try:
        assert ring.stats()["producer_pid"] == os.getpid()
    finally:
        again.close()


def test_ring_second_open_reader_in_same_process_is_refused(ring: Ring, reader: RingReader) -> None:
    with pytest.raises(RingRoleError, match="already has an open consumer in this process"):
        ring.reader()


def test_ring_close_of_ring_leaves_its_open_sides_working(ring: Ring) -> None:
    w, r = ring.writer(), ring.reader()
    ring.close()  # e.g. an exception leaving a `with Ring.create()` block first
    assert w.offer(DATA, b"still here")
    f = r.poll()
    assert f is not None and bytes(f.payload) == b"still here"
    del f
    w.close()
    r.close()


def test_ring_writer_when_live_other_process_is_producer_raises_role_error(ring: Ring) -> None:
    other = os.getppid()
    ring.segment.q[layout.Q_PRODUCER_PID] = other
    with pytest.raises(RingRoleError, match=rf"already has a live producer \(pid {other}\)"):
        ring.writer()
    assert ring.stats()["producer_pid"] == other  # the live producer keeps its claim


def test_ring_reader_when_live_other_process_is_consumer_raises_role_error(ring: Ring) -> None:
    other = os.getppid()
    ring.segment.q[layout.Q_CONSUMER_PID] = other
    with pytest.raises(RingRoleError, match=rf"already has a live consumer \(pid {other}\)"):
        ring.reader()


def test_ring_writer_when_other_producer_closed_takes_over(ring: Ring) -> None:
    ring.segment.q[layout.Q_PRODUCER_PID] = os.getppid()
    ring.segment.i[layout.I_PRODUCER_CLOSED] = 1
    w = ring.writer()
    try:
        stats = ring.stats()
        assert (stats["producer_pid"], stats["producer_closed"]) == (os.getpid(), 0)
    finally:
        w.close()


def test_ring_writer_when_recorded_producer_is_dead_takes_over(ring: Ring) -> None:
    ring.segment.q[layout.Q_PRODUCER_PID] = dead_pid()
    w = ring.writer()
    try:
        assert ring.stats()["producer_pid"] == os.getpid()
    finally:
        w.close()


def test_ring_writer_refused_for_live_producer_leaks_no_file_descriptor(ring: Ring) -> None:
    ring.segment.q[layout.Q_PRODUCER_PID] = os.getppid()
    gc.collect()  # earlier tests' unclosed sides close their pidfds when collected
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(5):
        with pytest.raises(RingRoleError):
            ring.writer()
    assert len(os.listdir("/proc/self/fd")) == before


# -- closing ---------------------------------------------------------------------------


@pytest.mark.timeout(20)
def test_reader_read_after_close_on_empty_ring_raises_ring_closed(reader: RingReader) -> None:
    reader.close()
    assert reader.closed
    with pytest.raises(RingClosedError, match="consumer side"):
        reader.read(timeout=0.01)
    with pytest.raises(RingClosedError):
        reader.read()  # no timeout: must raise, not hang


def test_reader_read_after_close_with_frames_pending_raises_ring_closed(
    writer: RingWriter, reader: RingReader
) -> None:
    assert writer.offer(DATA, b"pending")
    reader.close()
    with pytest.raises(RingClosedError):
        reader.read(timeout=0)


def test_writer_after_close_raises_ring_closed(ring: Ring, writer: RingWriter) -> None:
    writer.close()
    writer.close()  # idempotent
    with pytest.raises(RingClosedError, match="producer side"):
        writer.offer(DATA, b"x")
    with pytest.raises(RingClosedError):
        writer.put(DATA, b"x", timeout=0)
    assert ring.stats()["producer_closed"] == 1


@pytest.mark.timeout(20)
def test_reader_when_producer_closed_without_eos_gets_frames_then_peer_closed(
    ring: Ring, writer: RingWriter, reader: RingReader
) -> None:
    for seq in range(3):
        assert writer.offer(DATA, payload(seq, 20), value=seq)
    writer.close()
    for seq in range(3):
        f = reader.read(timeout=1)
        assert f is not None and f.value == seq and bytes(f.payload) == payload(seq, 20)
        reader.release(f)
    with pytest.raises(PeerClosedError, match="without end of stream"):
        reader.read(timeout=1)
    with pytest.raises(PeerClosedError):
        reader.read()  # no timeout: raises rather than waiting forever


def test_reader_when_producer_wrote_eos_and_closed_reads_eos(
    writer: RingWriter, reader: RingReader
) -> None:
    assert writer.offer(DATA, b"last")
    assert writer.write_eos()
    writer.close()
    first, second = reader.read(timeout=1), reader.read(timeout=1)
    assert first is not None and second is not None
    assert (first.kind, second.kind) == (DATA, FrameKind.EOS)


@pytest.mark.timeout(20)
def test_writer_put_on_full_ring_whose_consumer_closed_raises_peer_closed(
    writer: RingWriter, reader: RingReader
) -> None:
    assert writer.offer(DATA, bytes(writer.max_payload))
    reader.close()
    with pytest.raises(PeerClosedError, match="consumer closed"):
        writer.put(DATA, b"x", timeout=1)


def test_writer_offer_after_consumer_closed_still_fills_free_space(
    writer: RingWriter, reader: RingReader
) -> None:
    reader.close()
    assert writer.offer(DATA, b"x")  # a status-returning call: it never waits, never raises


# -- waiting across threads ------------------------------------------------------------


def run_later(delay: float, fn: Callable[[], object]) -> threading.Thread:
    def body() -> None:
        time.sleep(delay)
        fn()

    t = threading.Thread(target=body, daemon=True)
    t.start()
    return t


@pytest.mark.timeout(20)
def test_reader_read_wakes_when_a_frame_is_written_while_waiting(
    writer: RingWriter, reader: RingReader
) -> None:
    t = run_later(0.05, lambda: writer.offer(DATA, b"woken", value=1))
    f = reader.read(timeout=5)
    t.join(5)
    assert f is not None and bytes(f.payload) == b"woken"


@pytest.mark.timeout(20)
def test_writer_put_wakes_when_space_is_released_while_waiting(
    writer: RingWriter, reader: RingReader
) -> None:
    assert writer.offer(DATA, bytes(writer.max_payload), value=0)

    def drain() -> None:
        reader.release(reader.poll())

    t = run_later(0.05, drain)
    assert writer.put(DATA, b"second", value=1, timeout=5)
    t.join(5)
    f = reader.poll()
    assert f is not None and (f.value, bytes(f.payload)) == (1, b"second")


@pytest.mark.timeout(20)
def test_reader_read_when_only_a_pad_arrives_keeps_waiting_for_the_frame(
    writer: RingWriter, reader: RingReader
) -> None:
    advance_to(writer, reader, CAPACITY - 64)
    big = payload(9, writer.max_payload)
    outcome: list[bool] = []

    def produce() -> None:
        outcome.append(writer.offer(DATA, big, value=9))  # publishes only the pad
        time.sleep(0.1)
        outcome.append(writer.offer(DATA, big, value=9))  # the reader gave the pad back

    t = run_later(0.05, produce)
    f = reader.read(timeout=5)
    t.join(5)
    assert outcome == [False, True]
    assert f is not None and f.value == 9 and bytes(f.payload) == big


def test_ring_attach_in_same_process_shares_frames(ring: Ring, writer: RingWriter) -> None:
    with Ring.attach(ring.name, CAPACITY) as other, other.reader() as r:
        assert writer.offer(DATA, b"shared", value=3)
        f = r.poll()
        assert f is not None and (f.value, bytes(f.payload)) == (3, b"shared")
        r.release(f)
        assert ring.stats()["tail"] == f.end
        assert ring.stats()["consumer_pid"] == os.getpid()
