"""Retrying transient store failures, the same way for every adapter.

Full-jitter exponential backoff (so many clients hitting one throttled bucket spread out), bounded
both by a number of attempts and by a time budget. When the store said to slow down (Throttled),
the pause is at least half the backoff: full jitter alone would send some retries straight back.
What is still failing then becomes StoreUnavailable (EIO) with a log line naming the request.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from mountfs.backends.deadline import exchange_deadline
from mountfs.config import RetryConfig
from mountfs.errors import Misconfigured, MountfsError, StoreUnavailable, Throttled, Transient

log = logging.getLogger(__name__)

T = TypeVar("T")

RETRYABLE_4XX = frozenset({401, 403, 404, 408, 409, 412, 423, 425, 429})
"""Client errors that may pass: credentials fixed meanwhile, a timeout, a conflict or a lock that
ends, throttling; and those the callers handle themselves (not found, precondition failed)."""

class RetryCount:
    """Retries counted for the metrics endpoint: incremented by worker threads, hence the lock."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.value = 0

    def add(self) -> None:
        with self._lock:
            self.value += 1


RETRIES = RetryCount()  # this process's, all stores together
_counting = threading.local()  # .count: the RetryCount of the store whose call this thread runs


@contextlib.contextmanager
def retries_counted_in(count: RetryCount) -> Iterator[None]:
    """Retries of the calls this thread makes meanwhile also count in `count` (one store's)."""
    previous = getattr(_counting, "count", None)
    _counting.count = count
    try:
        yield
    finally:
        _counting.count = previous

# Checking access at mount time fails within seconds on an unreachable endpoint, yet rides out a
# flaky or throttling store as any call does (one reset answer must not fail the mount).
ACCESS_CHECK_RETRY = RetryConfig(attempts=6, base_delay=0.2, max_delay=1.0, budget=10.0)


def refused_for_good(status: int) -> bool:
    """A 4xx answer that the same request, sent again, can only get again (a key too long, a bad
    argument, a body too large): the caller gives up on it instead of retrying for ever."""
    return 400 <= status < 500 and status not in RETRYABLE_4XX


def backoff_delay(attempt: int, policy: RetryConfig, rng: Callable[[], float] = random.random,
                  throttled: bool = False) -> float:
    """The pause after failed attempt number `attempt` (1-based)."""
    cap = min(policy.max_delay, policy.base_delay * 2.0 ** (attempt - 1))
    if throttled:
        return cap / 2 * (1 + rng())
    return cap * rng()


def call_with_retry(fn: Callable[[], T], policy: RetryConfig, what: str, *,
                    sleep: Callable[[float], None] = time.sleep,
                    clock: Callable[[], float] = time.monotonic,
                    rng: Callable[[], float] = random.random) -> T:
    """`fn()`, retried while it raises Transient (whose message names the request; `what` names it
    in the final log line). Each HTTP request of an attempt has `request_timeout` to be answered whole
(`deadline`). A throttled answer counts as half an attempt: the store is there and
    asked us to wait, which the time budget bounds. Blocking: run it in a worker thread."""
    started = clock()
    attempt = 0
    spent = 0.0
    while True:
        attempt += 1
        try:
            with exchange_deadline(policy.request_timeout):
                return fn()
        except Transient as exc:
            throttled = isinstance(exc, Throttled)
            spent += 0.5 if throttled else 1.0
            delay = backoff_delay(attempt, policy, rng, throttled)
            if spent >= policy.attempts or clock() - started + delay > policy.budget:
                log.error("%s failed after %d attempt(s): %s", what, attempt, exc)
                raise StoreUnavailable(f"{exc} (gave up after {attempt} attempt(s))") from exc
            log.warning("%s; retrying in %.2fs (attempt %d)", exc, delay, attempt)
            RETRIES.add()
            store_count: RetryCount | None = getattr(_counting, "count", None)
            if store_count is not None:
                store_count.add()
            sleep(delay)


def call_translated(fn: Callable[[], T], translate: Callable[[Exception, str], Exception],
                    policy: RetryConfig, what: str) -> T:
    """`call_with_retry` of an SDK call: its exceptions become mountfs errors first (`translate`),
    so that retrying sees Transient, and callers see one hierarchy whatever the store."""
    def attempt() -> T:
        try:
            return fn()
        except MountfsError:
            raise
        except Exception as exc:
            raise translate(exc, what) from exc

    return call_with_retry(attempt, policy, what)


def root_cause(exc: BaseException) -> BaseException:
    """The innermost `__cause__` of `exc`: the SDK's own words, without the request prefixes that
    each layer of translation and retrying added; or our own words where they say what to set."""
    while exc.__cause__ is not None and not isinstance(exc, Misconfigured):
        exc = exc.__cause__
    return exc
