"""The segment and frame layout: which bytes each side owns, and how frames are sized."""

from __future__ import annotations

import itertools
import mmap

import pytest

from engine.shm import layout
from engine.shm.layout import FrameKind

# Hot fields: stored on every frame / every wait by one side only.
PRODUCER_WRITTEN = {
    "HEAD_OFF": (layout.HEAD_OFF, 8),
    "PRODUCER_WAITING_OFF": (layout.PRODUCER_WAITING_OFF, 4),
    "PRODUCER_CLOSED_OFF": (layout.PRODUCER_CLOSED_OFF, 4),
    "PRODUCER_HEARTBEAT_OFF": (layout.PRODUCER_HEARTBEAT_OFF, 8),
    "DATA_SEQ_OFF": (layout.DATA_SEQ_OFF, 4),
}
CONSUMER_WRITTEN = {
    "TAIL_OFF": (layout.TAIL_OFF, 8),
    "CONSUMER_WAITING_OFF": (layout.CONSUMER_WAITING_OFF, 4),
    "CONSUMER_CLOSED_OFF": (layout.CONSUMER_CLOSED_OFF, 4),
    "CONSUMER_HEARTBEAT_OFF": (layout.CONSUMER_HEARTBEAT_OFF, 8),
    "SPACE_SEQ_OFF": (layout.SPACE_SEQ_OFF, 4),
}
# Written once, by the owner at create or by a side when it attaches.
SETUP_FIELDS = {
    "MAGIC_OFF": (layout.MAGIC_OFF, 8),
    "VERSION_OFF": (layout.VERSION_OFF, 4),
    "HEADER_SIZE_OFF": (layout.HEADER_SIZE_OFF, 4),
    "CAPACITY_OFF": (layout.CAPACITY_OFF, 8),
    "OWNER_PID_OFF": (layout.OWNER_PID_OFF, 8),
    "PRODUCER_PID_OFF": (layout.PRODUCER_PID_OFF, 8),
    "CONSUMER_PID_OFF": (layout.CONSUMER_PID_OFF, 8),
    "CREATED_NS_OFF": (layout.CREATED_NS_OFF, 8),
}
ALL_FIELDS = {**SETUP_FIELDS, **PRODUCER_WRITTEN, **CONSUMER_WRITTEN}


def line_of(offset: int) -> int:
    return offset // layout.LINE


def lines_spanned(offset: int, width: int) -> set[int]:
    return {line_of(offset), line_of(offset + width - 1)}


def test_layout_line_is_two_cache_lines() -> None:
    assert layout.LINE == 128


def test_layout_head_tail_and_wake_words_each_have_their_own_line() -> None:
    lines = [
        line_of(layout.HEAD_OFF),
        line_of(layout.TAIL_OFF),
        line_of(layout.DATA_SEQ_OFF),
        line_of(layout.SPACE_SEQ_OFF),
    ]
    assert len(set(lines)) == 4
    assert line_of(layout.MAGIC_OFF) not in lines  # nor with the setup fields


def test_layout_producer_and_consumer_written_fields_never_share_a_line() -> None:
    producer_lines = set().union(*(lines_spanned(o, w) for o, w in PRODUCER_WRITTEN.values()))
    consumer_lines = set().union(*(lines_spanned(o, w) for o, w in CONSUMER_WRITTEN.values()))
    setup_lines = set().union(*(lines_spanned(o, w) for o, w in SETUP_FIELDS.values()))
    assert producer_lines.isdisjoint(consumer_lines)
    assert producer_lines.isdisjoint(setup_lines)
    assert consumer_lines.isdisjoint(setup_lines)


@pytest.mark.parametrize("name", sorted(ALL_FIELDS))
def test_layout_field_is_aligned_to_its_width_so_loads_are_atomic(name: str) -> None:
    offset, width = ALL_FIELDS[name]
    assert offset % width == 0
    assert len(lines_spanned(offset, width)) == 1


def test_layout_fields_do_not_overlap() -> None:
    spans = sorted(ALL_FIELDS.values())
    for (a, wa), (b, _) in itertools.pairwise(spans):
        assert a + wa <= b, f"field at {a} (width {wa}) overlaps the one at {b}"


