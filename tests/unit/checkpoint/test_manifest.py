"""Manifest file format: round trip, and every kind of damage is a CorruptCheckpointError."""

from __future__ import annotations

import struct

import pytest

from engine.checkpoint import manifest
from engine.checkpoint.manifest import Manifest, StateFileRef, decode, encode
from engine.errors import CorruptCheckpointError


def sample(epoch: int = 7) -> Manifest:
    return Manifest(
        pipeline_id="p1",
        pipeline_hash="abc123",
        epoch=epoch,
        created_unix_s=1_700_000_000.25,
        source_offsets={"gen": [{"batch": 10}, {"batch": 11}]},
        state_files=[StateFileRef(0, "epoch-x/worker-0000.state", 123, "sha256:00ff")],
        sink_committables={"out": [{"files": ["part-1-0.parquet"], "rows": 5}, None]},
        watermarks={"worker 0": 1_000},
        metrics={"duration_ms": 12.5},
    )


def test_manifest_encode_decode_round_trips_every_field() -> None:
    m = sample()
    assert decode(encode(m), "m") == m
    assert decode(encode(m), "m").sink_status == "pending"


def test_manifest_file_starts_with_magic_and_version() -> None:
    data = encode(sample())
    assert data[:8] == b"RSMANIF\x00"
    version, length = struct.unpack_from("<II", data, 8)
    assert version == manifest.FORMAT_VERSION
    assert len(data) == 16 + length + 32


def test_manifest_truncated_at_every_byte_raises_corrupt() -> None:
    data = encode(sample())
    for n in range(len(data)):
        with pytest.raises(CorruptCheckpointError, match=r"epoch-7\.manifest: .*truncated"):
            decode(data[:n], "epoch-7.manifest")


def test_manifest_bit_flip_anywhere_in_payload_or_checksum_raises_checksum_error() -> None:
    data = encode(sample())
    for pos in range(16, len(data)):
        flipped = bytearray(data)
        flipped[pos] ^= 0x10
        with pytest.raises(CorruptCheckpointError, match="checksum mismatch"):
            decode(bytes(flipped), "m")


def test_manifest_wrong_magic_raises_corrupt_naming_magic() -> None:
    data = b"XXMANIF\x00" + encode(sample())[8:]
    with pytest.raises(CorruptCheckpointError, match="f: bad magic"):
        decode(data, "f")


def test_manifest_unknown_version_raises_corrupt_naming_version() -> None:
    data = bytearray(encode(sample()))
    struct.pack_into("<I", data, 8, 99)
    with pytest.raises(CorruptCheckpointError, match="format version 99 is not supported"):
        decode(bytes(data), "f")


def test_manifest_trailing_bytes_raise_corrupt() -> None:
    with pytest.raises(CorruptCheckpointError, match="unexpected bytes"):
        decode(encode(sample()) + b"\x00", "f")


def test_manifest_valid_checksum_over_non_manifest_payload_raises_corrupt() -> None:
    import hashlib

    payload = b'{"epoch": "seven"}'
    data = struct.pack("<8sII", b"RSMANIF\x00", 1, len(payload)) + payload
    data += hashlib.sha256(payload).digest()
    with pytest.raises(CorruptCheckpointError, match="payload is not a manifest"):
        decode(data, "f")


def test_manifest_bad_sink_status_is_rejected_on_decode() -> None:
    import hashlib

    import msgspec

    raw = msgspec.json.decode(msgspec.json.encode(sample()))
    raw["sink_status"] = "maybe"
    payload = msgspec.json.encode(raw)
    data = struct.pack("<8sII", b"RSMANIF\x00", 1, len(payload)) + payload
    data += hashlib.sha256(payload).digest()
    with pytest.raises(CorruptCheckpointError, match="sink_status"):
        decode(data, "f")
