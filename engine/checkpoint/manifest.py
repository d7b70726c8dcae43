"""The manifest: the durable record of one completed epoch, and its file format.

A manifest file is::

    0          8        12       16                16 + L            16 + L + 32
    +----------+--------+--------+-----------------+-----------------+
    | magic    | version| length | payload         | sha256(payload) |
    | 8 bytes  | u32 LE | u32 LE | L bytes (JSON)  | 32 bytes        |
    +----------+--------+--------+-----------------+-----------------+

``magic`` is ``b"RSMANIF\\x00"``; ``version`` is ``FORMAT_VERSION``; the
payload is the msgspec JSON encoding of a ``Manifest`` (whose own
``format_version`` must equal the header's). ``decode`` checks, in this order,
the header's size, the magic, the version, the length against the bytes there
are (truncation or trailing bytes), the checksum, and finally the payload's
shape; any failure is a ``CorruptCheckpointError`` naming the file and what is
wrong. Every strict prefix of a valid file fails the length check.

A manifest does not hold state: it names one state file per worker and per
sink with a final stage (``StateFileRef``: whose it is, a path relative to the
checkpoint directory, its size and checksum), which ``engine.checkpoint.state``
writes and verifies.

Version 1 (before ringstream 0.2) numbered sink state files as negative
workers, in a field named ``crc32c_or_sha256``; ``decode`` still reads it.

``sink_status`` is ``"pending"`` when the manifest is written (the point of no
return: the epoch *will* be committed) and ``"committed"`` once every sink
acknowledged ``commit_epoch``. A restart re-drives ``commit_epoch`` for a
pending manifest; doing so for a committed one is harmless (commits are
idempotent).
"""

from __future__ import annotations

import hashlib
import struct
from typing import Any, Literal

import msgspec

from engine.errors import CheckpointError, CorruptCheckpointError

MAGIC = b"RSMANIF\x00"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
_HEADER = struct.Struct("<8sII")  # magic, version, payload length
HEADER_SIZE = _HEADER.size  # 16
CHECKSUM_SIZE = 32  # sha256

SinkStatus = Literal["pending", "committed"]


Role = Literal["worker", "sink"]


class StateFileRef(msgspec.Struct, frozen=True):
    """One state file of one epoch: worker ``index``'s, or sink ``index``'s final stage.

    ``path`` is relative to the checkpoint directory (``epoch-…/worker-0003.state``);
    ``checksum`` is ``"sha256:<hex digest>"`` of the file's bytes.
    """

    index: int
    path: str
    bytes: int
    checksum: str
    role: Role = "worker"

    @property
    def owner(self) -> str:
        """``worker 3`` or ``sink 0``: for messages."""
        return f"{self.role} {self.index}"


class Manifest(msgspec.Struct, kw_only=True):
    """The durable record of one completed epoch (see the module docstring).

    ``source_offsets``: source name -> one entry per instance: ``position`` (the
    connector's), ``finished``, ``exhausted`` and, where the source has an event
    time, ``watermark`` (``SourceWatermark.state``: restored with the position, so
    a restarted instance that has nothing left to read still lets windows close).
    ``sink_committables``: sink name -> one committable (or None) per instance.
    ``watermarks``: e.g. ``"worker 0"`` -> watermark in ms.
    ``metrics``: flat numbers about the checkpoint (``duration_ms``,
    ``alignment_ms``, ``state_bytes``, ...).
    """

    format_version: int = FORMAT_VERSION
    pipeline_id: str
    pipeline_hash: str
    epoch: int
    created_unix_s: float
    source_offsets: dict[str, list[dict[str, Any]]] = msgspec.field(default_factory=dict)
    state_files: list[StateFileRef] = msgspec.field(default_factory=list)
    sink_committables: dict[str, list[dict[str, Any] | None]] = msgspec.field(default_factory=dict)
    sink_status: SinkStatus = "pending"
    watermarks: dict[str, int] = msgspec.field(default_factory=dict)
    metrics: dict[str, float] = msgspec.field(default_factory=dict)


    @property
    def complete(self) -> bool:
        """Every source instance exhausted: a bounded run that finished."""
        offsets = self.source_offsets
        return bool(offsets) and all(o.get("exhausted") for inst in offsets.values() for o in inst)

    def workers(self) -> int:
        """How many workers wrote state for this epoch (0 when none did)."""
        return len({r.index for r in self.state_files if r.role == "worker"})


