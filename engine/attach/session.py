"""What a push client and a subscription share: the socket, the ring, the engine's last word.

``Session`` holds the attach socket (``engine.attach.protocol``) and the mapped
ring of one attached client, reads the engine's last line (why it let the client
go) without blocking, and closes both.
"""

from __future__ import annotations

import select
import socket
from pathlib import Path
from typing import Any

from engine.attach.protocol import LineBuffer
from engine.shm import Ring


class Session:
    """What a push client and a subscription share: the socket, the ring, the engine's word."""

    _kind = ""

    def __init__(self, name: str, directory: Path, sock: socket.socket, ring: Ring) -> None:
        self.name = name
        self.dir = directory
        self._sock = sock
        self._ring = ring
        self._lines = LineBuffer()
        self._end: dict[str, Any] | None = None  # the engine's last line, once read
        self._hung_up = False
        self.closed = False

    def _engine_word(self, wait: float = 0.0) -> dict[str, Any] | None:
        """The engine's last line if it sent one (or hung up) within ``wait`` s."""
        while self._end is None and not self._hung_up:
            try:
                readable, _, _ = select.select([self._sock], [], [], wait)
            except (OSError, ValueError):
                self._hung_up = True
                break
            if not readable:
                break
            try:
                data = self._sock.recv(4096)
            except OSError:
                data = b""
            if not data:
                self._hung_up = True
                break
            for msg in self._lines.feed(data):
                if "end" in msg or "error" in msg:
                    self._end = msg
        return self._end

    def _reason(self, wait: float = 0.0) -> str | None:
        msg = self._engine_word(wait)
        if msg is not None:
            return str(msg.get("end") or msg.get("error") or "no reason given")
        return "the engine closed the connection" if self._hung_up else None

    def _where(self) -> str:
        return f"{self._kind} {self.name!r} in {self.dir}"

    def _close_attachment(self) -> None:
        self.closed = True
        self._ring.close()
        self._sock.close()


