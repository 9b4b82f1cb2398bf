"""Retries: jittered exponential backoff, bounded by attempts and by a time budget."""

from __future__ import annotations

import pytest

from mountfs.backends.retry import backoff_delay, call_with_retry
from mountfs.config import RetryConfig
from mountfs.errors import NotFound, StoreUnavailable, Throttled, Transient

POLICY = RetryConfig(attempts=5, base_delay=0.1, max_delay=1.0, budget=60.0)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds

    def __call__(self) -> float:
        return self.now


def flaky(failures: int) -> tuple[list[int], object]:
    calls: list[int] = []

    def fn() -> str:
        calls.append(1)
        if len(calls) <= failures:
            raise Transient("GET s3://b/k: 503 SlowDown")
        return "data"

    return calls, fn


def test_backoff_doubles_up_to_the_cap_with_full_jitter() -> None:
    assert [backoff_delay(n, POLICY, lambda: 1.0) for n in range(1, 7)] == [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    assert backoff_delay(3, POLICY, lambda: 0.5) == pytest.approx(0.2)


def test_a_store_that_says_slow_down_gets_at_least_half_the_backoff_never_an_instant_retry() -> None:
    assert [backoff_delay(n, POLICY, lambda: 0.0, throttled=True) for n in range(1, 6)] == \
        [0.05, 0.1, 0.2, 0.4, 0.5]
    assert backoff_delay(2, POLICY, lambda: 1.0, throttled=True) == pytest.approx(0.2)
    clock = Clock()
    calls: list[int] = []

    def throttled() -> str:
        calls.append(1)
        if len(calls) <= 2:
            raise Throttled("GET s3://b/k: SlowDown")
        return "data"

    assert call_with_retry(throttled, POLICY, "GET", sleep=clock.sleep, clock=clock, rng=lambda: 0.0) \
        == "data"
    assert clock.sleeps == [0.05, 0.1]


def test_transient_failures_are_retried_until_success() -> None:
    clock = Clock()
    calls, fn = flaky(3)
    assert call_with_retry(fn, POLICY, "GET", sleep=clock.sleep, clock=clock, rng=lambda: 1.0) == "data"  # type: ignore[arg-type]
    assert len(calls) == 4 and clock.sleeps == [0.1, 0.2, 0.4]


def test_giving_up_after_the_attempts_is_store_unavailable(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    calls, fn = flaky(100)
    with pytest.raises(StoreUnavailable, match=r"503 SlowDown \(gave up after 5 attempt\(s\)\)"):
        call_with_retry(fn, POLICY, "GET s3://b/k", sleep=clock.sleep, clock=clock)  # type: ignore[arg-type]
    assert len(calls) == 5
    assert "GET s3://b/k failed after 5 attempt(s)" in caplog.text


def test_the_time_budget_stops_retries_early() -> None:
    clock = Clock()
    calls, fn = flaky(100)
    policy = RetryConfig(attempts=100, base_delay=1.0, max_delay=1.0, budget=3.5)
    with pytest.raises(StoreUnavailable):
        call_with_retry(fn, policy, "GET", sleep=clock.sleep, clock=clock, rng=lambda: 1.0)  # type: ignore[arg-type]
    assert len(calls) == 4 and clock.now == 3.0


def test_other_errors_are_not_retried() -> None:
    calls: list[int] = []

    def fn() -> None:
        calls.append(1)
        raise NotFound("HEAD s3://b/k: not found")

    with pytest.raises(NotFound):
        call_with_retry(fn, POLICY, "HEAD")
    assert calls == [1]


def test_a_throttled_answer_counts_as_half_an_attempt() -> None:
    """A store that answers SlowDown is there: its call may take twice the attempts (within the
    time budget), while one that does not answer gives up after `attempts`."""
    def failing(error: Transient, failures: int) -> tuple[list[int], object]:
        calls: list[int] = []

        def fn() -> str:
            calls.append(1)
            if len(calls) <= failures:
                raise error
            return "data"
        return calls, fn

    calls, fn = failing(Throttled("GET s3://b/k: SlowDown"), 9)
    clock = Clock()
    assert call_with_retry(fn, POLICY, "GET", sleep=clock.sleep, clock=clock) == "data"  # type: ignore[arg-type]
    assert len(calls) == 10
    calls, fn = failing(Throttled("GET s3://b/k: SlowDown"), 10)
    with pytest.raises(StoreUnavailable, match="gave up after 10 attempt"):
        call_with_retry(fn, POLICY, "GET", sleep=Clock().sleep, clock=Clock())  # type: ignore[arg-type]
    calls, fn = failing(Transient("GET s3://b/k: connection reset"), 5)
    with pytest.raises(StoreUnavailable, match="gave up after 5 attempt"):
        call_with_retry(fn, POLICY, "GET", sleep=Clock().sleep, clock=Clock())  # type: ignore[arg-type]
