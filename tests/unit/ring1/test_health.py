"""Health: healthy → degraded → unhealthy after threshold consecutive failures → healthy."""

from __future__ import annotations

import pytest

from engine.errors import ConfigError
from ring1.health import HealthTracker


def test_health_starts_healthy() -> None:
    h = HealthTracker()
    assert h.state == "healthy" and h.healthy and h.last_error is None and h.transitions == 0


def test_health_one_failure_degrades_threshold_failures_make_unhealthy() -> None:
    h = HealthTracker(threshold=3)
    h.record_failure(OSError("down 1"))
    assert h.state == "degraded"
    h.record_failure(OSError("down 2"))
    assert h.state == "degraded"
    h.record_failure(OSError("down 3"))
    assert h.state == "unhealthy" and str(h.last_error) == "down 3"
    h.record_failure(OSError("down 4"))
    assert h.state == "unhealthy" and h.transitions == 2 and h.consecutive_failures == 4


def test_health_success_recovers_and_resets_the_count() -> None:
    h = HealthTracker(threshold=2)
    h.record_failure(OSError("a"))
    h.record_failure(OSError("b"))
    h.record_success()
    assert h.state == "healthy" and h.consecutive_failures == 0 and h.transitions == 3
    assert str(h.last_error) == "b"  # kept: what went wrong last
    h.record_failure(OSError("c"))
    assert h.state == "degraded"  # the count started again


def test_health_failures_broken_by_success_never_reach_unhealthy() -> None:
    h = HealthTracker(threshold=3)
    for _ in range(10):
        h.record_failure(OSError("x"))
        h.record_failure(OSError("x"))
        h.record_success()
    assert h.state == "healthy" and h.failures == 20 and h.transitions == 20


def test_health_threshold_one_goes_straight_to_unhealthy() -> None:
    h = HealthTracker(threshold=1)
    h.record_failure(OSError("x"))
    assert h.state == "unhealthy" and h.transitions == 1


def test_health_check_probe_false_or_raising_is_a_failure() -> None:
    h = HealthTracker(threshold=2)
    assert h.check(lambda: False) is False
    assert h.state == "degraded" and h.last_error is None

    def boom() -> bool:
        raise TimeoutError("no answer")

    assert h.check(boom) is False
    assert h.state == "unhealthy" and isinstance(h.last_error, TimeoutError)
    assert h.check(lambda: True) is True and h.state == "healthy"


def test_health_as_dict_codes_the_state() -> None:
    h = HealthTracker(threshold=1)
    h.record_failure(OSError("x"))
    assert h.as_dict() == {"health": 2.0, "health_transitions": 1.0, "consecutive_failures": 1.0}


def test_health_threshold_below_one_rejected() -> None:
    with pytest.raises(ConfigError, match="threshold=0"):
        HealthTracker(threshold=0)
