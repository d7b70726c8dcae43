"""The coordinator's children: spawn, wait until ready, talk, watch, stop.

``Supervisor.spawn(spec)`` starts one child through a fork server (never a
plain ``fork`` of the coordinator, which by then may have used pyarrow's thread
pools; the server has not — its only threads are OpenBLAS's and jemalloc's,
and both libraries make themselves safe across ``fork``). ``start_forkserver()``
starts that server — a fresh interpreter that imports the modules every child
needs (``PRELOAD``: pyarrow, numpy, the runners) and then forks one child per
request — so children start in milliseconds instead of each paying for an
interpreter and its imports (about 0.3 CPU-s each). ``python -m engine run``
starts it first thing, so its imports overlap the coordinator's planning;
``spawn`` starts it if nobody did. It runs with SIGINT and SIGTERM blocked, and
its children inherit that mask (``engine.child`` ignores them, so a signal to
the whole process group reaches only the coordinator's drain). It ends when the
coordinator and every child have closed its "alive" pipe (children close their
copy at once, ``engine.child``): a coordinator killed by SIGKILL takes the
server with it, and the server's death SIGKILLs the children (their
``PR_SET_PDEATHSIG``). ``stop_forkserver()`` ends it at the end of a run, so a
later run in the same process (a library user's) starts one with its own
environment (the server's environment, not the coordinator's, is the one a
forked child inherits). The server imports with Python's default path, not the
coordinator's ``sys.path`` (multiprocess passes it but does not apply it): a
child that finds another copy of the engine than its coordinator's stops,
saying so (``engine.child``). If the server dies (killed), starting a child
raises ``ChildFailedError`` and the next attempt starts a new server.

``await_ready()`` waits for every child's ``Ready`` and checks its pinning.
``poll()`` yields every control message that has arrived; a child that died, or
sent ``Failed``, is a ``ChildFailedError`` naming it, its pid and exit status
(and its traceback; ``permanent`` when the child says the same input would fail
again). ``send`` to a child that has just died is that child's failure, not the
coordinator's. ``shutdown()`` kills every child still alive (their state comes
from the checkpoint; nothing is lost that was committed) and closes the pipes.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import msgspec
import multiprocess as mp
from multiprocess import connection as mp_connection
from multiprocess import forkserver, resource_tracker

from engine import child, control
from engine.errors import ChildFailedError

_CTX = mp.get_context("forkserver")
PRELOAD = ["engine.preload"]  # what and why: its docstring
READY_TIMEOUT_S = 120.0
STOP_GRACE_S = 5.0


def start_forkserver() -> None:
    """Start the fork server unless it runs; return at once (it imports ``PRELOAD`` meanwhile).

    multiprocess' resource tracker starts first: starting it unblocks SIGINT and
    SIGTERM, and the server must inherit them blocked.
    """
    global _stopping
    if _stopping is not None:  # the last run's server: let it go first
        _stopping.join()
        _stopping = None
    resource_tracker.ensure_running()
    _CTX.set_forkserver_preload(PRELOAD)
    with _stop_signals_blocked():
        forkserver.ensure_running()


@contextlib.contextmanager
def _stop_signals_blocked() -> Iterator[None]:
    """SIGINT and SIGTERM blocked in this thread: a server started meanwhile inherits that."""
    old = signal.pthread_sigmask(signal.SIG_BLOCK, child.STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def stop_forkserver() -> None:
    """Ask the fork server to exit once no child holds it (idempotent; returns at once).

    The library's own stop waits for the server's interpreter to exit (about 0.1 s
    with pyarrow loaded): a daemon thread does that wait, and a later
    ``start_forkserver`` waits for it (the server's lock).
    """
    global _stopping
    stop = forkserver._forkserver._stop  # noqa: SLF001 (the library's own stop; no public one)
    _stopping = threading.Thread(target=stop, name="fork server stop", daemon=True)
    _stopping.start()


_stopping: threading.Thread | None = None


class Interrupted(Exception):
    """A stop signal arrived while the children were starting (not an error: nothing ran)."""


@dataclass
class Child:
    role: str
    index: int
    name: str
    cpu: int
    slot: int
    process: Any  # multiprocess.Process
    conn: Any  # multiprocess.connection.Connection
    pid: int = 0
    done: bool = False

    @property
    def label(self) -> str:
        return (
            f"{self.role} {self.name!r} {self.index}" if self.name else f"{self.role} {self.index}"
        )

    @property
    def reporter(self) -> tuple[str, str, int]:
        """Who it is in the epoch protocol: ``(role, name, index)``."""
        return (self.role, self.name, self.index)


class Supervisor:
    def __init__(self) -> None:
        self.children: list[Child] = []

    def of(self, role: str) -> list[Child]:
        return [c for c in self.children if c.role == role]

    def spawn(self, spec: child.ChildSpec) -> Child:
        parent_end, child_end = _CTX.Pipe()
        proc = _CTX.Process(
            target=child.main,
            args=(msgspec.json.encode(spec), child_end),
            name=f"ringstream-{spec.role}-{spec.name or spec.index}",
            daemon=True,
        )
        start_forkserver()  # the child inherits the server's signal mask: both blocked
        try:
            with _stop_signals_blocked():  # (the library restarts a dead server here)
                proc.start()
        except (EOFError, OSError) as exc:
            child_end.close()
            parent_end.close()
            raise ChildFailedError(
                f"{spec.role} {spec.name or spec.index}: the fork server died before it "
                f"started this child ({type(exc).__name__}: {exc}); its own error, if any, "
                "is above on stderr"
            ) from None
        child_end.close()
        c = Child(spec.role, spec.index, spec.name, spec.cpu, spec.slot, proc, parent_end, proc.pid)
        self.children.append(c)
        return c

    def await_ready(self, interrupted: Any) -> list[str]:
        """Every child's ``Ready``, in spawn order; ``interrupted()`` true stops the wait."""
        deadline = time.monotonic() + READY_TIMEOUT_S
        pinning = []
        for c in self.children:
            msg: control.Message | None = None
            while not isinstance(msg, control.Ready):  # a connector's health may come first
                while not c.conn.poll(0.05):
                    self._check_alive(c)
                    if time.monotonic() > deadline:
                        raise ChildFailedError(
                            f"{c.label} (pid {c.pid}) did not start within "
                            f"{READY_TIMEOUT_S:.0f} s"
                        )
                    if interrupted():
                        raise Interrupted
                msg = self._recv(c)
                if isinstance(msg, control.Failed):
                    raise ChildFailedError(failure(c, msg), permanent=msg.permanent)
            if msg.affinity and msg.affinity != [c.cpu]:
                raise ChildFailedError(
                    f"{c.label} (pid {c.pid}) asked for CPU {c.cpu} but runs on {msg.affinity}"
                )
            pinning.append(f"{c.label} pid {c.pid} cpu {c.cpu}")
        return pinning

    def poll(self) -> Iterator[tuple[Child, control.Message]]:
        """Every message that arrived, child by child; then check each is alive."""
        for c in self.children:
            while not c.done and c.conn.poll():
                msg = self._recv(c)
                if isinstance(msg, control.Failed):
                    raise ChildFailedError(failure(c, msg), permanent=msg.permanent)
                if isinstance(msg, control.Done):
                    c.done = True
                yield c, msg
            self._check_alive(c)

    @property
    def all_done(self) -> bool:
        return all(c.done for c in self.children)

    def send(self, c: Child, msg: control.Message) -> None:
        """Send ``msg`` to ``c``; a child that died since it was last checked is a failure.

        Its end of the pipe is closed, so the write fails with ``BrokenPipeError``
        (or ``ConnectionResetError``): that is the child's death, not the
        coordinator's, and it restarts the run like any other. A child that
        exited 0 ended normally (its ``Done`` is still unread): it needs nothing more.
        """
        try:
            control.send(c.conn, msg)
        except OSError:
            c.process.join(5)
            if c.process.exitcode == 0:
                return
            self._check_alive(c)
            raise ChildFailedError(
                failure(c, None) + f" before it could be sent {type(msg).__name__}"
            ) from None

    def send_all(self, role: str, msg: control.Message) -> None:
        for c in self.of(role):
            if not c.done:
                self.send(c, msg)

    def wait(self, timeout: float) -> None:
        """Sleep until a child that is not done sends a message or exits, or ``timeout`` s;
        return at once when every child is done (nothing is left to wait for: sleeping
        would only add to the run's time)."""
        live = [c for c in self.children if not c.done]
        if live:
            mp_connection.wait([c.conn for c in live] + [c.process.sentinel for c in live], timeout)

    def join(self, timeout: float) -> None:
        for c in self.children:
            c.process.join(timeout)

    def shutdown(self) -> None:
        """Kill every child still alive, wait for it, close every pipe. Idempotent."""
        alive = [c for c in self.children if c.process.is_alive()]
        for c in alive:
            c.process.kill()
        for c in alive:
            c.process.join(STOP_GRACE_S)
        for c in self.children:
            c.conn.close()
        self.children = []

    # -- internals ------------------------------------------------------------------------
    def _recv(self, c: Child) -> control.Message:
        """The child's next message; a closed pipe means the child is gone: say how."""
        try:
            return control.recv(c.conn)
        except (EOFError, OSError):
            c.process.join(5)
            self._check_alive(c)
            raise ChildFailedError(failure(c, None) + " without reporting the end") from None

    def _check_alive(self, c: Child) -> None:
        proc = c.process
        if not proc.is_alive() and proc.exitcode not in (0, None):
            failed = None
            try:
                while c.conn.poll():
                    msg = control.recv(c.conn)
                    if isinstance(msg, control.Failed):
                        failed = msg
            except (EOFError, OSError):
                pass
            permanent = failed is not None and failed.permanent
            raise ChildFailedError(failure(c, failed), permanent=permanent)


def failure(c: Child, msg: control.Failed | None) -> str:
    """``<label> (pid N) exited with code C: <error>`` and the child's traceback."""
    code = c.process.exitcode
    how = (
        f"was killed by {signal.Signals(-code).name}"
        if code is not None and code < 0
        else "exited with code 255 (or was lost with its fork server, which reads the same)"
        if code == 255
        else f"exited with code {code}"
        if code is not None
        else "failed"
    )
    text = f"{c.label} (pid {c.pid}) {how}"
    if msg is not None:
        text += f": {msg.error}\n--- traceback from {c.label} ---\n{msg.traceback.rstrip()}"
    return text
