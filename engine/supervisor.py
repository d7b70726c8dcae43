"""The coordinator's children: spawn, wait until ready, talk, watch, stop.

``Supervisor.spawn(spec)`` starts one child with the ``spawn`` method (never
``fork``: pyarrow keeps threads), SIGINT and SIGTERM blocked while it starts
(``engine.child`` ignores them, so a signal to the whole process group reaches
only the coordinator's drain). ``await_ready()`` waits for every child's
``Ready`` and checks its pinning. ``poll()`` yields every control message that
has arrived; a child that died, or sent ``Failed``, is a ``ChildFailedError``
naming it, its pid and exit status (and its traceback; ``permanent`` when the
child says the same input would fail again). ``send`` to a child that has just
died is that child's failure, not the coordinator's. ``shutdown()`` kills
every child still alive (their state comes from the checkpoint; nothing is
lost that was committed) and closes the pipes.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import msgspec
import multiprocess as mp
from multiprocess import resource_tracker

from engine import child, control
from engine.errors import ChildFailedError

_CTX = mp.get_context("spawn")
READY_TIMEOUT_S = 120.0
STOP_GRACE_S = 5.0


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
        # The first spawn starts multiprocess' resource tracker, which unblocks SIGINT and
        # SIGTERM when it is up: start it first, so the child below inherits them blocked.
        resource_tracker.ensure_running()
        old = signal.pthread_sigmask(signal.SIG_BLOCK, child.STOP_SIGNALS)
        try:
            proc.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
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
