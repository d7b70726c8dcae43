"""One wrapper around every connector call: retries, health, metrics, errors that name the call.

``ConnectorGuard(label, retry, health_failures, report)`` is made once per connector
process (source or sink) and ``call(what, fn)`` runs every call of the connector
through it:

* A *transient* error (``engine.errors.is_transient``: a timeout, a dropped
  connection, ``TransientError``) is retried with backoff and jitter
  (``ring1.retry``) when the call is marked ``retry=True``; each failure moves
  the health tracker (``ring1.health``) and counts in the metrics.
* Any other error is not retried: a permanent one (bad data, bad config, a
  bug) would fail the same way again, and a write that raised may have done
  part of its work. It is raised as a ``ConnectorError`` naming the connector
  and the call (our own errors keep their class, with the label added).
* Health transitions are sent to the coordinator through ``report(state,
  error)`` as they happen; ``as_dict()`` gives the errors and retries with
  the runner's own counts (``metrics``: rows, bytes, poll or write latency,
  ``ring1.metrics``) and the health state.

Not thread-safe: one per connector process, used from its one thread.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from connectors.base import Connector
from engine.errors import ConnectorError, RingstreamError, is_transient
from ring1.health import HealthTracker
from ring1.metrics import ConnectorMetrics
from ring1.retry import RetryPolicy, call_with_retry

T = TypeVar("T")


class ConnectorGuard:
    """See the module docstring."""

    def __init__(
        self,
        label: str,
        retry: RetryPolicy,
        health_failures: int,
        report: Callable[[str, str], None] | None = None,
    ) -> None:
        self.label = label
        self.retry = retry
        self.health = HealthTracker(threshold=health_failures)
        self.metrics = ConnectorMetrics()
        self._report = report
        self._reported = self.health.state

    @classmethod
    def from_config(cls, label: str, cfg, report=None) -> ConnectorGuard:  # type: ignore[no-untyped-def]
        """For a ``[[sources]]``/``[[sinks]]`` entry (its ``retry`` and ``health_failures``)."""
        return cls(label, RetryPolicy.from_config(cfg.retry), cfg.health_failures, report)

    def call(self, what: str, fn: Callable[[], T], *, retry: bool = True) -> T:
        """``fn()`` under the guard: transient errors retried when ``retry``; see above."""
        def on_retry(_n: int, exc: Exception, _delay: float) -> None:
            self.metrics.record_retry()
            self._failed(exc)

        try:
            if retry:
                out = call_with_retry(
                    fn, self.retry, what=f"{self.label}: {what}", on_retry=on_retry,
                    retryable=is_transient,
                )  # fmt: skip
            else:
                out = fn()
        except RingstreamError as exc:
            self._failed(exc)
            if not str(exc).startswith(self.label):  # name the connector and the call, once
                exc.args = (f"{self.label}: {what}: {exc}", *exc.args[1:])
            raise
        except Exception as exc:
            self._failed(exc)
            raise ConnectorError(
                f"{self.label}: {what} failed: {type(exc).__name__}: {exc}"
            ) from exc
        if not self.health.healthy:
            self.health.record_success()
            self._send_health()
        return out

    def _failed(self, exc: BaseException) -> None:
        self.metrics.record_error()
        self.health.record_failure(exc)
        self._send_health()

    def _send_health(self) -> None:
        state = self.health.state
        if state == self._reported or self._report is None:
            return
        self._reported = state
        err = self.health.last_error
        self._report(state, f"{type(err).__name__}: {err}" if err is not None else "")

    def as_dict(self) -> dict[str, float]:
        """The guard's own metrics: calls, errors, retries, latency, health."""
        return {**self.metrics.as_dict(), **self.health.as_dict()}

    def report(self, connector: Connector) -> dict[str, float]:
        """Run the connector's health check, then every number: the guard's and the
        connector's own (``connector_<name>``). Neither may stop the data: a failure
        counts against the connector's health."""
        self.health.check(connector.health_check)
        self._send_health()
        out = self.as_dict()
        try:
            own = connector.metrics()
        except Exception as exc:
            self.health.record_failure(exc)
            self._send_health()
            own = {}
        out.update({f"connector_{k}": float(v) for k, v in own.items()})
        return out
