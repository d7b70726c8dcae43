"""Attach a user's own process to a running engine: push rows in, subscribe to rows out.

::

    from engine import connect

    with connect(".ringstream/run").source("trades") as src:   # a [[sources]] type "push"
        src.push_arrow(batch)                                    # or push_pylist(rows)

    for batch in connect(".ringstream/run").subscribe("alerts"):  # a [[sinks]] type "subscribe"
        ...

Rendezvous: the engine's push source (``connectors.push``) and subscribe sink
(``connectors.subscribe``) listen on Unix sockets in ``dir``; the wire protocol
is ``engine.attach.protocol``.

Errors: no engine or no such source/sink → :class:`ConnectorError` naming the
directory and the name; the engine refused or dropped this client →
:class:`ConnectorError` with the engine's reason; a batch whose columns cannot
be matched to the source's schema → :class:`SchemaMismatchError`; the engine's
process died → :class:`PeerDiedError`; a subscriber detached by the engine
(policy ``block`` and stuck, or the pipeline stopped while its ring was full) →
:class:`PeerClosedError` with the reason, after every batch already in its ring.

Not guaranteed: a pushed row is in the engine's shared memory when ``push_*``
returns, not yet in the pipeline; rows the source has not read when the engine
stops (or crashes) are lost, and a push source is not replayed after a crash
(see ``connectors.push``). A subscriber sees only batches written after it attached.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from pathlib import Path
from typing import Any

from engine.attach.protocol import (
    DEFAULT_DIR,
    HANDSHAKE_TIMEOUT_S,
    PROTOCOL,
    Kind,
    LineBuffer,
    encode,
    read_line,
    schema_from_text,
    socket_path,
    unix_address,
)
from engine.attach.push_client import PushClient
from engine.attach.subscription import Subscription
from engine.errors import (
    ConnectorError,
)
from engine.shm import Ring

__all__ = ["DEFAULT_DIR", "Engine", "PushClient", "Subscription", "connect"]


# -- the client ---------------------------------------------------------------------------
def connect(dir: str | os.PathLike[str] = DEFAULT_DIR) -> Engine:
    """A handle on the engine whose push sources and subscribe sinks listen in ``dir``.

    Connecting is lazy: errors (no engine, no such name) come from :meth:`Engine.source`
    and :meth:`Engine.subscribe`.
    """
    return Engine(dir)


class Engine:
    """The push sources and subscribe sinks a running engine publishes in one directory."""

    def __init__(self, dir: str | os.PathLike[str] = DEFAULT_DIR) -> None:
        self.dir = Path(dir)

    def published(self, kind: Kind) -> list[str]:
        """Names with a socket of ``kind`` in the directory (live or left by a killed engine)."""
        suffix = f".{kind}.sock"
        try:
            names = os.listdir(self.dir)
        except OSError:
            return []
        return sorted(n[: -len(suffix)] for n in names if n.endswith(suffix))

    def source(self, name: str, *, wait: float = 0.0) -> PushClient:
        """Attach as a new producer of push source ``name``; wait up to ``wait`` s for it."""
        sock, welcome, ring, fds = self._handshake("source", name, "push", wait)
        doorbell = fds.pop(0) if welcome.get("doorbell") and fds else None
        _close(fds)
        try:
            writer = ring.writer()
            schema = schema_from_text(welcome["schema"])
            writer.write_schema(schema, timeout=HANDSHAKE_TIMEOUT_S)
            sock.sendall(encode({"attached": True}))
        except BaseException:
            ring.close()
            sock.close()
            _close([doorbell] if doorbell is not None else [])
            raise
        return PushClient(name, self.dir, sock, ring, writer, schema, doorbell)

    def subscribe(
        self, name: str, *, timeout: float | None = None, wait: float = 0.0
    ) -> Subscription:
        """Attach as a new subscriber of sink ``name``: an iterator of the batches it writes
        from now on. ``timeout``: the longest wait for one batch (None: as long as the
        engine lives); ``wait``: how long to wait for the sink to appear."""
        sock, welcome, ring, fds = self._handshake("sink", name, "subscribe", wait)
        _close(fds)  # a subscriber is handed none
        try:
            reader = ring.reader()
            sock.sendall(encode({"attached": True}))
        except BaseException:
            ring.close()
            sock.close()
            raise
        return Subscription(
            name, self.dir, sock, ring, reader, schema_from_text(welcome["schema"]), timeout
        )

    def _missing(self, kind: Kind, name: str) -> str:
        table, typ = ("[[sources]]", "push") if kind == "source" else ("[[sinks]]", "subscribe")
        found = self.published(kind)
        there = f"; published there: {found}" if found else ""
        return (
            f"no running engine publishes {kind} {name!r} in {self.dir} (is the pipeline "
            f'running with a {table} of type "{typ}" named {name!r}?){there}'
        )

    def _handshake(
        self, kind: Kind, name: str, role: str, wait: float
    ) -> tuple[socket.socket, dict[str, Any], Ring, list[int]]:
        path = socket_path(self.dir, name, kind)
        deadline = time.monotonic() + wait
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                with unix_address(path) as address:
                    sock.connect(address)
                break
            except (FileNotFoundError, ConnectionRefusedError, NotADirectoryError):
                sock.close()
                if time.monotonic() >= deadline:
                    raise ConnectorError(self._missing(kind, name)) from None
                time.sleep(0.05)
            except BaseException:
                sock.close()
                raise
        fds: list[int] = []
        try:
            sock.sendall(encode({"hello": PROTOCOL, "pid": os.getpid(), "role": role}))
            reply = read_line(sock, LineBuffer(), HANDSHAKE_TIMEOUT_S, fds)
            if reply is None:
                raise ConnectorError(
                    f"{kind} {name!r} in {self.dir} did not answer the handshake within "
                    f"{HANDSHAKE_TIMEOUT_S} s (is the engine stopping?)"
                )
            if "error" in reply or "ring" not in reply:
                raise ConnectorError(
                    f"{kind} {name!r} in {self.dir} refused this client: "
                    f"{reply.get('error', reply)}"
                )
            ring = Ring.attach(str(reply["ring"]))
        except BaseException:
            sock.close()
            _close(fds)
            raise
        return sock, reply, ring, fds


def _close(fds: list[int]) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)