def test_layout_header_fits_in_header_size() -> None:
    end = max(offset + width for offset, width in ALL_FIELDS.values())
    assert end <= layout.HEADER_SIZE
    assert layout.SPACE_SEQ_OFF + layout.LINE <= layout.HEADER_SIZE  # the whole last line


def test_layout_header_and_slack_are_whole_pages() -> None:
    assert layout.HEADER_SIZE % mmap.PAGESIZE == 0
    assert layout.SLACK_SIZE % mmap.PAGESIZE == 0
    assert layout.SLACK_SIZE >= layout.FRAME_HEADER_SIZE  # a header unpacks at any index


def test_layout_cell_indexes_match_byte_offsets() -> None:
    assert layout.Q_MAGIC * 8 == layout.MAGIC_OFF
    assert layout.Q_CAPACITY * 8 == layout.CAPACITY_OFF
    assert layout.Q_OWNER_PID * 8 == layout.OWNER_PID_OFF
    assert layout.Q_PRODUCER_PID * 8 == layout.PRODUCER_PID_OFF
    assert layout.Q_CONSUMER_PID * 8 == layout.CONSUMER_PID_OFF
    assert layout.Q_CREATED_NS * 8 == layout.CREATED_NS_OFF
    assert layout.Q_HEAD * 8 == layout.HEAD_OFF
    assert layout.Q_TAIL * 8 == layout.TAIL_OFF
    assert layout.Q_PRODUCER_HEARTBEAT * 8 == layout.PRODUCER_HEARTBEAT_OFF
    assert layout.Q_CONSUMER_HEARTBEAT * 8 == layout.CONSUMER_HEARTBEAT_OFF
    assert layout.I_VERSION * 4 == layout.VERSION_OFF
    assert layout.I_HEADER_SIZE * 4 == layout.HEADER_SIZE_OFF
    assert layout.I_PRODUCER_WAITING * 4 == layout.PRODUCER_WAITING_OFF
    assert layout.I_PRODUCER_CLOSED * 4 == layout.PRODUCER_CLOSED_OFF
    assert layout.I_CONSUMER_WAITING * 4 == layout.CONSUMER_WAITING_OFF
    assert layout.I_CONSUMER_CLOSED * 4 == layout.CONSUMER_CLOSED_OFF
    assert layout.I_DATA_SEQ * 4 == layout.DATA_SEQ_OFF
    assert layout.I_SPACE_SEQ * 4 == layout.SPACE_SEQ_OFF


def test_layout_frame_header_is_sixteen_bytes_and_pad_header_eight() -> None:
    assert layout.FRAME_HEADER.size == layout.FRAME_HEADER_SIZE == 16
    assert layout.PAD_HEADER.size == layout.ALIGN == 8
    # The PAD header is the frame header's first word: same encoding of length/kind/flags.
    full = layout.FRAME_HEADER.pack(123, FrameKind.PAD, 7, -1)
    assert layout.PAD_HEADER.unpack(full[:8]) == (123, FrameKind.PAD, 7)


def test_layout_frame_size_is_header_plus_payload_rounded_up_to_eight() -> None:
    for length in [*range(0, 70), 1000, 4095, 4096, (1 << 20) - 17]:
        size = layout.frame_size(length)
        assert size % layout.ALIGN == 0, length
        assert layout.FRAME_HEADER_SIZE + length <= size < layout.FRAME_HEADER_SIZE + length + 8


def test_layout_frame_size_of_empty_payload_is_header_only() -> None:
    assert layout.frame_size(0) == 16
    assert layout.frame_size(1) == 24
    assert layout.frame_size(8) == 24
    assert layout.frame_size(9) == 32


def test_layout_segment_size_is_header_data_and_slack() -> None:
    assert layout.segment_size(1024) == layout.HEADER_SIZE + 1024 + layout.SLACK_SIZE


def test_layout_magic_spells_ringstream_ring() -> None:
    assert layout.MAGIC.to_bytes(8, "little") == b"RSRING\x00\x01"


def test_layout_frame_kinds_are_stable_wire_values() -> None:
    assert {k.name: int(k) for k in FrameKind} == {
        "PAD": 0,
        "SCHEMA": 1,
        "DATA": 2,
        "WATERMARK": 3,
        "BARRIER": 4,
        "EOS": 5,
    }
    assert layout.MAX_KIND == FrameKind.EOS
