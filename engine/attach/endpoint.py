"""The engine's end of the attach protocol: a Unix socket, its accept thread, the peers.

``Endpoint(path, label, role, welcome, max_peers)`` listens on ``path`` (its
directory owner-only, the socket 0600: ``engine.durable.private_dir``). A daemon
*accept thread* serves it with one ``select`` loop and never blocks on one
client: a new connection's hello is read as it arrives (a client that says
nothing for ``HELLO_TIMEOUT_S`` is hung up on; at most ``max_peers`` hellos
wait at once, later connections are refused), then ``welcome(peer)`` gives the
reply (a ``ConnectorError`` becomes an ``{"error"}`` line). It then watches
every attached client's socket: ``{"attached": true}`` unlinks the ring's name,
EOF sets ``hung_up``. Only this thread closes client sockets; ``events`` (a pipe)
becomes readable after each change, for a runtime thread waiting in ``select``.

``Attachments`` hands what the accept thread welcomed to the runtime thread
(the connector's own thread), under a lock.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import socket
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Generic, TypeVar

from engine.attach.protocol import (
    HELLO_TIMEOUT_S,
    PROTOCOL,
    LineBuffer,
    encode,
    unix_address,
)
from engine.durable import private_dir
from engine.errors import ConfigError, ConnectorError
from engine.shm import Ring

T = TypeVar("T")


def log(text: str) -> None:
    """One line about a client (refused, detached, cut off): the engine's log, event ``client``."""
    from engine import log as engine_log

    engine_log.say("client", text, level=logging.WARNING)


class Peer:
    """One client's connection. ``hung_up``/``attached`` are set by the accept thread."""

    def __init__(self, sock: socket.socket, pid: int) -> None:
        self.sock = sock
        self.pid = pid
        self.ring: Ring | None = None
        self.hung_up = False  # its socket reached EOF: the client is gone
        self.attached = False  # it mapped its ring (the ring's name is unlinked then)
        self.dropped = False
        self.lines = LineBuffer()

    def drop(self, last_word: dict[str, Any] | None = None) -> None:
        """Send ``last_word`` (best effort) and shut the socket; the accept thread closes it."""
        if self.dropped:
            return
        self.dropped = True
        with contextlib.suppress(OSError):
            if last_word is not None:
                self.sock.send(encode(last_word), socket.MSG_DONTWAIT)
            self.sock.shutdown(socket.SHUT_RDWR)


