"""Control messages between the coordinator and its children: small msgspec structs.

They travel as msgpack bytes over a ``multiprocess`` Pipe (``send_bytes`` /
``recv_bytes``): never pickle from a peer. Child → coordinator: ``Ready`` (after
pinning, with the affinity the kernel reports), ``Failed`` (with the
traceback), ``Done`` (with final figures), ``Checkpointed`` (its part of epoch
N: a source's offset, a worker's state file, a sink's committable),
``Committed`` (a sink made epoch N visible), ``RequestCheckpoint`` (a source
asks for an epoch now), ``Health`` (a connector changed health state),
``Metrics`` (a connector's numbers, about once a second).
Coordinator → child: ``Stop`` (drain: stop polling, send end-of-stream),
``Barrier`` (source: record your offset, inject BARRIER(N)), ``Commit`` (sink:
commit epoch N), ``NotifyCommitted`` (source: epoch N is durable).
"""

from __future__ import annotations

import msgspec

from engine.checkpoint.manifest import StateFileRef


class Ready(msgspec.Struct, tag=True):
    role: str
    index: int
    pid: int
    cpu: int
    affinity: list[int]


class Failed(msgspec.Struct, tag=True):
    role: str
    index: int
    pid: int
    error: str
    traceback: str
    permanent: bool = False  # the same input would fail again: do not restart the run


class Done(msgspec.Struct, tag=True):
    role: str
    index: int
    pid: int


class Stop(msgspec.Struct, tag=True):
    pass


class Checkpointed(msgspec.Struct, tag=True):
    """A child's part of epoch N (steps 2, 3 and 4 of ``engine.epochs``)."""

    epoch: int
    role: str
    index: int
    position: dict | None = None  # source: its offset after the last row of the epoch
    finished: bool = False  # source: its last report (it ends; no barrier follows)
    exhausted: bool = False  # source: a bounded source returned its last row
    state: StateFileRef | None = None  # worker, sink with a final stage: its state file
    committable: dict | None = None  # sink: what pre_commit staged
    watermark: int | None = None
    marks: dict | None = None  # source: its watermark's state (``SourceWatermark.state``)
    metrics: dict[str, float] = {}


class Committed(msgspec.Struct, tag=True):
    epoch: int
    role: str
    index: int


class RequestCheckpoint(msgspec.Struct, tag=True):
    role: str
    index: int


class Health(msgspec.Struct, tag=True):
    role: str
    index: int
    state: str
    error: str = ""


class Metrics(msgspec.Struct, tag=True):
    """A connector's numbers (its own ``metrics()`` and the runtime's), sent now and then."""

    role: str
    index: int
    values: dict[str, float]
    latency: list[int] = []  # poll (source) or write (sink) latency: ring1.metrics buckets


class Barrier(msgspec.Struct, tag=True):
    epoch: int


class Commit(msgspec.Struct, tag=True):
    epoch: int
    committable: dict | None = None


class NotifyCommitted(msgspec.Struct, tag=True):
    epoch: int


class SinkRestore(msgspec.Struct):
    """What a sink starts from after a restart: manifest N's epoch, committable, state;
    ``committed`` when every sink confirmed epoch N before (nothing to re-drive)."""

    epoch: int
    committable: dict | None = None
    state: StateFileRef | None = None
    committed: bool = False


Message = (
    Ready
    | Failed
    | Done
    | Stop
    | Checkpointed
    | Committed
    | RequestCheckpoint
    | Health
    | Metrics
    | Barrier
    | Commit
    | NotifyCommitted
)
_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Message)


def send(conn, msg: Message) -> None:  # type: ignore[no-untyped-def]
    conn.send_bytes(_encoder.encode(msg))


def recv(conn) -> Message:  # type: ignore[no-untyped-def]
    return _decoder.decode(conn.recv_bytes())
