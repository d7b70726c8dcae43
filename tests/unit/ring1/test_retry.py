"""Retries: backoff grows and is capped, jitter stays in bounds, some errors never retry."""

from __future__ import annotations

import os
import random

import pytest

from engine.errors import ConfigError, ConnectorError, RetriesExhaustedError
from ring1.retry import RetryPolicy, call_with_retry


class Flaky:
    """Fails ``failures`` times with ``exc``, then returns ``"ok"``."""

    def __init__(self, failures: int, exc: BaseException | None = None) -> None:
        self.failures = failures
        self.exc = exc or ConnectionError("refused")
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.exc
        return "ok"


def test_retry_fails_k_times_then_succeeds_returns_result() -> None:
    slept: list[float] = []
    retries: list[tuple[int, str]] = []
    fn = Flaky(3)
    result = call_with_retry(
        fn,
        RetryPolicy(max_retries=5, base_s=0.1, cap_s=10, jitter=0),
        what="poll",
        sleep=slept.append,
        on_retry=lambda n, exc, delay: retries.append((n, str(exc))),
    )
    assert result == "ok" and fn.calls == 4
    assert slept == [0.1, 0.2, 0.4]
    assert retries == [(1, "refused"), (2, "refused"), (3, "refused")]


def test_retry_first_call_succeeds_does_not_sleep() -> None:
    slept: list[float] = []
    assert call_with_retry(Flaky(0), RetryPolicy(), what="x", sleep=slept.append) == "ok"
    assert slept == []


def test_retry_exhausted_raises_naming_what_and_count_chained() -> None:
    fn = Flaky(100)
    with pytest.raises(RetriesExhaustedError, match="poll kafka: failed after 2 retries: refused"):
        call_with_retry(fn, RetryPolicy(max_retries=2), what="poll kafka", sleep=lambda s: None)
    assert fn.calls == 3
    try:
        call_with_retry(Flaky(100), RetryPolicy(max_retries=0), what="x", sleep=lambda s: None)
    except RetriesExhaustedError as exc:
        assert isinstance(exc.__cause__, ConnectionError)


def test_retry_backoff_is_capped() -> None:
    slept: list[float] = []
    with pytest.raises(RetriesExhaustedError):
        call_with_retry(
            Flaky(100),
            RetryPolicy(max_retries=6, base_s=1, cap_s=5, jitter=0),
            what="x",
            sleep=slept.append,
        )
    assert slept == [1, 2, 4, 5, 5, 5]


def test_retry_huge_retry_number_stays_at_the_cap() -> None:
    assert RetryPolicy(base_s=1, cap_s=5).ceiling(10_000) == 5


@pytest.mark.parametrize("jitter", [0.5, 1.0])
def test_retry_jitter_stays_within_bounds_with_seeded_rng(jitter: float) -> None:
    policy = RetryPolicy(max_retries=200, base_s=0.01, cap_s=0.08, jitter=jitter)
    slept: list[float] = []
    with pytest.raises(RetriesExhaustedError):
        call_with_retry(Flaky(1000), policy, what="x", sleep=slept.append, rng=random.Random(7))
    for k, delay in enumerate(slept):
        ceiling = min(0.08, 0.01 * 2**k)
        assert ceiling * (1 - jitter) < delay <= ceiling
    assert len(set(slept)) > 100  # jittered, not constant


def test_retry_same_seed_same_delays() -> None:
    def delays(seed: int) -> list[float]:
        slept: list[float] = []
        with pytest.raises(RetriesExhaustedError):
            call_with_retry(
                Flaky(9),
                RetryPolicy(max_retries=4),
                what="x",
                sleep=slept.append,
                rng=random.Random(seed),
            )
        return slept

    assert delays(3) == delays(3) and delays(3) != delays(4)


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), SystemExit(1), ConfigError("bad key")])
def test_retry_interrupts_and_config_errors_are_not_retried(exc: BaseException) -> None:
    fn = Flaky(1, exc)
    with pytest.raises(type(exc)):
        call_with_retry(fn, RetryPolicy(), what="x", sleep=lambda s: None)
    assert fn.calls == 1


def test_retry_connector_errors_are_retried() -> None:
    fn = Flaky(2, ConnectorError("transient"))
    assert call_with_retry(fn, RetryPolicy(), what="x", sleep=lambda s: None) == "ok"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_retries": -1}, "max_retries=-1"),
        ({"base_s": -0.1}, "base_s=-0.1"),
        ({"base_s": 2.0, "cap_s": 1.0}, "cap_s=1.0"),
        ({"jitter": 1.5}, "jitter=1.5"),
    ],
)
def test_retry_policy_bad_settings_rejected_naming_them(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        RetryPolicy(**kwargs)


def test_forked_children_draw_different_jitter() -> None:
    """Every child is forked from one server that imported the retry module: each must
    reseed its jitter, or retries against one broker would line up."""
    from ring1 import retry

    draws = []
    for _ in range(3):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: one draw, then out without running pytest's exit
            os.write(w, repr(retry._RNG.random()).encode())
            os._exit(0)
        os.close(w)
        draws.append(os.read(r, 64))
        os.close(r)
        os.waitpid(pid, 0)
    assert len(set(draws)) == 3, draws
