"""What every child does first and last: pin, verify, report, run, report.

Call order in a child: ignore SIGINT and SIGTERM (the coordinator drains on
Ctrl-C or ``kill``, and a signal to the whole process group — a shell's Ctrl-C,
systemd, ``timeout`` — must drain exactly like one to the coordinator alone;
children are forked with both signals blocked, so not even a child still
starting sees one) → let go of the fork server's "alive" pipe and ask the
kernel to kill it if the fork server dies, which it does when the
coordinator does (no orphans, even after a SIGKILL of the coordinator; the
next run sweeps the segments left) → pin to its CPU → read the affinity back
and report it in ``Ready`` → run its role → ``Done``. Any exception is sent
as ``Failed`` with the traceback and whether it is permanent
(``engine.errors.is_permanent``: the coordinator then ends the run instead of
restarting it), and the child exits 1. The coordinator never trusts a child's
pinning blindly: it compares the reported affinity with what it asked for.
"""

from __future__ import annotations

import gc
import os
import signal
import sys
import time
import traceback

import msgspec

from engine import control

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
#: The cyclic collector's young generation while running. The data path allocates many
#: short-lived tracked objects (a Kafka source: one message object per record, in lists
#: of thousands); with Python's 700 the collector scanned them while they were still
#: alive, 4.4% of the Kafka source's time. At 50,000 most are freed before a scan.
GC_YOUNG = 50_000


class ChildSpec(msgspec.Struct, kw_only=True):
    role: str  # "source" | "worker" | "sink"
    index: int  # the instance: source instance, worker number, sink number
    cpu: int
    pipeline: bytes  # the validated Pipeline, msgspec JSON
    in_rings: list[str]
    out_rings: list[str]
    counters: str
    slots: int
    slot: int
    parent: int  # the coordinator's pid: a child must not outlive it
    workers: int = 1
    schemas: dict[str, bytes] = {}  # source name -> Arrow IPC schema (no re-open in children)
    name: str = ""  # the source or sink this child runs
    in_ports: list[int] = []  # worker: the port (0 left / 1 right) of each input ring
    in_idle_s: list[float] = []  # worker, direct sink: idle timeout of each input (0 = never)
    out_streams: list[str] = []  # worker: the stream ("main" or a late output) of each out ring
    dead_letter_rings: list[str] = []  # source: one ring per sink of its dead-letter output
    direct_rings: list[str] = []  # source: one ring per "main" sink (engine.wiring: direct)
    checkpoint_dir: str = ""
    first_epoch: int = 1
    restore: bytes = b"null"  # role-specific JSON: what the last manifest recorded for it
    restore_marks: bytes = b"null"  # source: its watermark's state in the last manifest
    log_format: str = "human"  # the coordinator's --log-format (engine.log)
    engine_dir: str = ""  # where the coordinator's engine package is (the same code here)
    ring1_cpus: list[int] = []  # the topology's connectors: for a client library's threads

    def plan(self, pipeline):  # type: ignore[no-untyped-def]
        """The query plan, from the schemas the coordinator already read (no source re-open).

        Built once per process (before ``Ready``, so start-up is not counted as run time).
        """
        if "plan" not in _CACHE:
            import pyarrow as pa

            from engine.plan import Plan

            schemas = {k: pa.ipc.read_schema(pa.py_buffer(v)) for k, v in self.schemas.items()}
            _CACHE["plan"] = Plan.build(pipeline, self.workers, schemas=schemas)
        return _CACHE["plan"]

    def store(self):  # type: ignore[no-untyped-def]
        """The checkpoint store (None without checkpoints): where state files go."""
        if not self.checkpoint_dir:
            return None
        from engine.checkpoint.store import CheckpointStore

        return CheckpointStore(self.checkpoint_dir)


_CACHE: dict[str, object] = {}


def _peak_rss() -> int:
    """This process's peak resident set, in bytes (Linux reports KiB)."""
    import resource

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) * (1 if sys.platform == "darwin" else 1024)


