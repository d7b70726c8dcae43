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
same directory (an absolute path is safest); it is made owner-only (0700), so
only the engine's own user can attach. A client (``engine.connect(dir)
.source("trades")``) asks the source's socket for a ring; the source makes one
per client (``Ring.create``: the source is its consumer, the client its
producer) — the protocol is ``engine.attach.protocol``. The endpoint's *accept
thread* (``engine.attach.endpoint``) does the handshakes and watches every
client's socket; the runtime's thread reads the rings, and sleeps (no CPU while
idle) on one pipe that both the accept thread and the clients' *doorbell* write
to (``engine.attach.protocol``, step 2).

* ``poll_batch(n)`` reads the attached clients' rings without waiting, round
  robin, up to ``n`` rows; the rows are copied out of the rings (one copy).
* A client that sends end of stream (``PushClient.close``) *ended*; one whose
  socket closes without it *died* (killed, crashed): either way, every frame it
  had committed to its ring is delivered first, then its ring is closed.
* Every batch is validated in full (``RecordBatch.validate(full=True)``: buffer
  sizes, offsets, UTF-8) before any of its rows goes on. A client whose SCHEMA
  frame differs from ``schema``, whose ring holds an impossible frame, or that
  sends a batch that does not decode or validate, is *rejected*: its rows from
  then on are discarded, its socket gets the reason (``PushClient`` raises it
  on its next push), a line goes to stderr and ``metrics()`` counts it; the
  pipeline and every other client go on. (``PushClient`` checks batches
  against the schema before pushing, so this catches only foreign, broken or
  hostile clients.)
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

import select
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import pyarrow as pa
from msgspec import Meta

from connectors.base import ConnectorConfig, Source, SourceBatch, SourceCheckpoint
from connectors.options import Options
from engine.attach.endpoint import Attached, Attachments, Endpoint, Peer, log
from engine.attach.protocol import DEFAULT_DIR, schema_to_text, socket_path
from engine.errors import ConfigError, ConnectorError, RingError
from engine.shm import FrameKind, Ring
from engine.shm.arrow_codec import copy_out
from engine.shm.reader import Frame, RingReader
from engine.shm.segment import check_capacity
from engine.typenames import parse_schema

_SCHEMA, _DATA, _EOS = int(FrameKind.SCHEMA), int(FrameKind.DATA), int(FrameKind.EOS)
# The longest data_ready sleeps without looking at the rings: clients ring the doorbell
# (engine.attach.protocol), so this only bounds how late a client that never rings is seen.
PARK_S = 0.02


class PushOptions(Options, frozen=True):
    schema: dict[str, str]
    dir: str = DEFAULT_DIR
    max_clients: Annotated[int, Meta(ge=1)] = 16
    ring_capacity: Annotated[int, Meta(ge=1 << 16)] = 4 << 20
    end_after_clients: Annotated[int, Meta(ge=0)] = 0


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
    batches: int = 0


class PushSource(Source, Attached):
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
        self._clients: Attachments[_Client] = Attachments()
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
            self._endpoint = Endpoint(
                self.path,
                self._label,
                "push",
                self._welcome,
                max_peers=self._max_clients,
                doorbell=True,
            )
            self._endpoint.start()
        return self._endpoint

    def _welcome(self, peer: Peer) -> dict[str, Any]:  # the accept thread
        if self.finished():
            raise ConnectorError(f"{self._label} has ended (end_after_clients={self._end_after})")
        self._clients.reserve(
            self._max_clients,
            f"{self._label} already has {self._clients.live} clients "
            f"(max_clients={self._max_clients})",
        )
        try:
            ring = Ring.create(self._capacity)
            reader = ring.reader()
        except BaseException:
            self._clients.release()
            raise
        peer.ring = ring
        self._clients.add(_Client(peer, ring, reader))
        with self._clients.lock:
            self._counts["total"] += 1
        schema = schema_to_text(self._schema)
        return {"ring": ring.name, "capacity": self._capacity, "schema": schema}

    # -- polling -------------------------------------------------------------------------
    def poll_batch(self, max_records: int) -> SourceBatch | None:
        self._start()
        clients = self._clients.adopt()
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
            copied = copy_out(*views)  # one copy out of the rings
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
                    c.done = f
                    break
                c.batches += 1
                batch = self._decoded(c, f)
                if batch is None:
                    c.done = f
                    break
                c.rest, c.hold = batch, f
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

    def _decoded(self, c: _Client, f: Frame) -> pa.RecordBatch | None:
        """The batch in ``f``, validated in full; None (and the client rejected) if it is bad."""
        try:
            batch = c.reader.batch(f)
            batch.validate(full=True)  # offsets, lengths, UTF-8: before any row goes on
        except Exception as exc:  # a hostile or broken client must not take the engine down
            c.end = ("rejected", f"its batch {c.batches} is malformed: {type(exc).__name__}: {exc}")
            return None
        return batch

    def _drop(self, c: _Client) -> None:
        kind, reason = c.end or ("rejected", "the source closed")
        self._clients.current.remove(c)
        c.peer.drop({"end": reason})
        c.peek = c.rest = c.hold = c.done = None
        c.reader.close()
        c.ring.close()
        self._clients.release()
        with self._clients.lock:
            self._counts[kind] += 1
        if kind != "ended":
            log(f"{self._label}: client pid {c.peer.pid} {kind} after {c.rows} rows: {reason}")

    def finished(self) -> bool:
        return (
            self._end_after > 0
            and self._counts["ended"] >= self._end_after
            and self._clients.live == 0
        )

    def data_ready(self, timeout_s: float) -> bool:
        endpoint = self._start()
        end = time.monotonic() + timeout_s
        while True:
            self._clients.adopt()
            if self._ready():
                return True
            remaining = end - time.monotonic()
            if remaining <= 0:
                return False
            # Rings cannot be select()ed: announce the wait on every client's ring, look
            # once more, then sleep on the endpoint's pipe, where the accept thread posts
            # its events and a client that publishes next rings the doorbell.
            readers = [c.reader for c in self._clients.current]
            for r in readers:
                r.announce_wait()
            try:
                if readers and self._ready():
                    return True
                slice_s = min(remaining, PARK_S) if readers else remaining
                readable, _, _ = select.select([endpoint.events], [], [], slice_s)
            finally:
                for r in readers:
                    r.end_wait()
            if readable:
                endpoint.drain_events()

    def _ready(self) -> bool:
        for c in self._clients.current:
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
        return SourceCheckpoint({"clients": self._clients.count})

    def restore(self, checkpoint: SourceCheckpoint) -> None:
        """Nothing to restore: clients re-push what they need after a restart."""

    def supports_replay(self) -> bool:
        return False

    def metrics(self) -> dict[str, float]:
        c = self._counts
        return {
            "clients": float(self._clients.live),
            "clients_total": float(c["total"]),
            "clients_ended": float(c["ended"]),
            "clients_died": float(c["died"]),
            "clients_rejected": float(c["rejected"]),
            "rows_pushed": float(c["rows"]),
            "batches_pushed": float(c["batches"]),
        }

    def close(self) -> None:
        """Let every client go (its next push raises), stop accepting, unlink every ring."""
        self.close_endpoint()

    def _end_all(self) -> None:
        for c in list(self._clients.adopt()):
            if c.end is None:
                c.end = ("ended", "the pipeline stopped: the push source closed")
            self._drop(c)


def _text(schema: pa.Schema | None) -> str:
    if schema is None:
        return "none"
    return "{" + ", ".join(f"{f.name}: {f.type}" for f in schema) + "}"