class _StateFileRefV1(msgspec.Struct, frozen=True):
    worker: int  # sinks as -(1 + index)
    path: str
    bytes: int
    crc32c_or_sha256: str

    def upgrade(self) -> StateFileRef:
        role: Role = "worker" if self.worker >= 0 else "sink"
        index = self.worker if self.worker >= 0 else -1 - self.worker
        return StateFileRef(index, self.path, self.bytes, self.crc32c_or_sha256, role)


class _ManifestV1(Manifest, kw_only=True):
    worker_states: list[_StateFileRefV1] = msgspec.field(default_factory=list)

    def upgrade(self) -> Manifest:
        fields = {f: getattr(self, f) for f in Manifest.__struct_fields__}
        fields["state_files"] = [r.upgrade() for r in self.worker_states]
        return Manifest(**fields)


_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Manifest)
_decoder_v1 = msgspec.json.Decoder(_ManifestV1)


def encode(m: Manifest) -> bytes:
    """The bytes of a manifest file holding ``m``."""
    if m.format_version != FORMAT_VERSION:
        raise CheckpointError(
            f"manifest format_version={m.format_version}; this build writes {FORMAT_VERSION}"
        )
    payload = _encoder.encode(m)
    header = _HEADER.pack(MAGIC, FORMAT_VERSION, len(payload))
    return header + payload + hashlib.sha256(payload).digest()


def decode(data: bytes | memoryview, source_name: str) -> Manifest:
    """Parse a manifest file's bytes; ``source_name`` (the file) is named in every error."""
    data = memoryview(data)

    def corrupt(reason: str) -> CorruptCheckpointError:
        return CorruptCheckpointError(f"manifest {source_name}: {reason}")

    if len(data) < HEADER_SIZE:
        raise corrupt(f"truncated: {len(data)} bytes, shorter than the {HEADER_SIZE}-byte header")
    magic, version, length = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise corrupt(f"bad magic {bytes(magic)!r}, expected {MAGIC!r}")
    if version not in READABLE_VERSIONS:
        raise corrupt(
            f"format version {version} is not supported (this build reads "
            f"{', '.join(map(str, READABLE_VERSIONS))})"
        )
    expected = HEADER_SIZE + length + CHECKSUM_SIZE
    if len(data) < expected:
        raise corrupt(f"truncated: {len(data)} bytes, the header announces {expected}")
    if len(data) > expected:
        raise corrupt(f"{len(data) - expected} unexpected bytes after the end ({expected} bytes)")
    payload = data[HEADER_SIZE : HEADER_SIZE + length]
    digest = bytes(data[HEADER_SIZE + length :])
    actual = hashlib.sha256(payload).digest()
    if actual != digest:
        raise corrupt(
            f"checksum mismatch: sha256 of the payload is {actual.hex()[:16]}…, "
            f"the file records {digest.hex()[:16]}…"
        )
    try:
        m = _decoder.decode(payload) if version == FORMAT_VERSION else _decoder_v1.decode(payload)
    except msgspec.DecodeError as e:  # a valid checksum over a payload we cannot read
        raise corrupt(f"payload is not a manifest: {e}") from e
    if m.format_version != version:
        raise corrupt(f"payload format_version={m.format_version} but header version {version}")
    if isinstance(m, _ManifestV1):
        m = msgspec.structs.replace(m.upgrade(), format_version=FORMAT_VERSION)
    return m
