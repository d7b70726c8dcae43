"""The epoch protocol, as objects: one numbering for the code, the fault points and the docs.

An epoch is the span of the stream closed by barrier N; it is also the id of
checkpoint N. Steps (the same numbers in ``engine.faults``, the checkpoint
store, the runners and docs/architecture.md):

1. **Open.** The coordinator opens epoch N (``EpochTracker.open``) and sends
   ``Barrier(N)`` to every live source.
2. **Source offset.** Between two polls, each source reports its position
   after the last row it wrote, then writes BARRIER(N) into each of its rings.
3. **Worker snapshot.** Each worker aligns BARRIER(N) over its inputs, writes
   its state file, forwards BARRIER(N), and reports the file.
4. **Sink pre-commit.** Each sink aligns BARRIER(N), stages the epoch
   (``pre_commit``: durable, invisible), writes its final stage's state, and
   reports its committable.
5. **Manifest.** With every report of N in (``PendingEpoch.is_complete``), the
   coordinator writes manifest N from the ``CompletedEpoch`` — atomically and
   durably: the point of no return.
6. **Commit.** ``Commit(N)`` to every sink (``commit_epoch``, idempotent) and
   ``NotifyCommitted(N)`` to every source (a CDC source acks its slot here);
   each sink confirms with ``Committed(N)``.
7. **Committed.** With every sink's confirmation, manifest N is marked
   committed — only then is "epoch N committed" said.

Recovery: the newest valid manifest N is loaded; sinks re-drive step 6 for N
and discard anything staged later; sources restore their offsets and workers
their state; the next epoch is N + 1.

``PendingEpoch`` knows at birth who must report (every live source instance,
worker and sink); ``acknowledge`` returns ``Ack.ACCEPTED``, ``DUPLICATE`` (a
second report from the same child: ignored, never overwriting) or
``UNKNOWN`` (a reporter this epoch does not expect). A child that ends
without reporting — a worker whose inputs ended, a source whose final report
came in an earlier epoch — is ``excuse``d. A complete epoch is finalised into
an immutable ``CompletedEpoch``, from which the manifest is built.
``EpochTracker`` holds at most one epoch open at a time and completes epochs
in order.

Not guaranteed: periodic epochs after a source finished (a bounded source
joined with an endless one commits the rest at the end).
"""

from __future__ import annotations

import enum
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from engine import control
from engine.checkpoint.manifest import FORMAT_VERSION, Manifest
from engine.pipeline import Pipeline
from engine.progress import EpochStat

Reporter = tuple[str, str, int]  # (role, name, index): ("source", "events", 0), ("worker", "", 3)


