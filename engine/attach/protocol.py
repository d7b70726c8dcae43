"""The attach protocol: how a client process and the engine meet on a Unix socket.

The engine's push source and subscribe sink listen on ``<dir>/<name>.source.sock``
and ``<dir>/<name>.sink.sock``. One JSON object per line:

1. client → engine: ``{"hello": 1, "pid": <pid>, "role": "push" | "subscribe"}``
   (within ``HELLO_TIMEOUT_S``, or the engine hangs up);
2. engine → client: ``{"ring": <segment>, "capacity": <bytes>, "schema": <base64 Arrow
   IPC schema>}`` — a fresh ring made for this client alone — or ``{"error": <why>}``;
   a push source's reply also says ``"doorbell": true`` and carries, as ancillary
   data (``SCM_RIGHTS``), the write end of a non-blocking pipe: the *doorbell*.
   The source sleeps in a ``select`` on its read end (it cannot park on several
   rings at once); after publishing a frame, a client that finds the ring's
   consumer-waiting flag set writes one byte to it (``RingWriter.wake_hook``).
   A client that never rings is still read, within the source's ``PARK_S``;
3. the client maps the ring (push: as its producer, and writes the SCHEMA frame
   first; subscribe: as its consumer) and sends ``{"attached": true}``; the engine
   then unlinks the segment's name, so the memory lives exactly as long as a
   mapping of it: whoever dies, nothing is left in ``/dev/shm``;
4. the socket stays open for the client's lifetime: its EOF is how the engine
   learns that the client died; the engine's last line, ``{"end": <why or null>,
   ...}``, says why it let the client go (a subscriber's also carries
   ``dropped_batches`` and ``dropped_rows``).

Security: the socket directory is owner-only (0700) and each socket 0600, whatever
the umask (``engine.durable.private_dir``), so only the engine's own user can
attach; a line longer than ``MAX_LINE`` bytes is an error.
"""

from __future__ import annotations

import base64
import os
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import msgspec
import pyarrow as pa

from engine.errors import ConnectorError

DEFAULT_DIR = ".ringstream/run"
PROTOCOL = 1
HANDSHAKE_TIMEOUT_S = 10.0  # a client waits this long for the engine's reply
HELLO_TIMEOUT_S = 1.0  # the engine waits this long for a client's hello
MAX_LINE = 1 << 16
Kind = Literal["source", "sink"]


def socket_path(directory: str | os.PathLike[str], name: str, kind: Kind) -> Path:
    """Where the engine's ``kind`` named ``name`` listens."""
    return Path(directory) / f"{name}.{kind}.sock"


def encode(message: dict[str, Any]) -> bytes:
    return msgspec.json.encode(message) + b"\n"


def schema_to_text(schema: pa.Schema) -> str:
    return base64.b64encode(schema.serialize().to_pybytes()).decode("ascii")


def schema_from_text(text: str) -> pa.Schema:
    return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(text)))


class LineBuffer:
    """Bytes in, whole JSON-object lines out."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        self._buf += data
        out = []
        while (i := self._buf.find(b"\n")) >= 0:
            line = bytes(self._buf[:i])
            del self._buf[: i + 1]
            try:
                msg = msgspec.json.decode(line)
            except msgspec.DecodeError:
                msg = None
            out.append(msg if isinstance(msg, dict) else {"error": f"bad line {line[:80]!r}"})
        if len(self._buf) > MAX_LINE:
            raise ConnectorError(f"a protocol line longer than {MAX_LINE} bytes")
        return out


@contextmanager
def unix_address(path: Path) -> Iterator[str]:
    """An AF_UNIX address for ``path``; one longer than the kernel's ~107 bytes goes through
    ``/proc/self/fd/<dir fd>/<name>`` (the directory's fd stays open while in use)."""
    text = str(path)
    if len(os.fsencode(text)) < 100:
        yield text
        return
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        yield f"/proc/self/fd/{fd}/{path.name}"
    finally:
        os.close(fd)


def read_line(
    sock: socket.socket, buffer: LineBuffer, timeout: float, fds: list[int] | None = None
) -> dict[str, Any] | None:
    """The next line from a blocking socket; None on EOF or when ``timeout`` expires.

    ``fds``: file descriptors that came with it (``SCM_RIGHTS``) are appended there.
    """
    end = time.monotonic() + timeout
    while True:
        remaining = end - time.monotonic()
        if remaining <= 0:
            return None
        sock.settimeout(remaining)
        try:
            if fds is None:
                data = sock.recv(4096)
            else:
                data, got, _flags, _address = socket.recv_fds(sock, 4096, 4)
                for fd in got:  # not into programs the client's process executes
                    os.set_inheritable(fd, False)
                fds.extend(got)
        except (TimeoutError, OSError):
            return None
        if not data:
            return None
        lines = buffer.feed(data)
        if lines:
            return lines[0]
