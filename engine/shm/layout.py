"""Byte layout of a ring segment: every offset has a name here, and only here.

A segment is one POSIX shared-memory object::

    0        8        16       24       32       40       48       56      64
    +--------+----+----+--------+--------+--------+--------+--------+--------+
    | magic  |ver |hdr | capacity        | owner  | prod.  | cons.  |created |
    | u64    |u32 |u32 | u64             | pid    | pid    | pid    | ns     |
    +--------+----+----+--------+--------+--------+--------+--------+--------+
     ... reserved up to 128
    128  PRODUCER LINE (written by the producer only)
         head u64 | producer_waiting u32 | producer_closed u32 | producer_heartbeat u64
    256  CONSUMER LINE (written by the consumer only)
         tail u64 | consumer_waiting u32 | consumer_closed u32 | consumer_heartbeat u64
    384  DATA WAKE LINE:  data_seq u32  (producer bumps it; the consumer parks on it)
    512  SPACE WAKE LINE: space_seq u32 (consumer bumps it; the producer parks on it)
     ... reserved up to HEADER_SIZE (one page)
    HEADER_SIZE                     data: ``capacity`` bytes, a power of two
    HEADER_SIZE + capacity          slack: one page, never holds frame bytes

Each counter written by one side sits on its own 128-byte line (two 64-byte
cache lines, so the adjacent-line prefetcher does not pair them either).
``head`` and ``tail`` are positions: monotonic byte counts that never wrap;
``index = position & (capacity - 1)``.

A frame is a 16-byte header then the payload, padded to 8 bytes::

    0        4    6    8                 16
    +--------+----+----+-----------------+------------------ ... -+
    | length |kind|flag| value i64       | payload (length bytes) |
    +--------+----+----+-----------------+------------------ ... -+

``length`` is the payload length; the frame occupies
``align8(FRAME_HEADER + length)`` bytes. ``value`` carries the epoch of a
BARRIER, the event time of a WATERMARK, or anything the producer wants. A PAD
frame runs from its index to the end of the data area; it may be as short as
8 bytes, so only its first word (length, kind, flags) is ever written. The
slack page after the data area lets a reader unpack a full header at any
8-aligned index without a bounds check.
"""

from __future__ import annotations

import enum
import struct

MAGIC = int.from_bytes(b"RSRING\x00\x01", "little")
VERSION = 1
HEADER_SIZE = 4096
SLACK_SIZE = 4096
LINE = 128
ALIGN = 8

# --- byte offsets in the segment header ------------------------------------
MAGIC_OFF = 0  # u64
VERSION_OFF = 8  # u32
HEADER_SIZE_OFF = 12  # u32
CAPACITY_OFF = 16  # u64
OWNER_PID_OFF = 24  # u64
PRODUCER_PID_OFF = 32  # u64
CONSUMER_PID_OFF = 40  # u64
CREATED_NS_OFF = 48  # u64

PRODUCER_LINE = 1 * LINE
HEAD_OFF = PRODUCER_LINE + 0  # u64
PRODUCER_WAITING_OFF = PRODUCER_LINE + 8  # u32
PRODUCER_CLOSED_OFF = PRODUCER_LINE + 12  # u32
PRODUCER_HEARTBEAT_OFF = PRODUCER_LINE + 16  # u64

CONSUMER_LINE = 2 * LINE
TAIL_OFF = CONSUMER_LINE + 0  # u64
CONSUMER_WAITING_OFF = CONSUMER_LINE + 8  # u32
CONSUMER_CLOSED_OFF = CONSUMER_LINE + 12  # u32
CONSUMER_HEARTBEAT_OFF = CONSUMER_LINE + 16  # u64

DATA_SEQ_OFF = 3 * LINE  # u32 futex word
SPACE_SEQ_OFF = 4 * LINE  # u32 futex word

# Indexes into the header viewed as u64 / u32 cells (offset // 8, offset // 4).
Q_MAGIC = MAGIC_OFF // 8
Q_CAPACITY = CAPACITY_OFF // 8
Q_OWNER_PID = OWNER_PID_OFF // 8
Q_PRODUCER_PID = PRODUCER_PID_OFF // 8
Q_CONSUMER_PID = CONSUMER_PID_OFF // 8
Q_CREATED_NS = CREATED_NS_OFF // 8
Q_HEAD = HEAD_OFF // 8
Q_TAIL = TAIL_OFF // 8
Q_PRODUCER_HEARTBEAT = PRODUCER_HEARTBEAT_OFF // 8
Q_CONSUMER_HEARTBEAT = CONSUMER_HEARTBEAT_OFF // 8
I_VERSION = VERSION_OFF // 4
I_HEADER_SIZE = HEADER_SIZE_OFF // 4
I_PRODUCER_WAITING = PRODUCER_WAITING_OFF // 4
I_PRODUCER_CLOSED = PRODUCER_CLOSED_OFF // 4
I_CONSUMER_WAITING = CONSUMER_WAITING_OFF // 4
I_CONSUMER_CLOSED = CONSUMER_CLOSED_OFF // 4
I_DATA_SEQ = DATA_SEQ_OFF // 4
I_SPACE_SEQ = SPACE_SEQ_OFF // 4

# --- frames ----------------------------------------------------------------
FRAME_HEADER = struct.Struct("<IHHq")
FRAME_HEADER_SIZE = FRAME_HEADER.size  # 16
PAD_HEADER = struct.Struct("<IHH")  # the first word only: a PAD may be 8 bytes long
MAX_PAYLOAD = 2**32 - 1  # the header's length field is a u32
MIN_CAPACITY = 1024
MAX_CAPACITY = 1 << 40


class FrameKind(enum.IntEnum):
    """What a frame carries. PAD is internal: readers never return it."""

    PAD = 0
    SCHEMA = 1  # one Arrow IPC schema message
    DATA = 2  # one Arrow IPC record-batch message (or raw bytes)
    WATERMARK = 3  # value = event-time lower bound
    BARRIER = 4  # value = epoch
    EOS = 5  # end of stream: the producer writes nothing after it


MAX_KIND = max(FrameKind)


def frame_size(payload_length: int) -> int:
    """Bytes a frame with ``payload_length`` bytes of payload occupies in the ring."""
    return (FRAME_HEADER_SIZE + payload_length + ALIGN - 1) & ~(ALIGN - 1)


def segment_size(capacity: int) -> int:
    """Bytes of the whole shared-memory object for a ring of ``capacity``."""
    return HEADER_SIZE + capacity + SLACK_SIZE