class Ack(enum.Enum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    UNKNOWN = "unknown"


@dataclass
class PendingEpoch:
    """Epoch N in flight: who must report, what has come in (see the module docstring)."""

    epoch: int
    expected: frozenset[Reporter]
    started: float = field(default_factory=time.monotonic)
    reports: dict[Reporter, control.Checkpointed] = field(default_factory=dict)
    excused: set[Reporter] = field(default_factory=set)

    def acknowledge(self, who: Reporter, report: control.Checkpointed) -> Ack:
        if who not in self.expected:
            return Ack.UNKNOWN
        if who in self.reports:
            return Ack.DUPLICATE
        self.reports[who] = report
        return Ack.ACCEPTED

    def excuse(self, who: Reporter) -> None:
        """``who`` ended and will not report (its last report covers this epoch)."""
        if who in self.expected and who not in self.reports:
            self.excused.add(who)

    @property
    def outstanding(self) -> frozenset[Reporter]:
        return self.expected - self.reports.keys() - self.excused

    def is_complete(self) -> bool:
        return not self.outstanding

    def finalize(self, finished: Mapping[Reporter, control.Checkpointed]) -> CompletedEpoch:
        """The immutable record of this complete epoch; ``finished``: sources' final reports."""
        assert self.is_complete(), f"epoch {self.epoch} still waits for {sorted(self.outstanding)}"
        by_role: dict[str, dict[tuple[str, int], control.Checkpointed]] = {
            "source": {}, "worker": {}, "sink": {}
        }  # fmt: skip
        for (role, name, index), r in self.reports.items():
            by_role[role][(name, index)] = r
        sources = by_role["source"]
        for (role, name, index), r in finished.items():  # sources that ended earlier:
            if role == "source" and (name, index) not in sources and r.epoch <= self.epoch:
                sources[(name, index)] = r  # their final position covers this epoch
        return CompletedEpoch(
            self.epoch,
            (time.monotonic() - self.started) * 1000,
            MappingProxyType(by_role["source"]),
            MappingProxyType({i: r for (_, i), r in by_role["worker"].items()}),
            MappingProxyType({i: r for (_, i), r in by_role["sink"].items()}),
        )


@dataclass(frozen=True)
class CompletedEpoch:
    """Every report of one epoch: sources by (name, instance), workers and sinks by index."""

    epoch: int
    duration_ms: float
    sources: Mapping[tuple[str, int], control.Checkpointed]
    workers: Mapping[int, control.Checkpointed]
    sinks: Mapping[int, control.Checkpointed]

    def stat(self) -> EpochStat:
        reports = [*self.workers.values(), *self.sinks.values()]
        return EpochStat(
            self.epoch,
            self.duration_ms,
            max((r.metrics.get("alignment_ms", 0.0) for r in reports), default=0.0),
            sum(r.state.bytes for r in reports if r.state is not None),
        )

    def manifest(self, pipeline: Pipeline) -> Manifest:
        """Manifest N (step 5): offsets, state files, committables, watermarks, figures."""
        offsets = {
            s.name: [
                {"position": r.position, "finished": r.finished, "exhausted": r.exhausted,
                 **({"watermark": r.marks} if r.marks is not None else {})}
                for r in (self.sources[(s.name, i)] for i in range(s.parallelism))
            ]
            for s in pipeline.sources
        }  # fmt: skip
        states = [r.state for _, r in sorted(self.workers.items()) if r.state is not None]
        states += [r.state for _, r in sorted(self.sinks.items()) if r.state is not None]
        stat = self.stat()
        return Manifest(
            format_version=FORMAT_VERSION,
            pipeline_id=pipeline.pipeline.name,
            pipeline_hash=pipeline.hash(),
            epoch=self.epoch,
            created_unix_s=time.time(),
            source_offsets=offsets,
            state_files=states,
            sink_committables={
                k.name: [self.sinks[n].committable] for n, k in enumerate(pipeline.sinks)
            },
            sink_status="pending",
            watermarks={
                f"worker {i}": r.watermark
                for i, r in self.workers.items()
                if r.watermark is not None
            },
            metrics={
                "duration_ms": stat.duration_ms,
                "alignment_ms": stat.alignment_ms,
                "state_bytes": float(stat.state_bytes),
            },
        )


class EpochTracker:
    """The coordinator's view of every epoch (see the module docstring)."""

    def __init__(self, reporters: list[Reporter], sinks: int, first_epoch: int) -> None:
        self.live = set(reporters)  # who reports for epochs opened from now on
        self.sinks = sinks
        self.next_epoch = first_epoch
        self.pending: dict[int, PendingEpoch] = {}
        self.finished: dict[Reporter, control.Checkpointed] = {}  # sources' final reports
        self.confirming: dict[int, set[int]] = {}  # step 6: manifest written, sinks confirming
        self.durable: int | None = None  # the last epoch whose manifest was written (step 5)
        self.committed: int | None = None  # the last epoch every sink confirmed (step 7)

    def recovering(self, epoch: int, confirmed: bool) -> None:
        """The run restarts from manifest ``epoch``; sinks re-drive step 6 unless ``confirmed``."""
        self.durable = epoch
        if confirmed:
            self.committed = epoch
        else:
            self.confirming[epoch] = set()

    @property
    def in_flight(self) -> bool:
        return bool(self.pending)

    def can_open(self) -> bool:
        """Step 1 may run: nothing in flight, and no source has ended (see 'Not guaranteed')."""
        return not self.pending and not self.finished

    def open(self) -> int:
        """Step 1: epoch N begins; every live child must report it."""
        n = self.next_epoch
        self.next_epoch += 1
        self.pending[n] = PendingEpoch(n, frozenset(self.live))
        return n

    def acknowledge(self, who: Reporter, report: control.Checkpointed) -> Ack:
        """Steps 2-4: a child's report of its part of epoch ``report.epoch``."""
        n = report.epoch
        if n not in self.pending:
            if n < self.next_epoch:  # an epoch already completed (or never opened)
                return Ack.UNKNOWN
            # a source's final report, or a drain's: the last epoch, opened by its first report
            self.pending[n] = PendingEpoch(n, frozenset(self.live))
            self.next_epoch = n + 1
        ack = self.pending[n].acknowledge(who, report)
        if ack is Ack.ACCEPTED and who[0] == "source" and report.finished:
            self.finished[who] = report
            self.live.discard(who)
            for e in self.pending.values():
                if e.epoch > n:
                    e.excuse(who)
        return ack

    def ended(self, who: Reporter) -> None:
        """A child is done: it reports no further epochs (its last report covers them)."""
        self.live.discard(who)
        for e in self.pending.values():
            if who[0] != "source" or who in self.finished:
                e.excuse(who)

    def complete(self) -> list[CompletedEpoch]:
        """Step 5's input: the epochs whose reports are all in, in order (each handed out once)."""
        out = []
        for n in sorted(self.pending):
            e = self.pending[n]
            for who in self.finished:
                if self.finished[who].epoch < n:
                    e.excuse(who)
            if not e.is_complete():
                break
            del self.pending[n]
            out.append(e.finalize(self.finished))
            self.durable = n
            self.confirming[n] = set()
        return out

    def confirmed(self, epoch: int, sink: int) -> bool:
        """Step 6 → 7: sink ``sink`` committed ``epoch``; True once every sink has."""
        waiting = self.confirming.get(epoch)
        if waiting is None:
            return False
        waiting.add(sink)
        if len(waiting) < self.sinks:
            return False
        del self.confirming[epoch]
        self.committed = epoch if self.committed is None else max(self.committed, epoch)
        return True
