"""The coordinator: the process ``python -m engine run`` starts.

Lifecycle (the code follows these numbers):

1. Sweep segments left by dead owners; pin itself to ``topology.coordinator``.
   Recovery: load the newest valid manifest (a corrupt or truncated one is
   reported and skipped, falling back to the one before); refuse one written
   by a different pipeline or worker count.
2. Create every ring (source instance × worker, worker × sink) and the
   counters segment. It owns them all and unlinks them in step 8.
3. Spawn every child with the ``spawn`` method — sinks, workers, then
   sources — each with what the manifest recorded for it (sink: epoch N and
   its committable, to re-commit; worker: its state file; source: its
   offset), and wait for each ``Ready``; refuse to go on if a child's
   reported affinity is not the CPU it was given.
4. Supervise: every 10 ms read control messages and exit codes. A ``Failed``
   message or a non-zero exit is a ``ChildFailedError`` naming the child,
   its pid and exit code (and its traceback): every child is stopped, and
   with checkpoints on the run restarts from step 1 (at most
   ``max_restarts`` times, the backoff doubling each time).
5. Epochs (DESIGN.md §5): every ``interval_ms`` (or when a source asks) open
   epoch N: ``Barrier(N)`` to each source (step 1–2 there), which injects
   BARRIER(N); workers align and snapshot (3); sinks pre-commit (4). With
   every report of N in — each source's offset, each worker's state file,
   each sink's committable — write **manifest N** (temp, fsync, rename, fsync
   dir: the point of no return), then ``Commit(N)`` to the sinks, then
   ``NotifyCommitted(N)`` to the sources; when every sink confirms, mark the
   manifest committed. One epoch is in flight at a time; the end of a
   bounded stream (or a drain) closes the last epoch the same way.
6. On SIGINT/SIGTERM, drain: tell the sources to stop; they report their
   final offsets and send EOS; sinks commit the last epoch. With checkpoints
   on, the EOS says "stopped" (``ring0.inputs.EOS_STOPPED``): workers
   snapshot what is still open (windows) into the last epoch instead of
   closing it early, and the next run resumes exactly there; without
   checkpoints they flush it. A second signal, or ``drain_timeout``
   expiring, skips the drain.
7. Print a progress line every second (events, rates, watermark, ring
   occupancy, backpressure, last checkpoint) and a summary at the end.
8. Always: SIGTERM the children still alive, wait, SIGKILL, join; close and
   unlink every segment.

Not guaranteed: without checkpoints a failed run is not recovered and its
sinks' uncommitted output is discarded at the next start; rescaling (a
different worker count) from a checkpoint is refused, not supported.
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

from engine import child, control, faults
from engine.counters import NO_WATERMARK, Counters
from engine.errors import ChildFailedError, ConfigError, RingstreamError
from engine.pipeline import Pipeline
from engine.plan import Plan
from engine.shm import Ring, sweep_stale
from engine.topology import Topology

_CTX = mp.get_context("spawn")
READY_TIMEOUT_S = 120.0
STOP_GRACE_S = 5.0


@dataclass
class Child:
    role: str
    index: int
    name: str
    cpu: int
    slot: int
    process: object
    conn: object
    pid: int = 0
    done: bool = False

    @property
    def label(self) -> str:
        return (
            f"{self.role} {self.name!r} {self.index}" if self.name else f"{self.role} {self.index}"
        )


@dataclass
class EpochStat:
    epoch: int
    duration_ms: float
    alignment_ms: float
    state_bytes: int


@dataclass
class Summary:
    events: int
    output_rows: int
    elapsed_s: float
    output: str
    late_rows: int
    stopped_by: str | None = None
    pinning: list[str] = field(default_factory=list)
    restarts: int = 0
    restored_epoch: int | None = None
    last_epoch: int | None = None
    epochs: list[EpochStat] = field(default_factory=list)
    already_complete: bool = False

    @property
    def events_per_s(self) -> float:
        return self.events / self.elapsed_s if self.elapsed_s > 0 else 0.0


@dataclass
class _Epoch:
    epoch: int
    started: float
    sources: dict[tuple[str, int], control.Checkpointed] = field(default_factory=dict)
    workers: dict[int, control.Checkpointed] = field(default_factory=dict)
    sinks: dict[int, control.Checkpointed] = field(default_factory=dict)
    committed: set[int] = field(default_factory=set)
    manifest: bool = False


class Coordinator:
    def __init__(
        self,
        pipeline: Pipeline,
        topology: Topology,
        out: TextIO | None = sys.stderr,
        drain_timeout_s: float = 30.0,
        plan: Plan | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.topology = topology
        self.out = out
        self.drain_timeout_s = drain_timeout_s
        self.plan = plan
        self.children: list[Child] = []
        self.rings: list[Ring] = []
        self.counters: Counters | None = None
        self.store = None
        self._signals = 0
        self._signal_name: str | None = None
        self._events = 0  # of attempts before the current one (replayed events count again)
        self._rows = 0  # rows their sinks received (rolled-back ones included)
        self._active_s = 0.0  # their running time (children ready -> failure)
        self._attempt_started = time.monotonic()
        self._stats: list[EpochStat] = []

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
            self._shutdown()  # 8
            for s, handler in old.items():
                signal.signal(s, handler)

    def _run(self) -> Summary:
        p, t = self.pipeline, self.topology
        for name in sweep_stale():  # 1
            self._say(f"removed stale segment {name} (its owner is gone)")
        if hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, {t.coordinator})
        if self.plan is None:
            self.plan = Plan.build(p, len(t.workers))
        if p.checkpointing:
            from engine.checkpoint.store import CheckpointStore

            self.store = CheckpointStore(p.checkpoint_dir, keep=p.checkpoint.keep)
        restarts = 0
        while True:
            manifest = self._recover()
            if manifest is not None and _complete(manifest) and manifest.sink_status == "committed":
                done = manifest.epoch
                if restarts:  # a child died after the last commit: this run is complete
                    self._say(f"epoch {done} completed the run before the failure; nothing to redo")
                    return Summary(self._events, self._rows, self._active_s, self._outputs(), 0,
                                   restarts=restarts, restored_epoch=done, last_epoch=done,
                                   epochs=list(self._stats))  # fmt: skip
                self._say(
                    f"pipeline {p.pipeline.name!r} already completed at epoch {done} "
                    f"(checkpoints in {p.checkpoint_dir}); delete that directory to run it again"
                )
                return Summary(0, 0, 0.0, self._outputs(), 0, already_complete=True,
                               restored_epoch=done, last_epoch=done)  # fmt: skip
            try:
                summary = self._attempt(manifest)
            except ChildFailedError as exc:
                if not p.checkpointing or restarts >= p.checkpoint.max_restarts or self._signals:
                    if p.checkpointing and restarts >= p.checkpoint.max_restarts:
                        raise ChildFailedError(
                            f"{exc}\n(gave up after {restarts} restart(s): "
                            f"checkpoint.max_restarts = {p.checkpoint.max_restarts})"
                        ) from None
                    raise
                restarts += 1
                backoff = p.checkpoint.restart_backoff_ms / 1000 * 2 ** (restarts - 1)
                self._say(
                    f"failure: {exc.args[0].splitlines()[0]}\nrestart {restarts}/"
                    f"{p.checkpoint.max_restarts} in {backoff:.1f} s from the last checkpoint"
                )
                self._events += self._sum("source", "rows_out")
                self._rows += self._sum("sink", "rows_in")
                self._active_s += time.monotonic() - self._attempt_started
                self._shutdown(hard=True)  # state comes from the checkpoint: no grace needed
                time.sleep(backoff)
                continue
            summary.restarts = restarts
            summary.elapsed_s += self._active_s
            summary.events += self._events
            summary.output_rows += self._rows
            return summary

    def _recover(self):  # type: ignore[no-untyped-def]
        """1. The newest valid manifest of this pipeline, or None."""
        if self.store is None:
            return None
        manifest = self.store.latest_valid(report=lambda text: self._say(f"checkpoint: {text}"))
        if manifest is None:
            self.store.discard_newer(-1)  # skipped manifests, state files of unfinished epochs
            return None
        p = self.pipeline
        if manifest.pipeline_hash != p.hash():
            raise ConfigError(
                f"checkpoint.dir: {p.checkpoint_dir} holds epoch {manifest.epoch} of a different "
                f"pipeline (hash {manifest.pipeline_hash}, this one {p.hash()}); use another "
                "checkpoint.dir or delete it to start over"
            )
        if _workers_of(manifest) and len(self.topology.workers) != _workers_of(manifest):
            raise ConfigError(
                f"topology: epoch {manifest.epoch} was checkpointed with "
                f"{_workers_of(manifest)} workers; this topology has "
                f"{len(self.topology.workers)} (rescaling from a checkpoint is not supported)"
            )
        self.store.discard_newer(manifest.epoch)
        self._say(f"recovering from epoch {manifest.epoch} ({p.checkpoint_dir})")
        return manifest

    def _attempt(self, manifest) -> Summary:  # type: ignore[no-untyped-def]
        p, t, plan = self.pipeline, self.topology, self.plan
        assert plan is not None
        self.children, self.rings = [], []
        workers = len(t.workers)
        # 2. rings and counters
        src_rings = {
            (s.name, i): [self._ring() for _ in range(workers)]
            for s in p.sources
            for i in range(s.parallelism)
        }
        sink_rings = {k.name: [self._ring() for _ in range(workers)] for k in p.sinks}
        self.counters = Counters.create(len(src_rings) + workers + len(p.sinks))
        # 3. spawn sinks, workers, sources; wait for Ready
        first_epoch = manifest.epoch + 1 if manifest is not None else 1
        base = {
            "pipeline": msgspec.json.encode(p),
            "workers": workers,
            "schemas": {k: v.serialize().to_pybytes() for k, v in plan.source_schemas.items()},
            "checkpoint_dir": str(p.checkpoint_dir) if p.checkpointing else "",
            "first_epoch": first_epoch,
            "counters": self.counters.name,
            "slots": self.counters.slots,
            "parent": os.getpid(),
        }
        connectors = t.connectors
        ncon = 0

        def spawn(role: str, index: int, name: str, cpu: int, **kw) -> None:  # type: ignore[no-untyped-def]
            slot = len(self.children)
            spec = child.ChildSpec(role=role, index=index, name=name, cpu=cpu, slot=slot,
                                   **base, **kw)  # fmt: skip
            parent_end, child_end = _CTX.Pipe()
            proc = _CTX.Process(
                target=child.main,
                args=(msgspec.json.encode(spec), child_end),
                name=f"ringstream-{role}-{name or index}",
                daemon=True,
            )
            proc.start()
            child_end.close()
            self.children.append(Child(role, index, name, cpu, slot, proc, parent_end, proc.pid))

        for n, k in enumerate(p.sinks):
            restore = None
            if manifest is not None:
                restore = {
                    "epoch": manifest.epoch,
                    "committable": (manifest.sink_committables.get(k.name) or [None])[0],
                    "state": self._state_ref(manifest, "sink", n),
                }
            spawn("sink", n, k.name, connectors[ncon % len(connectors)],
                  in_rings=[r.name for r in sink_rings[k.name]], out_rings=[],
                  restore=msgspec.json.encode(restore))  # fmt: skip
            ncon += 1
        for w in range(workers):
            ins, ports, idle = [], [], []
            for port, src in enumerate(plan.inputs):
                cfg = p.source_named(src)
                for i in range(cfg.parallelism):
                    ins.append(src_rings[(src, i)][w].name)
                    ports.append(port)
                    idle.append(cfg.idle_timeout_ms / 1000)
            restore = self._state_ref(manifest, "worker", w) if manifest is not None else None
            spawn("worker", w, "", t.workers[w], in_rings=ins, in_ports=ports, in_idle_s=idle,
                  out_rings=[sink_rings[k.name][w].name for k in p.sinks],
                  out_streams=[k.input for k in p.sinks],
                  restore=msgspec.json.encode(restore))  # fmt: skip
        for s in p.sources:
            offsets = manifest.source_offsets.get(s.name) if manifest is not None else None
            if offsets is not None and len(offsets) != s.parallelism:
                raise ConfigError(
                    f"sources.{s.name}.parallelism: epoch {manifest.epoch} was checkpointed with "
                    f"{len(offsets)} instances, this pipeline has {s.parallelism}"
                )
            for i in range(s.parallelism):
                pos = offsets[i].get("position") if offsets is not None else None
                spawn("source", i, s.name, connectors[ncon % len(connectors)],
                      in_rings=[], out_rings=[r.name for r in src_rings[(s.name, i)]],
                      restore=msgspec.json.encode(pos))  # fmt: skip
                ncon += 1
        pinning = self._await_ready()
        self._say("pinned: " + "; ".join(pinning))
        return self._supervise(pinning, first_epoch, manifest)

    def _state_ref(self, manifest, role: str, index: int) -> dict | None:  # type: ignore[no-untyped-def]
        assert self.store is not None
        for ref in manifest.worker_states:
            if ref.worker == _state_slot(role, index):
                return {"path": str(self.store.root / ref.path), "checksum": ref.crc32c_or_sha256}
        return None

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

    def _send(self, c: Child, msg: control.Message) -> None:
        """Send ``msg`` to ``c``; a child that died since it was last checked is a failure.

        Its end of the pipe is closed, so the write fails with ``BrokenPipeError``
        (or ``ConnectionResetError``): that is the child's death, not the
        coordinator's, and it restarts the run like any other. A child that
        exited 0 ended normally (its ``Done`` is still unread): it needs nothing more.
        """
        try:
            control.send(c.conn, msg)
        except OSError:
            c.process.join(5)  # type: ignore[attr-defined]
            if c.process.exitcode == 0:  # type: ignore[attr-defined]
                return
            self._check_alive(c)
            raise ChildFailedError(
                _failure(c, None) + f" before it could be sent {type(msg).__name__}"
            ) from None

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

    # 4-7 -----------------------------------------------------------------------------------

    def _supervise(self, pinning: list[str], first_epoch: int, manifest) -> Summary:  # type: ignore[no-untyped-def]
        p = self.pipeline
        start = last_print = last_epoch_at = self._attempt_started = time.monotonic()
        last_in = 0
        stop_sent_at: float | None = None
        self._epochs: dict[int, _Epoch] = {}
        self._finished: dict[tuple[str, int], control.Checkpointed] = {}
        self._next_epoch = first_epoch
        self._committed = manifest.epoch if manifest is not None else None
        if manifest is not None and manifest.sink_status != "committed":
            # 6. the sinks re-drive its commit as they start; their Committed marks it
            self._epochs[manifest.epoch] = _Epoch(manifest.epoch, start, manifest=True)
        want_epoch = False
        resuming = manifest is not None
        interval = p.checkpoint.interval_ms / 1000
        while True:
            for c in self.children:
                while not c.done and c.conn.poll():  # type: ignore[attr-defined]
                    msg = self._recv(c)
                    if isinstance(msg, control.Failed):
                        raise ChildFailedError(_failure(c, msg))
                    if isinstance(msg, control.Done):
                        c.done = True
                    elif isinstance(msg, control.Checkpointed):
                        self._on_checkpointed(c, msg)
                    elif isinstance(msg, control.Committed):
                        self._on_committed(msg)
                    elif isinstance(msg, control.RequestCheckpoint):
                        want_epoch = True
                    elif isinstance(msg, control.Health):
                        self._say(
                            f"health: {c.label} is {msg.state}"
                            + (f": {msg.error}" if msg.error else "")
                        )
                self._check_alive(c)
            self._complete_epochs()
            if all(c.done for c in self.children):
                break
            now = time.monotonic()
            if resuming and self._sum("source", "rows_out") > 0:
                self._say(
                    f"processing again {now - start:.2f} s after the restart's children were ready"
                )
                resuming = False
            if (  # 5. open the next epoch
                p.checkpointing
                and stop_sent_at is None
                and not self._finished
                and not any(not e.manifest for e in self._epochs.values())
                and (want_epoch or now - last_epoch_at >= interval)
            ):
                self._open_epoch()
                last_epoch_at, want_epoch = now, False
            if self._signals and stop_sent_at is None:  # 6. drain
                self._say(f"{self._signal_name}: draining (signal again to stop at once)")
                for c in self.children:
                    if c.role == "source" and not c.done:
                        self._send(c, control.Stop())
                stop_sent_at = now
            if stop_sent_at is not None and (
                self._signals > 1 or now - stop_sent_at > self.drain_timeout_s
            ):
                raise RingstreamError(f"stopped by {self._signal_name} before the drain finished")
            if now - last_print >= (1.0 if now - start > 1.0 else 0.5):  # 7. progress
                events = self._sum("source", "rows_out")
                self._say(
                    self._progress(now - start, events, (events - last_in) / (now - last_print))
                )
                last_in, last_print = events, now
            time.sleep(0.01)
        elapsed = time.monotonic() - start
        for c in self.children:
            c.process.join(10)  # type: ignore[attr-defined]
        return Summary(
            events=self._sum("source", "rows_out"),
            output_rows=self._sum("sink", "rows_in"),
            elapsed_s=elapsed,
            output=self._outputs(),
            late_rows=self._sum("worker", "late_rows"),
            stopped_by=self._signal_name,
            pinning=pinning,
            restored_epoch=manifest.epoch if manifest is not None else None,
            last_epoch=self._committed,
            epochs=list(self._stats),
        )

    def _outputs(self) -> str:
        return ", ".join(str(k.options.get("path", k.name)) for k in self.pipeline.sinks)

    def _open_epoch(self) -> None:
        n = self._next_epoch
        self._next_epoch += 1
        self._epochs[n] = _Epoch(n, time.monotonic())
        for c in self.children:
            if c.role == "source" and not c.done:
                self._send(c, control.Barrier(n))

    def _on_checkpointed(self, c: Child, msg: control.Checkpointed) -> None:
        e = self._epochs.get(msg.epoch)
        if e is None:
            e = self._epochs[msg.epoch] = _Epoch(msg.epoch, time.monotonic())
            self._next_epoch = max(self._next_epoch, msg.epoch + 1)
        if c.role == "source":
            e.sources[(c.name, c.index)] = msg
            if msg.finished:
                self._finished[(c.name, c.index)] = msg
        elif c.role == "worker":
            e.workers[c.index] = msg
        else:
            e.sinks[c.index] = msg

    def _on_committed(self, msg: control.Committed) -> None:
        e = self._epochs.get(msg.epoch)
        if e is None:
            return
        e.committed.add(msg.index)
        if len(e.committed) == len(self.pipeline.sinks):
            # retention may already have dropped it (keep = 1, a later manifest written first)
            if self.store is not None and self.store.manifest_path(msg.epoch).exists():
                self.store.mark_committed(msg.epoch)
            del self._epochs[msg.epoch]

    def _complete_epochs(self) -> None:
        """5. Write the manifest of each epoch whose reports are all in, in epoch order."""
        for n in sorted(self._epochs):
            e = self._epochs[n]
            if e.manifest:
                continue
            if not self._all_reported(e):
                return
            faults.reached("coordinator.before_manifest", n)
            if self.store is not None:
                self.store.write_manifest(self._manifest(e))
            faults.reached("coordinator.after_manifest", n)
            e.manifest = True
            self._committed = n
            for c in self.children:
                if c.role == "sink" and not c.done:
                    self._send(c, control.Commit(n, e.sinks[c.index].committable))
            for c in self.children:
                if c.role == "source" and not c.done:
                    self._send(c, control.NotifyCommitted(n))
            self._stats.append(self._stat(e))

    def _all_reported(self, e: _Epoch) -> bool:
        for c in self.children:
            if c.role == "source":
                key = (c.name, c.index)
                fin = self._finished.get(key)
                if key not in e.sources and not (fin is not None and fin.epoch <= e.epoch):
                    return False
            elif c.role == "worker":
                if c.index not in e.workers and not c.done:
                    return False
            elif c.index not in e.sinks:
                return False
        return True

    def _stat(self, e: _Epoch) -> EpochStat:
        reports = [*e.workers.values(), *e.sinks.values()]
        return EpochStat(
            e.epoch,
            (time.monotonic() - e.started) * 1000,
            max((r.metrics.get("alignment_ms", 0.0) for r in reports), default=0.0),
            int(sum((r.state or {}).get("bytes", 0) for r in reports)),
        )

    def _manifest(self, e: _Epoch):  # type: ignore[no-untyped-def]
        from engine.checkpoint.manifest import FORMAT_VERSION, Manifest, StateFileRef

        assert self.store is not None
        p = self.pipeline
        offsets: dict[str, list[dict]] = {}
        for s in p.sources:
            offsets[s.name] = []
            for i in range(s.parallelism):
                r = e.sources.get((s.name, i)) or self._finished[(s.name, i)]
                offsets[s.name].append(
                    {"position": r.position, "finished": r.finished, "exhausted": r.exhausted}
                )
        states = []
        for role, reports in (("worker", e.workers), ("sink", e.sinks)):
            for index, r in sorted(reports.items()):
                if r.state:
                    path = os.path.relpath(r.state["path"], self.store.root)
                    states.append(StateFileRef(_state_slot(role, index), path,
                                               r.state["bytes"], r.state["checksum"]))  # fmt: skip
        stat = self._stat(e)
        return Manifest(
            format_version=FORMAT_VERSION,
            pipeline_id=p.pipeline.name,
            pipeline_hash=p.hash(),
            epoch=e.epoch,
            created_unix_s=time.time(),
            source_offsets=offsets,
            worker_states=states,
            sink_committables={k.name: [e.sinks[n].committable] for n, k in enumerate(p.sinks)},
            sink_status="pending",
            watermarks={
                f"worker {i}": r.watermark for i, r in e.workers.items() if r.watermark is not None
            },  # fmt: skip
            metrics={
                "duration_ms": stat.duration_ms,
                "alignment_ms": stat.alignment_ms,
                "state_bytes": float(stat.state_bytes),
            },
        )

    def _sum(self, role: str, name: str) -> int:
        if self.counters is None:
            return 0
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
        ckpt = f" | epoch {self._committed} committed" if self._committed is not None else ""
        return (
            f"[{elapsed:6.1f}s] in {self._events + events:,} events ({rate / 1e6:.2f} M/s) | "
            f"out {self._sum('sink', 'rows_in'):,} rows | watermark {wm} | "
            f"rings max {occupancy:.0%} full | sources blocked {blocked:.1f}s{ckpt}"
        )

    def _shutdown(self, hard: bool = False) -> None:
        """8. SIGTERM (``hard``: SIGKILL), wait, SIGKILL every child; unlink every segment."""
        alive = [c for c in self.children if c.process.is_alive()]  # type: ignore[attr-defined]
        for c in alive:
            if hard:
                c.process.kill()  # type: ignore[attr-defined]
            else:
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
        self.children, self.rings, self.counters = [], [], None


def _state_slot(role: str, index: int) -> int:
    """Workers' state files are numbered 0..; a sink's final stage -(1 + its index)."""
    return index if role == "worker" else -1 - index


def _workers_of(manifest) -> int:  # type: ignore[no-untyped-def]
    return len({r.worker for r in manifest.worker_states if r.worker >= 0}) or 0


def _complete(manifest) -> bool:  # type: ignore[no-untyped-def]
    """Every source instance exhausted: a bounded run that finished and committed."""
    offsets = manifest.source_offsets
    return bool(offsets) and all(o.get("exhausted") for inst in offsets.values() for o in inst)


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
