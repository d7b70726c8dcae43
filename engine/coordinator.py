"""The coordinator: the process ``python -m engine run`` starts.

Lifecycle (the methods follow these numbers; the epoch protocol has its own
steps, 1-7, in ``engine.epochs``):

L1. Prepare: sweep segments left by dead owners; pin to
    ``topology.coordinator``; with checkpoints on, lock the checkpoint
    directory (one live run per directory, ``engine.checkpoint.lock``).
L2. Recover: the newest valid manifest (a corrupt or truncated one is reported
    and skipped); refuse one written by a different pipeline or worker count;
    a bounded run whose manifest says it completed does nothing.
L3. Wire: every ring (``engine.wiring``) and the counters segment.
L4. Spawn every child (``engine.supervisor``) — sinks, workers, sources —
    each with what the manifest recorded for it, and wait for each ``Ready``.
L5. Supervise until every child is done: control messages; epochs (open
    every ``interval_ms`` or when a source asks; write the manifest of each
    complete one; send commits; mark them committed); on SIGINT/SIGTERM drain
    (sources stop and report their final offsets, workers snapshot what is
    open, sinks commit the last epoch); a progress line every second. A child
    that fails is a ``ChildFailedError``: every child is stopped and, with
    checkpoints on and the failure not permanent, the run restarts from L2
    (at most ``max_restarts`` times, the backoff doubling each time).
L6. Always: kill the children still alive, close and unlink every segment,
    release the lock.

Not guaranteed: without checkpoints a failed run is not recovered and its
sinks' uncommitted output is discarded at the next start; rescaling (a
different worker count) from a checkpoint is refused, not supported.
"""

from __future__ import annotations

import os
import sys
import time
from typing import TextIO

import engine
from engine import control, faults, log
from engine.checkpoint.recovery import recover
from engine.counters import Counters
from engine.epochs import Ack, EpochTracker
from engine.errors import ChildFailedError, RingstreamError
from engine.monitor import Monitor
from engine.pipeline import Pipeline
from engine.plan import Plan
from engine.progress import EpochStat, Progress, Summary, outputs
from engine.shm import sweep_stale
from engine.signals import StopSignals
from engine.supervisor import Interrupted, Supervisor, stop_forkserver
from engine.topology import Topology
from engine.wiring import Wiring

# The longest the supervision loop sleeps with nothing to do: how soon it sees a stop
# signal (a child's message or death, or the next epoch's time, wakes it at once; a
# signal does not: the wait resumes after the handler, PEP 475).
IDLE_WAKE_S = 0.05


