"""Health of one connector, from the outcomes of its calls and health checks.

States and transitions::

    healthy ──failure──► degraded ──(threshold consecutive failures)──► unhealthy
       ▲                    │                                              │
       └──────success───────┴──────────────────success─────────────────────┘

* One failure moves ``healthy`` to ``degraded`` (``threshold=1``: straight to
  ``unhealthy``); ``threshold`` consecutive failures make it ``unhealthy``.
* Any success resets the consecutive count and makes it ``healthy`` again.
* ``transitions`` counts state changes; ``last_error`` is the most recent
  failure, kept after recovery (it says what went wrong last, not now).

The tracker only records; what to do when a connector is unhealthy (stop the
pipeline, alert) is the runtime's decision. Not thread-safe: one per
connector process, used from its one thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from engine.errors import ConfigError

State = Literal["healthy", "degraded", "unhealthy"]
STATE_CODES: dict[State, int] = {"healthy": 0, "degraded": 1, "unhealthy": 2}


class HealthTracker:
    def __init__(self, threshold: int = 3) -> None:
        if threshold < 1:
            raise ConfigError(f"health threshold={threshold} must be >= 1")
        self.threshold = threshold
        self.state: State = "healthy"
        self.last_error: BaseException | None = None
        self.transitions = 0
        self.consecutive_failures = 0
        self.failures = 0

    def _move(self, state: State) -> None:
        if state != self.state:
            self.state = state
            self.transitions += 1

    def record_success(self) -> None:
        self.consecutive_failures = 0
        self._move("healthy")

    def record_failure(self, exc: BaseException | None = None) -> None:
        """Count one failure; ``exc`` (if any) becomes ``last_error``."""
        self.failures += 1
        self.consecutive_failures += 1
        if exc is not None:
            self.last_error = exc
        self._move("unhealthy" if self.consecutive_failures >= self.threshold else "degraded")

    def check(self, probe: Callable[[], bool]) -> bool:
        """Run a health probe (e.g. ``source.health_check``) and record its outcome.

        A probe that returns False or raises (an ``Exception``) is a failure.
        Returns whether it succeeded.
        """
        try:
            ok = bool(probe())
        except Exception as exc:
            self.record_failure(exc)
            return False
        if ok:
            self.record_success()
        else:
            self.record_failure(None)
        return ok

    @property
    def healthy(self) -> bool:
        return self.state == "healthy"

    def as_dict(self) -> dict[str, float]:
        """Numbers for the metrics: ``health`` is 0 healthy, 1 degraded, 2 unhealthy."""
        return {
            "health": float(STATE_CODES[self.state]),
            "health_transitions": float(self.transitions),
            "consecutive_failures": float(self.consecutive_failures),
        }