class _Hello:
    """A connection whose hello has not arrived yet."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.lines = LineBuffer()
        self.deadline = time.monotonic() + HELLO_TIMEOUT_S


class Endpoint:
    """See the module docstring."""

    def __init__(
        self,
        path: Path,
        label: str,
        role: str,
        welcome: Callable[[Peer], dict[str, Any]],
        max_peers: int = 64,
        doorbell: bool = False,
    ) -> None:
        self.path = path
        self.label = label
        self.role = role
        self.welcome = welcome
        self.max_peers = max_peers
        self.doorbell = doorbell  # hand each client the write end of ``events`` (protocol)
        self._peers: list[Peer] = []
        self._hellos: list[_Hello] = []
        self._listener: socket.socket | None = None
        self._stop_r, self._stop_w = os.pipe()
        self.events, self._events_w = os.pipe()
        os.set_blocking(self.events, False)
        os.set_blocking(self._events_w, False)
        self._thread: threading.Thread | None = None
        self._inode = 0

    def start(self) -> None:
        private_dir(self.path.parent, self.label)
        self._clear_stale()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with unix_address(self.path) as address:
                listener.bind(address)
            os.chmod(self.path, 0o600)  # whatever the umask (the directory is 0700 anyway)
            listener.listen(64)
        except OSError as exc:
            listener.close()
            raise ConnectorError(f"{self.label}: cannot listen on {self.path}: {exc}") from exc
        self._inode = os.stat(self.path).st_ino
        self._listener = listener
        self._thread = threading.Thread(
            target=self._serve, name=f"{self.label} accept", daemon=True
        )
        self._thread.start()

    def _clear_stale(self) -> None:
        try:
            mode = os.lstat(self.path).st_mode
        except FileNotFoundError:
            return
        if not stat.S_ISSOCK(mode):
            raise ConfigError(f"{self.label}: {self.path} exists and is not a socket")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with unix_address(self.path) as address:
                probe.connect(address)
        except ConnectionRefusedError:
            self.path.unlink(missing_ok=True)  # left by a killed engine
            return
        finally:
            probe.close()
        raise ConnectorError(
            f"{self.label}: another process already listens on {self.path} "
            "(two pipelines publishing the same name in one dir?)"
        )

    def notify(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.write(self._events_w, b"!")

    def drain_events(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(self.events, 4096)

    # -- the accept thread -------------------------------------------------------------
    def _serve(self) -> None:
        assert self._listener is not None
        while True:
            watched: list[Any] = [self._stop_r, self._listener]
            watched += [h.sock for h in self._hellos] + [p.sock for p in self._peers]
            wait = 1.0
            if self._hellos:
                wait = max(0.0, min(h.deadline for h in self._hellos) - time.monotonic())
            try:
                readable, _, _ = select.select(watched, [], [], wait)
            except (OSError, ValueError) as exc:  # not expected: only this thread closes
                log(f"{self.label}: accept thread: {exc}")
                time.sleep(0.1)
                continue
            if self._stop_r in readable:
                return
            for item in readable:
                try:
                    if item is self._listener:
                        self._accept()
                    elif (h := next((h for h in self._hellos if h.sock is item), None)) is not None:
                        self._on_hello(h)
                    else:
                        self._on_readable(next(p for p in self._peers if p.sock is item))
                except Exception as exc:  # the thread must outlive any one client
                    log(f"{self.label}: {type(exc).__name__}: {exc}")
            self._expire_hellos()

    def _accept(self) -> None:
        assert self._listener is not None
        sock, _ = self._listener.accept()
        if len(self._hellos) >= self.max_peers:
            self._refuse(sock, f"{self.label}: too many connections waiting to say hello")
            return
        sock.setblocking(False)
        self._hellos.append(_Hello(sock))

    def _on_hello(self, h: _Hello) -> None:
        try:
            data = h.sock.recv(4096)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        try:
            lines = h.lines.feed(data) if data else []
        except ConnectorError as exc:
            lines, data = [], b""
            log(f"{self.label}: {exc}")
        if not data:
            self._hellos.remove(h)
            h.sock.close()
            return
        if lines:
            self._hellos.remove(h)
            self._greet(h.sock, lines[0])

    def _expire_hellos(self) -> None:
        now = time.monotonic()
        for h in [h for h in self._hellos if h.deadline <= now]:
            self._hellos.remove(h)
            self._refuse(h.sock, f"{self.label}: no hello within {HELLO_TIMEOUT_S} s")

    def _refuse(self, sock: socket.socket, why: str) -> None:
        with contextlib.suppress(OSError):
            sock.send(encode({"error": why}), socket.MSG_DONTWAIT)
        sock.close()

    def _greet(self, sock: socket.socket, hello: dict[str, Any]) -> None:
        ok = (
            hello.get("hello") == PROTOCOL
            and hello.get("role") == self.role
            and isinstance(hello.get("pid"), int)
        )
        if not ok:
            why = f"{self.label}: expected a {self.role!r} hello (protocol {PROTOCOL}): {hello!r}"
            self._refuse(sock, why)
            return
        peer = Peer(sock, int(hello["pid"]))
        try:
            reply = self.welcome(peer)
        except Exception as exc:
            self._refuse(sock, str(exc))
            if not isinstance(exc, ConnectorError):
                raise
            return
        sock.setblocking(True)
        sock.settimeout(0.5)
        try:
            if self.doorbell:
                data = encode({**reply, "doorbell": True})
                sent = socket.send_fds(sock, [data], [self._events_w])
                sock.sendall(data[sent:])
            else:
                sock.sendall(encode(reply))
        except OSError:
            peer.hung_up = True  # the main thread cleans it up like any dead client
        self._peers.append(peer)
        self.notify()

    def _on_readable(self, peer: Peer) -> None:
        try:
            data = peer.sock.recv(4096)
        except OSError:
            data = b""
        try:
            lines = peer.lines.feed(data) if data else []
        except ConnectorError:
            lines, data = [], b""  # a flood of garbage: treat the client as gone
        if not data:
            peer.hung_up = True
            self._peers.remove(peer)
            peer.sock.close()
            self.notify()
            return
        for msg in lines:
            if msg.get("attached") and peer.ring is not None:
                peer.attached = True
                peer.ring.segment.unlink()  # both sides map it: the name is no longer needed

    def close(self) -> None:
        """Stop the thread, close every socket, remove the socket file. Idempotent."""
        if self._thread is not None:
            os.write(self._stop_w, b"x")
            self._thread.join(10)
            self._thread = None
        for s in [*(p.sock for p in self._peers), *(h.sock for h in self._hellos)]:
            s.close()
        self._peers, self._hellos = [], []
        if self._listener is not None:
            self._listener.close()
            self._listener = None
            with contextlib.suppress(OSError):
                if os.stat(self.path).st_ino == self._inode:
                    self.path.unlink()
        for fd in (self._stop_r, self._stop_w, self.events, self._events_w):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._stop_r = self._stop_w = self.events = self._events_w = -1


class Attachments(Generic[T]):
    """Clients the accept thread welcomed, handed to the connector's own thread.

    ``add`` (accept thread) queues one; ``adopt`` (connector thread) moves the
    queued ones into ``current``, which only the connector thread touches.
    ``live`` counts welcomed and not yet released clients (for a cap).
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._new: list[T] = []
        self.current: list[T] = []
        self.live = 0

    def reserve(self, cap: int, refusal: str) -> None:
        """Count one more client, or raise ``ConnectorError(refusal)`` at ``cap``."""
        with self.lock:
            if self.live >= cap:
                raise ConnectorError(refusal)
            self.live += 1

    def release(self) -> None:
        with self.lock:
            self.live -= 1

    def add(self, item: T) -> None:
        with self.lock:
            self._new.append(item)

    def adopt(self) -> list[T]:
        if self._new:
            with self.lock:
                self.current.extend(self._new)
                self._new.clear()
        return self.current

    @property
    def count(self) -> int:
        return len(self.current) + len(self._new)


class Attached:
    """A connector with an endpoint (push source, subscribe sink): how it closes.

    ``close_endpoint`` lets every client go (``_end_all``), stops accepting, then
    lets go of any client welcomed while the first round ran. Idempotent.
    """

    _endpoint: Endpoint | None

    def _end_all(self) -> None:
        raise NotImplementedError

    def close_endpoint(self) -> None:
        self._end_all()
        endpoint, self._endpoint = self._endpoint, None
        if endpoint is not None:
            endpoint.close()
            self._end_all()
