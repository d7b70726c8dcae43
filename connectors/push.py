"""The push source: user processes attach to a running engine and push Arrow batches in.

Pipeline::

    [[sources]]
    name = "trades"
    type = "push"                      # or "connectors.push:PushSource"
    dir = ".ringstream/run"            # where the socket is: <dir>/trades.source.sock
    schema = { symbol = "string", price = "float64", ts = "timestamp" }
    max_clients = 16                   # clients attached at once; more are refused
    ring_capacity = 4_194_304          # bytes of each client's ring (a power of 2, >= 64 KiB)
    end_after_clients = 0              # N > 0: finished once N clients ended cleanly

``dir`` is relative to the engine's working directory; clients must name the
same directory (an absolute path is safest). A client (``engine.client``:
``connect(dir).source("trades")``) asks the source's socket for a ring; the
source makes one per client (``Ring.create``: the source is its consumer, the
client its producer) — the protocol is in ``engine.client``. An *accept
thread* does the handshakes and watches every client's socket; the runtime's
thread polls the rings.

* ``poll_batch(n)`` reads the attached clients' rings without waiting, round
  robin, up to ``n`` rows; the rows are copied out of the rings (one copy).
* A client that sends end of stream (``PushClient.close``) *ended*; one whose
  socket closes without it *died* (killed, crashed): either way, every frame it
  had committed to its ring is delivered first, then its ring is closed.
* A client whose SCHEMA frame differs from ``schema``, or whose ring holds an
  impossible frame, is *rejected*: its rows from then on are discarded, its socket
  gets the reason (``PushClient`` raises it on its next push), a line goes to
  stderr and ``metrics()`` counts it; the pipeline goes on. (``PushClient``
  checks batches against the schema before pushing, so this catches only
  foreign or broken clients.)
* ``finished()``: only with ``end_after_clients = N > 0``, once N clients have
  *ended* (died and rejected ones do not count) and none is attached; later
  clients are refused.

Delivery — exactly what is guaranteed:

* Within one engine run, nothing pushed is lost or repeated: a full ring blocks
  the client (backpressure), and every row the source reads goes downstream
  once, in each client's order (there is no order across clients). A row is in
  shared memory when ``push_*`` returns; it survives the client's death.
* A drain (SIGTERM) ends the stream where the source stopped reading: rows still
  in a client's ring then are not delivered, and the client's next push raises
  ``ConnectorError`` with the reason.
* Push data cannot be replayed (``supports_replay`` is False; ``checkpoint()``
  returns ``{"clients": n}``, for information only). After an engine crash and
  recovery, the rows pushed after the last committed epoch are lost, not
  repeated: *at most once*. A client that must not lose rows re-pushes them to
  the restarted engine (it has to reconnect), which makes delivery at-least-once
  at best — the client cannot tell which of its rows were committed.
"""

from __future__ import annotations

import contextlib
import os
import select
import socket
import stat
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import pyarrow as pa
from msgspec import Meta

from connectors.base import ConnectorConfig, Source, SourceBatch, SourceCheckpoint
from connectors.options import Options
from engine.client import (
    DEFAULT_DIR,
    PROTOCOL,
    LineBuffer,
    encode,
    read_line,
    schema_to_text,
    socket_path,
    unix_address,
)
from engine.errors import ConfigError, ConnectorError, RingError
from engine.shm import FrameKind, Ring
from engine.shm.reader import Frame, RingReader
from engine.shm.segment import check_capacity
from engine.typenames import parse_schema

_SCHEMA, _DATA, _EOS = int(FrameKind.SCHEMA), int(FrameKind.DATA), int(FrameKind.EOS)
_HELLO_TIMEOUT_S = 1.0


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


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


