"""Control messages between the coordinator and its children: small msgspec structs.

They travel as msgpack bytes over a ``multiprocess`` Pipe (``send_bytes`` /
``recv_bytes``): never pickle from a peer. Child → coordinator: ``Ready`` (after
pinning, with the affinity the kernel reports), ``Failed`` (with the
traceback), ``Done`` (with final figures). Coordinator → source: ``Stop``
(drain: stop polling, send end-of-stream).
"""

from __future__ import annotations

import msgspec


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


class Done(msgspec.Struct, tag=True):
    role: str
    index: int
    pid: int


class Stop(msgspec.Struct, tag=True):
    pass


Message = Ready | Failed | Done | Stop
_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Message)


def send(conn, msg: Message) -> None:  # type: ignore[no-untyped-def]
    conn.send_bytes(_encoder.encode(msg))


def recv(conn) -> Message:  # type: ignore[no-untyped-def]
    return _decoder.decode(conn.recv_bytes())
