"""The subscribe sink: user processes attach to a running engine and read its output live.

Pipeline::

    [[sinks]]
    name = "alerts"
    type = "subscribe"                 # or "connectors.subscribe:SubscribeSink"
    dir = ".ringstream/run"            # where the socket is: <dir>/alerts.sink.sock
    max_clients = 16                   # subscribers attached at once; more are refused
    policy = "block"                   # a subscriber's ring is full: "block" or "drop"
    block_timeout_ms = 5_000           # "block": full this long = stuck, detached
    ring_capacity = 4_194_304          # bytes of each subscriber's ring (a power of 2, >= 64 KiB)

A subscriber (``engine.connect(dir).subscribe("alerts")``) gets a ring of its
own (the sink is its producer); the sink writes the SCHEMA frame first, then
every batch written after the subscriber attached — no history. ``dir`` is made
owner-only (0700): only the engine's own user can subscribe. The endpoint's
accept thread (``engine.attach.endpoint``, shared with the push source) does
the handshakes at any time without waiting on any one client, so
``subscribe()`` returns even while no batches flow and a silent connection
delays nobody; ``write_batch``, ``begin_epoch`` and ``flush`` take in the new
subscribers and let the dead go. At most ``max_clients`` are attached at once.

Slow subscribers — a ring stays full:

* ``"block"`` (default): ``write_batch`` waits for room, which backpressures the
  whole pipeline; a subscriber whose ring stays full for ``block_timeout_ms`` is
  *stuck*: detached (its ring closed without end of stream; it reads what is
  left, then ``PeerClosedError`` with the reason), counted, logged to stderr.
  One stuck subscriber stalls the pipeline for at most ``block_timeout_ms``.
* ``"drop"``: the batch is dropped for that subscriber alone and counted
  (``metrics()`` ``dropped_batches``/``dropped_rows``; the subscriber learns its
  own totals when it ends); the pipeline never waits. A batch larger than a
  quarter of the ring travels in slices, so it may arrive in part (the counts
  are exact in rows; ``dropped_batches`` counts a batch once).

A subscriber that dies or closes (its socket's EOF, or the ring reports the
peer gone) is detached and its ring unlinked. ``close()`` writes end of stream
to every subscriber (waiting at most ``block_timeout_ms``, 100 ms with policy
"drop", for room) and lets them go.

Capabilities: the defaults (not exactly-once): a subscriber sees batches as the
sink writes them, before their epoch commits, so after an engine crash and
recovery it may see rows again (at-least-once at best), and nothing is kept for
a subscriber that attaches later.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import pyarrow as pa
from msgspec import Meta

from connectors.base import ConnectorConfig, Sink, WriteResult
from connectors.options import Options
from engine.attach.endpoint import Attached, Attachments, Endpoint, Peer, log
from engine.attach.protocol import DEFAULT_DIR, schema_to_text, socket_path
from engine.errors import ConfigError, ConnectorError, FrameTooLargeError, PeerGoneError
from engine.shm import Ring
from engine.shm.segment import check_capacity
from engine.shm.writer import RingWriter, split_to_fit


@dataclass
class _Subscriber:
    peer: Peer
    ring: Ring
    writer: RingWriter
    rows: int = 0  # rows written into its ring
    dropped_batches: int = 0
    dropped_rows: int = 0


class SubscribeOptions(Options, frozen=True):
    dir: str = DEFAULT_DIR
    max_clients: Annotated[int, Meta(ge=1)] = 16
    policy: Literal["block", "drop"] = "block"
    ring_capacity: Annotated[int, Meta(ge=1 << 16)] = 4 << 20
    block_timeout_ms: Annotated[int, Meta(ge=1)] = 5_000


class SubscribeSink(Sink, Attached):
    """Every batch to every attached subscriber (see the module docstring)."""

    options_type = SubscribeOptions

    def open(self, config: ConnectorConfig) -> None:
        super().open(config)
        where = f"sinks.{config.name}"
        opts: SubscribeOptions = self.options
        self._policy = opts.policy
        self._capacity = opts.ring_capacity
        try:
            check_capacity(self._capacity)
        except ConfigError as exc:
            raise ConfigError(f"{where}.ring_capacity: {exc}") from None
        self._block_s = opts.block_timeout_ms / 1000
        self._dir = Path(opts.dir)
        self._label = f"subscribe sink {config.name!r}"
        self._limit = self._capacity // 4
        self._max_clients = opts.max_clients
        self._subs: Attachments[_Subscriber] = Attachments()
        self._counts = dict.fromkeys(
            ("total", "batches", "dropped_batches", "dropped_rows", "stuck", "dead"), 0
        )
        self._endpoint: Endpoint | None = None
        self._schema: pa.Schema | None = config.schema
        if self._schema is not None:
            self._start()

    @property
    def path(self) -> Path:
        return socket_path(self._dir, self.config.name, "sink")

    def _start(self) -> None:
        self._endpoint = Endpoint(
            self.path, self._label, "subscribe", self._welcome, max_peers=self._max_clients
        )
        self._endpoint.start()

    def _welcome(self, peer: Peer) -> dict[str, Any]:  # the accept thread
        schema = self._schema
        if schema is None:
            raise ConnectorError(f"{self._label} is not open")
        self._subs.reserve(
            self._max_clients,
            f"{self._label} already has {self._subs.live} subscribers "
            f"(max_clients={self._max_clients})",
        )
        try:
            ring = Ring.create(self._capacity)
            try:
                writer = ring.writer()
                writer.write_schema(schema, timeout=0)
            except BaseException:
                ring.close()
                raise
        except BaseException:
            self._subs.release()
            raise
        peer.ring = ring
        self._subs.add(_Subscriber(peer, ring, writer))
        with self._subs.lock:
            self._counts["total"] += 1
        return {
            "ring": ring.name,
            "capacity": self._capacity,
            "schema": schema_to_text(schema),
            "policy": self._policy,
        }

    def _tend(self) -> None:
        """Take in new subscribers; detach those whose connection closed."""
        for s in [s for s in self._subs.adopt() if s.peer.hung_up]:
            self._detach(s, "dead", "its connection closed")

    # -- writing ----------------------------------------------------------------------
    def write_batch(self, batch: pa.RecordBatch) -> WriteResult:
        if self._endpoint is None:
            self._schema = batch.schema
            self._start()
        assert self._schema is not None
        self._tend()
        if self._subs.current and batch.num_rows:
            if batch.schema is not self._schema and not batch.schema.equals(self._schema):
                batch = pa.RecordBatch.from_arrays(batch.columns, schema=self._schema)
            pieces = split_to_fit(batch, self._limit)
            for s in list(self._subs.current):
                self._deliver(s, pieces)
            self._counts["batches"] += 1
        return WriteResult(batch.num_rows, batch.nbytes)

    def _deliver(self, s: _Subscriber, pieces: list[pa.RecordBatch]) -> None:
        lost = 0
        for piece in pieces:
            try:
                if self._policy == "drop":
                    ok = s.writer.offer_batch(piece)
                else:
                    ok = s.writer.write_batch(piece, timeout=self._block_s)
            except FrameTooLargeError as exc:  # one row larger than the ring: nobody gets it
                log(f"{self._label}: {exc}")
                lost += piece.num_rows
                continue
            except PeerGoneError as exc:
                self._detach(s, "dead", f"its ring reports it gone: {exc}")
                return
            if ok:
                s.rows += piece.num_rows
            elif self._policy == "drop":
                lost += piece.num_rows
            else:
                ms = round(self._block_s * 1000)
                self._detach(s, "stuck", f"its ring stayed full for {ms} ms (policy block)")
                return
        if lost:  # a batch counts once, however many of its slices were lost
            s.dropped_batches += 1
            s.dropped_rows += lost
            self._counts["dropped_batches"] += 1
            self._counts["dropped_rows"] += lost

    def _detach(self, s: _Subscriber, kind: str, reason: str | None) -> None:
        self._subs.current.remove(s)
        self._subs.release()
        s.peer.drop(
            {"end": reason, "dropped_batches": s.dropped_batches, "dropped_rows": s.dropped_rows}
        )
        s.writer.close()
        s.ring.close()
        if kind in self._counts:
            self._counts[kind] += 1
        if kind != "ended" or reason is not None:
            log(
                f"{self._label}: subscriber pid {s.peer.pid} detached after {s.rows} rows: {reason}"
            )

    def begin_epoch(self, epoch: int) -> None:
        self._tend()

    def flush(self) -> None:
        self._tend()

    def metrics(self) -> dict[str, float]:
        c = self._counts
        return {
            "subscribers": float(self._subs.count),
            "subscribers_total": float(c["total"]),
            "batches_written": float(c["batches"]),
            "dropped_batches": float(c["dropped_batches"]),
            "dropped_rows": float(c["dropped_rows"]),
            "detached_stuck": float(c["stuck"]),
            "detached_dead": float(c["dead"]),
        }

    def close(self) -> None:
        """End of stream to every subscriber, then let them go. Idempotent."""
        self.close_endpoint()
        c = self._counts
        if c["dropped_batches"]:
            log(
                f"{self._label}: dropped {c['dropped_batches']} batches "
                f"({c['dropped_rows']} rows) for slow subscribers (policy drop)"
            )

    def _end_all(self) -> None:
        self._tend()
        wait = self._block_s if self._policy == "block" else 0.1
        for s in list(self._subs.current):
            reason = None
            try:
                if not s.writer.write_eos(timeout=wait):
                    reason = "the pipeline ended while this subscriber's ring was full"
            except PeerGoneError as exc:
                reason = f"its ring reports it gone: {exc}"
            self._detach(s, "ended", reason)
