"""The coordinator: the process ``python -m engine run`` starts.

Lifecycle (the code follows these numbers):

1. Sweep segments left by dead owners; pin itself to ``topology.coordinator``.
2. Create every ring (source instance × worker, worker → sink) and the
   counters segment. It owns them all and unlinks them in step 7, whatever happens.
3. Spawn every child with the ``spawn`` method — sink, workers, then sources —
   and wait for each ``Ready``; refuse to go on if a child's reported affinity
   is not the CPU it was given.
4. Supervise: every 100 ms read control messages and exit codes. A ``Failed``
   message or a non-zero exit stops the run with ``ChildFailedError`` naming
   the child, its pid and exit code (and its traceback).
5. On SIGINT/SIGTERM, drain: tell the sources to stop; they send EOS, workers
   flush, the sink publishes. A second signal, or ``drain_timeout`` expiring,
   skips the drain.
6. Print a progress line every second (the first after 0.5 s) (events in/out, rates, watermark, ring
   occupancy, backpressure) and a summary at the end.
7. Always: SIGTERM the children still alive, wait, SIGKILL, join; close and
   unlink every segment.

Not guaranteed: output of a run that failed or was killed is not published
(the Parquet sink renames its file only at the end); exactly-once across
crashes is the checkpoint issue's.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import TextIO

import msgspec
import multiprocess as mp

from engine import child, control
from engine.counters import NO_WATERMARK, Counters
from engine.errors import ChildFailedError, RingstreamError
from engine.pipeline import Pipeline
from engine.shm import Ring, sweep_stale
from engine.topology import Topology

_CTX = mp.get_context("spawn")
READY_TIMEOUT_S = 120.0
STOP_GRACE_S = 5.0


@dataclass
class Child:
    role: str
    index: int
    cpu: int
    slot: int
    process: object
    conn: object
    pid: int = 0
    done: bool = False

    @property
    def label(self) -> str:
        return f"{self.role} {self.index}"


@dataclass
class Summary:
    events: int
    output_rows: int
    elapsed_s: float
    output: str
    late_rows: int
    stopped_by: str | None = None
    pinning: list[str] = field(default_factory=list)

    @property
    def events_per_s(self) -> float:
        return self.events / self.elapsed_s if self.elapsed_s > 0 else 0.0


class Coordinator:
    def __init__(
        self,
        pipeline: Pipeline,
        topology: Topology,
        out: TextIO | None = sys.stderr,
        drain_timeout_s: float = 30.0,
    ) -> None:
        self.pipeline = pipeline
        self.topology = topology
        self.out = out
        self.drain_timeout_s = drain_timeout_s
        self.children: list[Child] = []
        self.rings: list[Ring] = []
        self.counters: Counters | None = None
        self._signals = 0
        self._signal_name: str | None = None

    def _say(self, text: str) -> None:
        if self.out is not None:
            print(text, file=self.out, flush=True)

    def _on_signal(self, signum: int, _frame: object) -> None:
        self._signals += 1
        self._signal_name = signal.Signals(signum).name

    def run(self) -> Summary:
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            return self._run()
        finally:
            self._shutdown()  # 7
            for s, handler in old.items():
                signal.signal(s, handler)

    def _run(self) -> Summary:
        p, t = self.pipeline, self.topology
        # 1. sweep and pin
        for name in sweep_stale():
            self._say(f"removed stale segment {name} (its owner is gone)")
        if hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, {t.coordinator})
        # 2. rings and counters
        sources, workers = p.source.parallelism, len(t.workers)
        src_rings = [[self._ring() for _ in range(workers)] for _ in range(sources)]
        out_rings = [self._ring() for _ in range(workers)]
        self.counters = Counters.create(sources + workers + 1)
        # 3. spawn sink, workers, sources; wait for Ready
        spec_pipeline = msgspec.json.encode(p)
        slot = 0

        def spawn(role: str, index: int, cpu: int, ins: list[Ring], outs: list[Ring]) -> None:
            nonlocal slot
            assert self.counters is not None
            spec = child.ChildSpec(
                role=role,
                index=index,
                cpu=cpu,
                pipeline=spec_pipeline,
                in_rings=[r.name for r in ins],
                out_rings=[r.name for r in outs],
                counters=self.counters.name,
                slots=self.counters.slots,
                slot=slot,
                parent=os.getpid(),
            )
            parent_end, child_end = _CTX.Pipe()
            proc = _CTX.Process(
                target=child.main,
                args=(msgspec.json.encode(spec), child_end),
                name=f"ringstream-{role}-{index}",
                daemon=True,
            )
            proc.start()
            child_end.close()
            self.children.append(Child(role, index, cpu, slot, proc, parent_end, proc.pid))
            slot += 1

        connectors = t.connectors
        spawn("sink", 0, connectors[0], out_rings, [])
        for w in range(workers):
            spawn(
                "worker", w, t.workers[w], [src_rings[s][w] for s in range(sources)], [out_rings[w]]
            )
        for s in range(sources):
            spawn("source", s, connectors[(s + 1) % len(connectors)], [], src_rings[s])
        pinning = self._await_ready()
        self._say("pinned: " + "; ".join(pinning))
        # 4-6. supervise, drain on signal, progress
        return self._supervise(pinning)

    def _ring(self) -> Ring:
        ring = Ring.create(self.topology.ring_capacity)
        self.rings.append(ring)
        return ring

    def _await_ready(self) -> list[str]:
        deadline = time.monotonic() + READY_TIMEOUT_S
        pinning = []
        for c in self.children:
            while not c.conn.poll(0.05):  # type: ignore[attr-defined]
                self._check_alive(c)
                if time.monotonic() > deadline:
                    raise ChildFailedError(
                        f"{c.label} (pid {c.pid}) did not start within {READY_TIMEOUT_S:.0f} s"
                    )
                if self._signals:
                    raise RingstreamError(f"interrupted by {self._signal_name} while starting")
            msg = self._recv(c)
            if isinstance(msg, control.Failed):
                raise ChildFailedError(_failure(c, msg))
            assert isinstance(msg, control.Ready)
            if msg.affinity and msg.affinity != [c.cpu]:
                raise ChildFailedError(
                    f"{c.label} (pid {c.pid}) asked for CPU {c.cpu} but runs on {msg.affinity}"
                )
            pinning.append(f"{c.label} pid {c.pid} cpu {c.cpu}")
        return pinning

    def _recv(self, c: Child) -> control.Message | None:
        """The child's next message; a closed pipe means the child is gone: say how."""
        try:
            return control.recv(c.conn)
        except (EOFError, OSError):
            c.process.join(5)  # type: ignore[attr-defined]
            self._check_alive(c)
            raise ChildFailedError(_failure(c, None) + " without reporting the end") from None

    def _check_alive(self, c: Child) -> None:
        proc = c.process
        if not proc.is_alive() and proc.exitcode not in (0, None):  # type: ignore[attr-defined]
            failure = None
            try:
                while c.conn.poll():  # type: ignore[attr-defined]
                    msg = control.recv(c.conn)
                    if isinstance(msg, control.Failed):
                        failure = msg
            except (EOFError, OSError):
                pass
            raise ChildFailedError(_failure(c, failure))

    def _supervise(self, pinning: list[str]) -> Summary:
        counters = self.counters
        assert counters is not None
        start = last_print = time.monotonic()
        last_in = 0
        stop_sent_at: float | None = None
        while True:
            for c in self.children:
                while not c.done and c.conn.poll():  # type: ignore[attr-defined]
                    msg = self._recv(c)
                    if isinstance(msg, control.Failed):
                        raise ChildFailedError(_failure(c, msg))
                    if isinstance(msg, control.Done):
                        c.done = True
                self._check_alive(c)
            if all(c.done for c in self.children):
                break
            if self._signals and stop_sent_at is None:  # 5. drain
                self._say(f"{self._signal_name}: draining (signal again to stop at once)")
                for c in self.children:
                    if c.role == "source" and not c.done:
                        control.send(c.conn, control.Stop())
                stop_sent_at = time.monotonic()
            if stop_sent_at is not None and (
                self._signals > 1 or time.monotonic() - stop_sent_at > self.drain_timeout_s
            ):
                raise RingstreamError(f"stopped by {self._signal_name} before the drain finished")
            now = time.monotonic()
            if now - last_print >= (1.0 if now - start > 1.0 else 0.5):  # 6. progress
                events = self._sum("source", "rows_out")
                self._say(
                    self._progress(now - start, events, (events - last_in) / (now - last_print))
                )
                last_in, last_print = events, now
            time.sleep(0.1)
        elapsed = time.monotonic() - start
        for c in self.children:
            c.process.join(10)  # type: ignore[attr-defined]
        return Summary(
            events=self._sum("source", "rows_out"),
            output_rows=self._sum("sink", "rows_in"),
            elapsed_s=elapsed,
            output=str(self.pipeline.sink.path),
            late_rows=self._sum("worker", "late_rows"),
            stopped_by=self._signal_name,
            pinning=pinning,
        )

    def _sum(self, role: str, name: str) -> int:
        assert self.counters is not None
        return sum(self.counters.get(c.slot, name) for c in self.children if c.role == role)

    def _progress(self, elapsed: float, events: int, rate: float) -> str:
        assert self.counters is not None
        marks = [
            self.counters.get(c.slot, "watermark") for c in self.children if c.role == "worker"
        ]
        marks = [m for m in marks if m != NO_WATERMARK]
        wm = f"{min(marks) / 1000:.3f}s" if marks else "-"
        occupancy = max((r.stats()["occupancy"] / r.capacity for r in self.rings), default=0.0)
        blocked = self._sum("source", "blocked_ns") / 1e9
        return (
            f"[{elapsed:6.1f}s] in {events:,} events ({rate / 1e6:.2f} M/s) | "
            f"out {self._sum('sink', 'rows_in'):,} rows | watermark {wm} | "
            f"rings max {occupancy:.0%} full | sources blocked {blocked:.1f}s"
        )

    def _shutdown(self) -> None:
        """7. SIGTERM, wait, SIGKILL every child; unlink every segment."""
        alive = [c for c in self.children if c.process.is_alive()]  # type: ignore[attr-defined]
        for c in alive:
            c.process.terminate()  # type: ignore[attr-defined]
        deadline = time.monotonic() + STOP_GRACE_S
        for c in alive:
            c.process.join(max(0.0, deadline - time.monotonic()))  # type: ignore[attr-defined]
            if c.process.is_alive():  # type: ignore[attr-defined]
                c.process.kill()  # type: ignore[attr-defined]
                c.process.join()  # type: ignore[attr-defined]
        for c in self.children:
            c.conn.close()  # type: ignore[attr-defined]
        for ring in self.rings:
            ring.close()
        if self.counters is not None:
            self.counters.close()


def _failure(c: Child, msg: control.Failed | None) -> str:
    code = c.process.exitcode  # type: ignore[attr-defined]
    how = (
        f"was killed by {signal.Signals(-code).name}"
        if code is not None and code < 0
        else f"exited with code {code}"
        if code is not None
        else "failed"
    )
    text = f"{c.label} (pid {c.pid}) {how}"
    if msg is not None:
        text += f": {msg.error}\n--- traceback from {c.label} ---\n{msg.traceback.rstrip()}"
    return text