def _die_with_parent(coordinator: int) -> None:
    """Linux: the kernel SIGKILLs this child when the coordinator dies (even by SIGKILL).

    The child's parent is the fork server (``engine.supervisor``), which exits when
    nothing holds its "alive" pipe: this child lets go of its copy first, so the
    coordinator's death ends the server and the server's ends this child.
    """
    from multiprocess import forkserver

    parent = os.getppid()  # before letting go: the server cannot have exited for our sake
    server = forkserver._forkserver  # noqa: SLF001 (the fd it hands each child; no public name)
    if server._forkserver_alive_fd is not None:
        os.close(server._forkserver_alive_fd)
        server._forkserver_alive_fd = None
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
    if os.getppid() != parent or not _alive(coordinator):  # died before prctl took effect
        os._exit(1)


def _same_code(spec: ChildSpec, conn) -> None:  # type: ignore[no-untyped-def]
    """Stop, saying why, if this child runs another copy of the engine than its coordinator.

    The fork server imports with Python's default path (multiprocess does not give it
    the coordinator's ``sys.path``), so a coordinator that put another checkout first
    on its path would get children running other code.
    """
    import engine

    here, there = os.path.dirname(os.path.abspath(engine.__file__)), spec.engine_dir
    if there and os.path.normcase(here) != os.path.normcase(there):
        error = (
            f"this child imported the engine from {here}, its coordinator from {there}: "
            "the fork server finds packages on the default path (the working directory, "
            "PYTHONPATH, site-packages); put that checkout there (PYTHONPATH or pip install -e)"
        )
        control.send(conn, control.Failed(spec.role, spec.index, os.getpid(), error, "",
                                          permanent=True))  # fmt: skip
        os._exit(1)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's (the pid was reused): not ours
        return False
    return True


def main(spec_bytes: bytes, conn) -> None:  # type: ignore[no-untyped-def]
    for s in STOP_SIGNALS:  # pending ones (blocked since the spawn) are discarded here
        signal.signal(s, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    spec = msgspec.json.decode(spec_bytes, type=ChildSpec)
    _die_with_parent(spec.parent)
    _same_code(spec, conn)
    from engine import log, memory

    memory.tune()  # before the first batch: freed temporaries stay mapped

    log.setup("json" if spec.log_format == "json" else "human", role=spec.role)
    try:
        import pyarrow as pa

        from engine.counters import Counters
        from engine.pipeline import Pipeline

        if hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, {spec.cpu})
            affinity = sorted(os.sched_getaffinity(0))
        else:
            affinity = []
        pa.set_cpu_count(1)  # one pinned core per process: Arrow's pool would only contend
        pipeline = msgspec.json.decode(spec.pipeline, type=Pipeline)
        counters = Counters.attach(spec.counters, spec.slots)
        if spec.role == "source":
            from ring1.source_runner import SourceRunner as Runner
        elif spec.role == "worker":
            from ring0.worker import Worker as Runner  # type: ignore[assignment]
        else:
            from ring1.sink_runner import SinkRunner as Runner  # type: ignore[assignment]
        spec.plan(pipeline)  # imports and checks every operator now, not on the clock
        runner = Runner(spec, pipeline, counters, conn)
        gc.freeze()  # what start-up built lives for the whole run: never scanned again
        gc.set_threshold(GC_YOUNG, *gc.get_threshold()[1:])
        control.send(conn, control.Ready(spec.role, spec.index, os.getpid(), spec.cpu, affinity))
        cpu = time.process_time_ns()
        runner.run()
        counters.set(spec.slot, "cpu_ns", time.process_time_ns() - cpu)  # running, not starting
        counters.set(spec.slot, "max_rss_bytes", _peak_rss())
        counters.close()
        control.send(conn, control.Done(spec.role, spec.index, os.getpid()))
    except BaseException as exc:  # reported to the coordinator, which re-raises it
        from engine.errors import is_permanent

        try:
            control.send(
                conn,
                control.Failed(
                    spec.role,
                    spec.index,
                    os.getpid(),
                    f"{type(exc).__name__}: {exc}",
                    traceback.format_exc(),
                    permanent=is_permanent(exc),
                ),
            )
        finally:
            sys.exit(1)
