"""Idle strategies: what a ring side does while it cannot make progress.

Spin, then yield, then park — after Aeron's ``BackoffIdleStrategy``:

1. **spin** for ``spin_us``: re-check the condition in a tight loop. Cheapest
   wake-up (~1 µs) but burns the core; worth it only for a few µs.
2. **yield** for ``yield_us``: ``sched_yield()`` between checks, so that when
   processes outnumber cores the peer we wait for can run on this core.
3. **park**: sleep on the segment's futex word until the peer wakes us, at most
   ``park_timeout_ms`` per sleep. Costs no CPU while idle; wakes in tens of µs.

Every ``liveness_ms`` of waiting the ring checks that the peer process is still
alive and raises :class:`engine.errors.PeerDiedError` if not (bounded by the
park timeout). The handshake that makes parking safe is in ``ring.py``.

``BUSY`` spins forever (lowest latency, one core per waiting process: only for
pinned deployments with a core to spare); ``DEFAULT`` suits workers >= cores.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.errors import ConfigError

_FOREVER_US = 1e12  # ~11.6 days: 'inf' in a phase length


@dataclass(frozen=True)
class WaitStrategy:
    """Durations of the spin / yield / park phases of one wait."""

    spin_us: float = 20.0
    yield_us: float = 200.0
    park_timeout_ms: float = 100.0
    liveness_ms: float = 100.0

    def __post_init__(self) -> None:
        for field in ("spin_us", "yield_us", "park_timeout_ms", "liveness_ms"):
            value = getattr(self, field)
            if not value >= 0:
                raise ConfigError(f"wait strategy {field}={value!r} must be >= 0")
        if self.park_timeout_ms <= 0 or self.liveness_ms <= 0:
            raise ConfigError(
                f"wait strategy park_timeout_ms={self.park_timeout_ms} and "
                f"liveness_ms={self.liveness_ms} must be > 0"
            )

    @property
    def spin_ns(self) -> int:
        return int(min(self.spin_us, _FOREVER_US) * 1000)

    @property
    def yield_ns(self) -> int:
        return int(min(self.yield_us, _FOREVER_US) * 1000)


DEFAULT = WaitStrategy()
BUSY = WaitStrategy(spin_us=float("inf"), yield_us=0.0)
PARK = WaitStrategy(spin_us=0.0, yield_us=0.0)