class Endpoint:
    """A Unix socket where clients ask for a ring, and the daemon thread that serves it.

    The thread accepts, reads the hello (at most 1 s), calls ``welcome(peer)`` for the
    reply (a ``ConnectorError`` becomes an ``{"error"}`` line) and then watches every
    client socket: ``{"attached": true}`` unlinks the ring's name, EOF sets ``hung_up``.
    Only this thread closes client sockets; ``events`` (a pipe) becomes readable after
    each change, for a runtime thread waiting in ``select``.
    """

    def __init__(
        self, path: Path, label: str, role: str, welcome: Callable[[Peer], dict[str, Any]]
    ) -> None:
        self.path = path
        self.label = label
        self.role = role
        self.welcome = welcome
        self._peers: list[Peer] = []
        self._listener: socket.socket | None = None
        self._stop_r, self._stop_w = os.pipe()
        self.events, self._events_w = os.pipe()
        os.set_blocking(self.events, False)
        os.set_blocking(self._events_w, False)
        self._thread: threading.Thread | None = None
        self._inode = 0

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._clear_stale()
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            with unix_address(self.path) as address:
                listener.bind(address)
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
            watched: list[Any] = [self._stop_r, self._listener, *[p.sock for p in self._peers]]
            try:
                readable, _, _ = select.select(watched, [], [], 1.0)
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
                    else:
                        self._on_readable(next(p for p in self._peers if p.sock is item))
                except Exception as exc:  # the thread must outlive any one client
                    log(f"{self.label}: {type(exc).__name__}: {exc}")

    def _accept(self) -> None:
        assert self._listener is not None
        sock, _ = self._listener.accept()
        hello = read_line(sock, LineBuffer(), _HELLO_TIMEOUT_S)
        ok = (
            hello is not None
            and hello.get("hello") == PROTOCOL
            and hello.get("role") == self.role
            and isinstance(hello.get("pid"), int)
        )
        if not ok:
            why = f"{self.label}: expected a {self.role!r} hello (protocol {PROTOCOL}): {hello!r}"
            with contextlib.suppress(OSError):
                sock.sendall(encode({"error": why}))
            sock.close()
            return
        assert hello is not None
        peer = Peer(sock, int(hello["pid"]))
        try:
            reply = self.welcome(peer)
        except Exception as exc:
            with contextlib.suppress(OSError):
                sock.sendall(encode({"error": str(exc)}))
            sock.close()
            if not isinstance(exc, ConnectorError):
                raise
            return
        sock.settimeout(0.5)
        try:
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
        if not data:
            peer.hung_up = True
            self._peers.remove(peer)
            peer.sock.close()
            self.notify()
            return
        for msg in peer.lines.feed(data):
            if msg.get("attached") and peer.ring is not None:
                peer.attached = True
                peer.ring.segment.unlink()  # both sides map it: the name is no longer needed

    def close(self) -> None:
        """Stop the thread, close every socket, remove the socket file. Idempotent."""
        if self._thread is not None:
            os.write(self._stop_w, b"x")
            self._thread.join(10)
            self._thread = None
        for p in self._peers:
            p.sock.close()
        self._peers = []
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


@dataclass
class _Client:
    peer: Peer
    ring: Ring
    reader: RingReader
    peek: Frame | None = None  # a frame data_ready polled, not yet handled
    rest: pa.RecordBatch | None = None  # rows of ``hold`` not yet returned (zero-copy)
    hold: Frame | None = None  # the DATA frame ``rest`` points into: not released
    done: Frame | None = None  # the last frame fully used: released after the copy
    end: tuple[str, str | None] | None = None  # ("ended" | "died" | "rejected", reason)
    rows: int = 0


class PushOptions(Options, frozen=True):
    schema: dict[str, str]
    dir: str = DEFAULT_DIR
    max_clients: Annotated[int, Meta(ge=1)] = 16
    ring_capacity: Annotated[int, Meta(ge=1 << 16)] = 4 << 20
    end_after_clients: Annotated[int, Meta(ge=0)] = 0


