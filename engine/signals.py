"""Stop signals of a run: SIGINT and SIGTERM counted, never raised.

The first one drains the pipeline (sources stop, the last epoch commits, exit 0);
the second stops at once. A signal sent to the whole process group (Ctrl-C in a
shell, systemd's ``KillMode=control-group``, ``timeout``, ``kill -- -PGID``) reaches
only the coordinator: children ignore both signals (``engine.child``).
"""

from __future__ import annotations

import signal


class StopSignals:
    """SIGINT and SIGTERM counted instead of raising: the first drains, the second stops.

    ``python -m engine run`` installs it before it reads the pipeline, so a signal
    that arrives while sources are opened still means "drain" (here: nothing ran).
    """

    def __init__(self) -> None:
        self.count = 0
        self.name: str | None = None
        self._old: dict[int, object] = {}

    def install(self) -> StopSignals:
        for s in (signal.SIGINT, signal.SIGTERM):
            self._old[s] = signal.signal(s, self._on_signal)
        return self

    def restore(self) -> None:
        for s, handler in self._old.items():
            signal.signal(s, handler)  # type: ignore[arg-type]
        self._old = {}

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.count += 1
        self.name = signal.Signals(signum).name