class Coordinator:
    def __init__(
        self,
        pipeline: Pipeline,
        topology: Topology,
        out: TextIO | None = sys.stderr,
        drain_timeout_s: float = 30.0,
        plan: Plan | None = None,
        signals: StopSignals | None = None,
    ) -> None:
        self.pipeline, self.topology, self.out = pipeline, topology, out
        if out is not None and not log.LOGGER.handlers:  # used as a library: log to ``out``
            log.setup("human", stream=out)
        self.drain_timeout_s = drain_timeout_s
        self.plan = plan or Plan.build(pipeline, len(topology.workers))
        self.store = None
        self.lock = None
        self.supervisor = Supervisor()
        self.wiring: Wiring | None = None
        self.counters: Counters | None = None
        self.monitor = Monitor(pipeline)  # metrics endpoint, run file
        self.signals = signals
        self._stats: list[EpochStat] = []
        self._started = time.monotonic()

    def say(self, text: str, event: str = "info", **fields: object) -> None:
        """One line for the log (``engine.log``); nothing with ``out=None`` (``--quiet``)."""
        if self.out is not None:
            log.say(event, text, **fields)

    @property
    def _signals(self) -> int:
        return self.signals.count if self.signals is not None else 0

    @property
    def _signal_name(self) -> str | None:
        return self.signals.name if self.signals is not None else None

    def run(self) -> Summary:
        own = self.signals is None
        if own:
            self.signals = StopSignals().install()
        summary, error = None, None
        try:
            self._prepare()
            if self._signals:  # stopped while the pipeline was being read: nothing ran
                summary = Summary(0, 0, 0.0, self._outputs(), stopped_by=self._signal_name)
            else:
                summary = self._run()
            return summary
        except BaseException as exc:
            error = f"{type(exc).__name__}: {exc}".splitlines()[0]
            raise
        finally:
            self._shutdown()
            stop_forkserver()  # the next run forks from a server with that run's environment
            self.monitor.finish(summary, error)  # only if it started: never another run's file
            if self.lock is not None:
                self.lock.release()
            if own and self.signals is not None:
                self.signals.restore()

    def _prepare(self) -> None:
        """L1."""
        for name in sweep_stale():
            self.say(f"removed stale segment {name} (its owner is gone)", "cleanup", segment=name)
        if hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, {self.topology.coordinator})
        p = self.pipeline
        if p.checkpointing:
            from engine.checkpoint.lock import DirectoryLock
            from engine.checkpoint.store import CheckpointStore

            lock = DirectoryLock(p.checkpoint_dir)
            lock.acquire()
            self.lock = lock
            self.store = CheckpointStore(p.checkpoint_dir, keep=p.checkpoint.keep)
        self.monitor.start()

    def _run(self) -> Summary:
        p = self.pipeline
        restarts, earlier = 0, None
        while True:
            manifest = self._recover()  # L2
            if manifest is not None and manifest.complete and manifest.sink_status == "committed":
                return self._already_complete(manifest.epoch, restarts, earlier)
            try:
                summary = self._attempt(manifest)
            except ChildFailedError as exc:
                gave_up = restarts >= p.checkpoint.max_restarts
                if not p.checkpointing or exc.permanent or gave_up or self._signals:
                    if p.checkpointing and gave_up and not exc.permanent:
                        raise ChildFailedError(
                            f"{exc}\n(gave up after {restarts} restart(s): "
                            f"checkpoint.max_restarts = {p.checkpoint.max_restarts})"
                        ) from None
                    raise
                restarts += 1
                self.monitor.restarted()
                backoff = p.checkpoint.restart_backoff_ms / 1000 * 2 ** (restarts - 1)
                self.say(
                    f"failure: {exc.args[0].splitlines()[0]}\nrestart {restarts}/"
                    f"{p.checkpoint.max_restarts} in {backoff:.1f} s from the last checkpoint",
                    "restart", error=exc.args[0].splitlines()[0], restart=restarts,
                    max_restarts=p.checkpoint.max_restarts, backoff_s=backoff,
                )  # fmt: skip
                lost = self._summary(time.monotonic() - self._started, None, None)
                if earlier is None:
                    earlier = lost
                else:
                    earlier.add(lost)
                self._shutdown()  # state comes from the checkpoint: no grace needed
                time.sleep(backoff)
                continue
            summary.restarts = restarts
            if earlier is not None:
                summary.add(earlier)
            return summary

    def _already_complete(self, epoch: int, restarts: int, earlier: Summary | None) -> Summary:
        if restarts and earlier is not None:  # a child died after the last commit
            self.say(f"epoch {epoch} completed the run before the failure; nothing to redo",
                     "recovered", epoch=epoch)  # fmt: skip
            earlier.restarts, earlier.restored_epoch, earlier.last_epoch = restarts, epoch, epoch
            earlier.epochs = list(self._stats)
            return earlier
        self.say(
            f"pipeline {self.pipeline.pipeline.name!r} already completed at epoch {epoch} "
            f"(checkpoints in {self.pipeline.checkpoint_dir}); delete that directory to run it "
            "again", "already_complete", epoch=epoch,
        )
        return Summary(0, 0, 0.0, self._outputs(), already_complete=True,
                       restored_epoch=epoch, last_epoch=epoch)  # fmt: skip

    def _recover(self):  # type: ignore[no-untyped-def]
        """L2. The newest valid manifest of this pipeline, or None."""
        if self.store is None:
            return None
        manifest = recover(self.store, self.pipeline, len(self.topology.workers), self.say)
        if manifest is not None:
            self.say(f"recovering from epoch {manifest.epoch} ({self.pipeline.checkpoint_dir})",
                     "recovering", epoch=manifest.epoch)  # fmt: skip
        return manifest

    def _attempt(self, manifest) -> Summary:  # type: ignore[no-untyped-def]
        """L3-L5, once."""
        p, t, plan = self.pipeline, self.topology, self.plan
        workers = len(t.workers)
        self.wiring = Wiring.create(p, plan.inputs, workers, t.ring_capacity, plan.direct)  # L3
        nsources = sum(s.parallelism for s in p.sources)
        self.counters = Counters.create(nsources + workers + len(p.sinks))
        first_epoch = manifest.epoch + 1 if manifest is not None else 1
        self._spawn_all(manifest, first_epoch)  # L4
        self._started = time.monotonic()
        try:
            pinning = self.supervisor.await_ready(lambda: self._signals)
        except Interrupted:
            self.say(f"{self._signal_name} while starting: stopped before any row was read",
                     "stopping", signal=self._signal_name)  # fmt: skip
            return Summary(0, 0, 0.0, self._outputs(), stopped_by=self._signal_name,
                           last_epoch=manifest.epoch if manifest else None)  # fmt: skip
        self.say("pinned: " + "; ".join(pinning), "pinned", children=pinning)
        self.monitor.attempt(self.counters, self.supervisor.children, self.wiring.labelled)
        return self._supervise(pinning, first_epoch, manifest)  # L5

    def _spawn_all(self, manifest, first_epoch: int) -> None:  # type: ignore[no-untyped-def]
        assert self.wiring is not None and self.counters is not None
        common = {
            "checkpoint_dir": str(self.pipeline.checkpoint_dir)
            if self.pipeline.checkpointing
            else "",
            "first_epoch": first_epoch,
            "counters": self.counters.name,
            "slots": self.counters.slots,
            "parent": os.getpid(),
            "log_format": "json" if log.is_json() else "human",
            "engine_dir": os.path.dirname(os.path.abspath(engine.__file__)),
        }
        for spec in self.wiring.specs(self.pipeline, self.plan, self.topology, manifest, common):
            self.supervisor.spawn(spec)

    def _supervise(self, pinning: list[str], first_epoch: int, manifest) -> Summary:  # type: ignore[no-untyped-def]
        """L5: until every child is done."""
        p, sup = self.pipeline, self.supervisor
        assert self.counters is not None and self.wiring is not None
        progress = Progress.of(self.counters, sup.children, self.wiring.rings)
        tracker = EpochTracker([c.reporter for c in sup.children], len(p.sinks), first_epoch)
        if manifest is not None:
            tracker.recovering(manifest.epoch, manifest.sink_status == "committed")
        start = last_print = last_epoch_at = self._started = time.monotonic()
        last_in, stop_sent_at, want_epoch = 0, None, False
        resuming, interval = manifest is not None, p.checkpoint.interval_ms / 1000
        while not sup.all_done:
            for c, msg in sup.poll():
                if isinstance(msg, control.Done):
                    tracker.ended(c.reporter)
                elif isinstance(msg, control.Checkpointed):
                    if tracker.acknowledge(c.reporter, msg) is not Ack.ACCEPTED:
                        self.say(f"warning: ignored a second or stray report of epoch "
                                 f"{msg.epoch} from {c.label}", "warning", epoch=msg.epoch,
                                 child=c.label)  # fmt: skip
                elif isinstance(msg, control.Committed):
                    if tracker.confirmed(msg.epoch, msg.index):
                        self._committed(msg.epoch)  # step 7
                        self.monitor.committed(tracker.committed)
                elif isinstance(msg, control.RequestCheckpoint):
                    want_epoch = True
                elif isinstance(msg, control.Health):
                    self.monitor.on_message(c, msg)
                    why = f": {msg.error}" if msg.error else ""
                    self.say(f"health: {c.label} is {msg.state}{why}", "health", child=c.label,
                             state=msg.state, error=msg.error)  # fmt: skip
                elif isinstance(msg, control.Metrics):
                    self.monitor.on_message(c, msg)
            for done in tracker.complete():  # steps 5 and 6
                faults.reached("coordinator.before_manifest", done.epoch)
                if self.store is not None:
                    self.store.write_manifest(done.manifest(p))
                faults.reached("coordinator.after_manifest", done.epoch)
                for k in sup.of("sink"):
                    if not k.done:
                        sup.send(k, control.Commit(done.epoch, done.sinks[k.index].committable))
                sup.send_all("source", control.NotifyCommitted(done.epoch))
                stat = done.stat()
                self._stats.append(stat)
                self.monitor.epoch(stat)
            now = time.monotonic()
            if resuming and progress.sum("source", "rows_in") > 0:
                self.say(f"processing again {now - start:.2f} s after the restart's children "
                         "were ready", "resumed", after_s=round(now - start, 3))  # fmt: skip
                resuming = False
            if (p.checkpointing and stop_sent_at is None and tracker.can_open()
                    and (want_epoch or now - last_epoch_at >= interval)):  # fmt: skip
                sup.send_all("source", control.Barrier(tracker.open()))  # step 1
                last_epoch_at, want_epoch = now, False
            if self._signals and stop_sent_at is None:  # drain
                self.say(f"{self._signal_name}: draining (signal again to stop at once)",
                         "stopping", signal=self._signal_name)  # fmt: skip
                sup.send_all("source", control.Stop())
                stop_sent_at = now
            if stop_sent_at is not None and (
                self._signals > 1 or now - stop_sent_at > self.drain_timeout_s
            ):
                raise RingstreamError(f"stopped by {self._signal_name} before the drain finished")
            if now - last_print >= (1.0 if now - start > 1.0 else 0.5):  # progress
                events = progress.sum("source", "rows_in")
                rate = (events - last_in) / (now - last_print)
                share = self.monitor.progress()
                self.say(progress.line(now - start, events, rate, tracker.committed, share),
                         "progress", events=events, rate=round(rate, 1),
                         committed_epoch=tracker.committed, done=share)  # fmt: skip
                last_in, last_print = events, now
            wait_s = IDLE_WAKE_S  # until a child speaks or exits, or the next epoch is due
            if p.checkpointing and stop_sent_at is None and tracker.can_open():
                wait_s = min(wait_s, max(0.0, last_epoch_at + interval - time.monotonic()))
            sup.wait(wait_s)
        sup.join(10)
        summary = self._summary(time.monotonic() - start, progress, tracker.committed)
        summary.pinning, summary.epochs = pinning, list(self._stats)
        summary.restored_epoch = manifest.epoch if manifest is not None else None
        summary.stopped_by = self._signal_name
        return summary

    def _committed(self, epoch: int) -> None:
        """Step 7: every sink confirmed ``epoch``."""
        # retention may already have dropped it (keep = 1, a later manifest written first)
        if self.store is not None and self.store.manifest_path(epoch).exists():
            self.store.mark_committed(epoch)
        if log.is_json():  # people see the committed epoch in the progress line
            stat = next((s for s in reversed(self._stats) if s.epoch == epoch), None)
            extra = {} if stat is None else {
                "duration_s": round(stat.duration_ms / 1000, 4),
                "alignment_s": round(stat.alignment_ms / 1000, 4),
                "state_bytes": stat.state_bytes}  # fmt: skip
            self.say(f"epoch {epoch} committed", "epoch", epoch=epoch, **extra)

    def _summary(self, elapsed: float, progress: Progress | None, committed: int | None) -> Summary:
        if progress is None:
            assert self.counters is not None
            progress = Progress.of(self.counters, self.supervisor.children, [])
        sinks = {self.pipeline.sinks[c.index].name: c.slot for c in self.supervisor.of("sink")}
        return progress.summary(self.pipeline, elapsed, sinks, committed)

    def _outputs(self) -> str:
        return outputs(self.pipeline)

    def _shutdown(self) -> None:
        """L6 (also between attempts): children, rings, counters."""
        self.monitor.end_attempt()  # before the segments close: a scrape may be reading them
        self.supervisor.shutdown()
        if self.wiring is not None:
            self.wiring.close()
            self.wiring = None
        if self.counters is not None:
            self.counters.close()
            self.counters = None