class PushSource(Source):
    """Rows pushed by attached client processes (see the module docstring)."""

    options_type = PushOptions

    def open(self, config: ConnectorConfig) -> None:
        super().open(config)
        where = f"sources.{config.name}"
        opts: PushOptions = self.options
        if config.instances != 1:
            raise ConfigError(
                f"{where}.parallelism={config.instances}: a push source runs "
                "as one instance (clients share its socket)"
            )
        self._schema = parse_schema(opts.schema, f"{where}.schema")
        self._max_clients = opts.max_clients
        self._capacity = opts.ring_capacity
        try:
            check_capacity(self._capacity)
        except ConfigError as exc:
            raise ConfigError(f"{where}.ring_capacity: {exc}") from None
        self._end_after = opts.end_after_clients
        self._dir = Path(opts.dir)
        self._label = f"push source {config.name!r}"
        self._endpoint: Endpoint | None = None
        self._lock = threading.Lock()
        self._new: list[_Client] = []
        self._clients: list[_Client] = []
        self._live = 0  # clients welcomed and not yet dropped (guarded by _lock)
        self._rr = 0
        self._counts = dict.fromkeys(("total", "ended", "died", "rejected", "rows", "batches"), 0)

    def schema(self) -> pa.Schema:
        return self._schema

    @property
    def path(self) -> Path:
        return socket_path(self._dir, self.config.name, "source")

    def _start(self) -> Endpoint:
        """Listen on first use: the coordinator opens sources only to read their schema."""
        if self._endpoint is None:
            self._endpoint = Endpoint(self.path, self._label, "push", self._welcome)
            self._endpoint.start()
        return self._endpoint

    def _welcome(self, peer: Peer) -> dict[str, Any]:  # the accept thread
        with self._lock:
            if self.finished():
                raise ConnectorError(
                    f"{self._label} has ended (end_after_clients={self._end_after})"
                )
            if self._live >= self._max_clients:
                raise ConnectorError(
                    f"{self._label} already has {self._live} clients "
                    f"(max_clients={self._max_clients})"
                )
            self._live += 1
        try:
            ring = Ring.create(self._capacity)
            reader = ring.reader()
        except BaseException:
            with self._lock:
                self._live -= 1
            raise
        peer.ring = ring
        with self._lock:
            self._new.append(_Client(peer, ring, reader))
            self._counts["total"] += 1
        return {
            "ring": ring.name,
            "capacity": self._capacity,
            "schema": schema_to_text(self._schema),
        }

    def _adopt(self) -> None:
        if self._new:
            with self._lock:
                self._clients.extend(self._new)
                self._new.clear()

    # -- polling -------------------------------------------------------------------------
    def poll_batch(self, max_records: int) -> SourceBatch | None:
        self._start()
        self._adopt()
        clients = self._clients
        if not clients:
            return None
        views: list[pa.RecordBatch] = []
        rows = 0
        n = len(clients)
        for k in range(n):
            c = clients[(self._rr + k) % n]
            rows += self._read(c, views, max(1, max_records - rows))
            if rows >= max_records:
                break
        self._rr += 1
        batch = None
        if rows:
            copied = pa.concat_batches(views)  # one copy out of the rings
            batch = pa.RecordBatch.from_arrays(copied.columns, schema=self._schema)
        del views
        for c in list(clients):
            if c.done is not None:
                c.reader.release(c.done)
                c.done = None
            if c.end is not None:
                self._drop(c)
        if batch is None:
            return None
        self._counts["rows"] += rows
        self._counts["batches"] += 1
        return SourceBatch(batch, offset=self._counts["rows"])

    def _take(self, c: _Client) -> Frame | None:
        f = c.peek
        if f is not None:
            c.peek = None
            return f
        return c.reader.poll()

    def _read(self, c: _Client, out: list[pa.RecordBatch], budget: int) -> int:
        """Append ``c``'s rows (zero-copy views) to ``out``, at most ``budget`` of them.

        A frame with more rows than the budget is held (``c.rest``, its frame unreleased)
        and finished by the next poll; ``c.done`` is the last frame fully used.
        """
        rows = 0
        while rows < budget and c.end is None:
            if c.rest is not None:
                take = min(budget - rows, c.rest.num_rows)
                out.append(c.rest.slice(0, take))
                rows += take
                c.rows += take
                if take == c.rest.num_rows:
                    c.rest, c.done, c.hold = None, c.hold, None
                else:
                    c.rest = c.rest.slice(take)
                continue
            hung_up = c.peer.hung_up  # read before polling: a dead client's frames come first
            try:
                f = self._take(c)
            except RingError as exc:
                c.end = ("rejected", f"its ring holds an impossible frame: {exc}")
                break
            if f is None:
                if hung_up:
                    c.end = ("died", "its connection closed without end of stream")
                break
            if f.kind == _DATA:
                if c.reader.schema is None:
                    c.end = ("rejected", "it sent a batch before its schema")
                    break
                c.rest, c.hold = c.reader.batch(f), f
                continue
            c.done = f
            if f.kind == _SCHEMA:
                got = c.reader.schema
                if got is None or not got.equals(self._schema):
                    c.end = (
                        "rejected",
                        f"it pushes schema {_text(got)} but the source "
                        f"declares {_text(self._schema)}",
                    )
            elif f.kind == _EOS:
                c.end = ("ended", None)
        return rows

    def _drop(self, c: _Client) -> None:
        kind, reason = c.end or ("rejected", "the source closed")
        self._clients.remove(c)
        c.peer.drop({"end": reason})
        c.peek = c.rest = c.hold = c.done = None
        c.reader.close()
        c.ring.close()
        with self._lock:
            self._live -= 1
            self._counts[kind] += 1
        if kind != "ended":
            log(f"{self._label}: client pid {c.peer.pid} {kind} after {c.rows} rows: {reason}")

    def finished(self) -> bool:
        return self._end_after > 0 and self._counts["ended"] >= self._end_after and self._live == 0

    def data_ready(self, timeout_s: float) -> bool:
        endpoint = self._start()
        end = time.monotonic() + timeout_s
        while True:
            self._adopt()
            if self._ready():
                return True
            remaining = end - time.monotonic()
            if remaining <= 0:
                return False
            # Rings cannot be select()ed: with clients attached, look at them every ms.
            slice_s = min(remaining, 0.001) if self._clients else remaining
            readable, _, _ = select.select([endpoint.events], [], [], slice_s)
            if readable:
                endpoint.drain_events()

    def _ready(self) -> bool:
        for c in self._clients:
            if c.peek is None and c.end is None:
                try:
                    c.peek = c.reader.poll()
                except RingError:
                    return True  # poll_batch rejects it
            if c.peek is not None or c.rest is not None or c.peer.hung_up:
                return True
        return False

    # -- the rest of the contract --------------------------------------------------------
    def checkpoint(self) -> SourceCheckpoint:
        """Informational only: push data cannot be replayed."""
        return SourceCheckpoint({"clients": len(self._clients) + len(self._new)})

    def restore(self, checkpoint: SourceCheckpoint) -> None:
        """Nothing to restore: clients re-push what they need after a restart."""

    def supports_replay(self) -> bool:
        return False

    def metrics(self) -> dict[str, float]:
        c = self._counts
        return {
            "clients": float(self._live),
            "clients_total": float(c["total"]),
            "clients_ended": float(c["ended"]),
            "clients_died": float(c["died"]),
            "clients_rejected": float(c["rejected"]),
            "rows_pushed": float(c["rows"]),
            "batches_pushed": float(c["batches"]),
        }

    def close(self) -> None:
        """Let every client go (its next push raises), stop accepting, unlink every ring."""
        self._end_all()
        endpoint, self._endpoint = self._endpoint, None
        if endpoint is not None:
            endpoint.close()
            self._end_all()  # any welcomed while the first round ran

    def _end_all(self) -> None:
        self._adopt()
        for c in list(self._clients):
            if c.end is None:
                c.end = ("ended", "the pipeline stopped: the push source closed")
            self._drop(c)


def _text(schema: pa.Schema | None) -> str:
    if schema is None:
        return "none"
    return "{" + ", ".join(f"{f.name}: {f.type}" for f in schema) + "}"
