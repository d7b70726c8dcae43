"""Retries with exponential backoff and jitter around one connector call.

``call_with_retry(fn, policy, what=...)`` calls ``fn()``; when it raises, it
sleeps and calls again, at most ``policy.max_retries`` more times (so at most
``max_retries + 1`` calls), then raises ``RetriesExhaustedError`` chained to
the last exception.

Delay before retry ``k`` (``k = 0, 1, ...``)::

    d = min(cap_s, base_s * 2**k)
    delay = d - jitter * d * u        u uniform in [0, 1)

``jitter`` is the fraction of the delay that is random: ``jitter=1`` is
"full jitter" (uniform in ``(0, d]``), ``jitter=0.5`` (the default) is
"equal jitter" (uniform in ``(d/2, d]``), ``jitter=0`` no jitter. Jitter keeps
many connector processes that failed together from retrying in lockstep.

Never retried, re-raised at once: ``BaseException`` that is not an
``Exception`` (``KeyboardInterrupt``, ``SystemExit``, ``GeneratorExit``),
``ConfigError`` (a bad setting does not get better by waiting), and any
exception for which ``retryable(exc)`` is false (the connector runtime passes
``engine.errors.is_transient``: only errors that may go away are retried).

Not guaranteed: that ``fn`` is idempotent — the caller decides what is safe to
call again (a poll is; a commit is, by the sink contract; a write may not be).
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from engine.errors import ConfigError, RetriesExhaustedError

T = TypeVar("T")
_RNG = random.Random()
# Children are forked from one server that imported this module: without a reseed they
# would all draw the same jitter, and retries against one broker would line up.
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_RNG.seed)


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to retry; see the module docstring for the delay formula."""

    max_retries: int = 5
    base_s: float = 0.05
    cap_s: float = 5.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ConfigError(f"retry max_retries={self.max_retries} must be >= 0")
        if self.base_s < 0:
            raise ConfigError(f"retry base_s={self.base_s} must be >= 0")
        if self.cap_s < self.base_s:
            raise ConfigError(f"retry cap_s={self.cap_s} must be >= base_s={self.base_s}")
        if not 0.0 <= self.jitter <= 1.0:
            raise ConfigError(f"retry jitter={self.jitter} must be in [0, 1]")

    @classmethod
    def from_config(cls, cfg) -> RetryPolicy:  # type: ignore[no-untyped-def]
        """From a pipeline's ``retry = { max_retries, base_ms, cap_ms }`` table."""
        return cls(max_retries=cfg.max_retries, base_s=cfg.base_ms / 1000, cap_s=cfg.cap_ms / 1000)

    def ceiling(self, retry: int) -> float:
        """The delay before retry ``retry`` (0-based) without jitter: ``min(cap, base * 2**k)``."""
        # 2**k overflows a float for huge k: the cap applies long before that.
        if retry >= 64:
            return self.cap_s
        return min(self.cap_s, self.base_s * float(2**retry))

    def delay(self, retry: int, rng: random.Random | None = None) -> float:
        """The jittered delay before retry ``retry``: in ``(ceiling * (1 - jitter), ceiling]``."""
        d = self.ceiling(retry)
        u = (rng or _RNG).random()
        return d - self.jitter * d * u


def call_with_retry(
    fn: Callable[[], T],
    policy: RetryPolicy,
    *,
    what: str,
    on_retry: Callable[[int, Exception, float], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
    rng: random.Random | None = None,
    retryable: Callable[[Exception], bool] | None = None,
) -> T:
    """``fn()``, retried on failure as ``policy`` says; ``what`` names the call in errors.

    ``on_retry(retry, exc, delay)`` is called before each sleep (``retry`` counts
    from 1): the runtime counts retries and feeds its health tracker there.
    Raises ``RetriesExhaustedError("<what>: failed after N retries: <last>")``
    from the last exception once the retries are spent.
    """
    retry = 0
    while True:
        try:
            return fn()
        except ConfigError:
            raise
        except Exception as exc:
            if retryable is not None and not retryable(exc):
                raise
            if retry >= policy.max_retries:
                last = str(exc) or type(exc).__name__
                raise RetriesExhaustedError(
                    f"{what}: failed after {retry} retries: {last}"
                ) from exc
            delay = policy.delay(retry, rng)
            retry += 1
            if on_retry is not None:
                on_retry(retry, exc, delay)
            sleep(delay)
