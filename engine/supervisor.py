"""The coordinator's children: spawn, wait until ready, talk, watch, stop.

``Supervisor.spawn(spec)`` starts one child through a fork server (never a
plain ``fork`` of the coordinator: pyarrow keeps threads). ``start_forkserver()``
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
``PR_SET_PDEATHSIG``). ``stop_forkserver()`` ends it at the end of a run, so the
next run's children see that run's environment (the server's environment, not
the coordinator's, is the one a forked child inherits).

``await_ready()`` waits for every child's ``Ready`` and checks its pinning.
``poll()`` yields every control message that has arrived; a child that died, or
sent ``Failed``, is a ``ChildFailedError`` naming it, its pid and exit status
(and its traceback; ``permanent`` when the child says the same input would fail
again). ``send`` to a child that has just died is that child's failure, not the
coordinator's. ``shutdown()`` kills every child still alive (their state comes
from the checkpoint; nothing is lost that was committed) and closes the pipes.
"""

from __future__ import annotations

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
# engine.preload says what and why; engine.__main__ because multiprocess re-runs it in
# each child (as __mp_main__) when the coordinator is ``python -m engine``.
PRELOAD = ["engine.preload", "engine.__main__"]
READY_TIMEOUT_S = 120.0
STOP_GRACE_S = 5.0


def start_forkserver() -> None:
    """Start the fork server unless it runs; return at once (it imports ``PRELOAD`` meanwhile).

    multiprocess' resource tracker starts first: starting it unblocks SIGINT and
    SIGTERM, and the server must inherit them blocked.
    """
    resource_tracker.ensure_running()
    _CTX.set_forkserver_preload(PRELOAD)
    old = signal.pthread_sigmask(signal.SIG_BLOCK, child.STOP_SIGNALS)
    try:
        forkserver.ensure_running()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def stop_forkserver() -> None:
    """Ask the fork server to exit once no child holds it (idempotent; returns at once).

    The library's own stop waits for the server's interpreter to exit (about 0.1 s
    with pyarrow loaded): a daemon thread does that wait, and a later
    ``start_forkserver`` waits for it (the server's lock).
    """
    stop = forkserver._forkserver._stop  # noqa: SLF001 (the library's own stop; no public one)
    threading.Thread(target=stop, name="fork server stop", daemon=True).start()


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
        proc.start()
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
                            f"{c.label} (pid {c.pid}) did not start within {READY_TIMEOUT_S:.0f} s"
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
        """Sleep until a child that is not done sends a message or exits, or ``timeout`` s."""
        live = [c for c in self.children if not c.done]
        handles = [c.conn for c in live] + [c.process.sentinel for c in live]
        if handles:
            mp_connection.wait(handles, timeout)
        else:
            time.sleep(timeout)

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
        else f"exited with code {code}"
        if code is not None
        else "failed"
    )
    text = f"{c.label} (pid {c.pid}) {how}"
    if msg is not None:
        text += f": {msg.error}\n--- traceback from {c.label} ---\n{msg.traceback.rstrip()}"
    return text
